"""roicurate review in a real headless Chromium: keyboard answers reach the labels file and, after apply,
iscell.npy; a kill -9 of the server loses nothing and the page resumes where it stopped; the grid flips a verdict
on a click; requests without the token or for files outside the page are refused.

Optional group ``browser`` like tests/test_report_browser.py (its DevTools-over-a-pipe client is reused): skipped
without Chromium unless ``ROICURATE_REQUIRE_BROWSER=1``. The server runs as ``python -m roicurate review ...
--no-browser --port 0`` in a subprocess, and the test reads the URL it prints.
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_run
from test_report_browser import DevTools, chromium  # noqa: F401  (chromium: the fixture that skips without it)

pytestmark = pytest.mark.browser

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "s2p_sim2" / "suite2p" / "plane0"


def start_server(plane, model):
    """(process, URL) of ``roicurate review`` on a free port."""
    proc = subprocess.Popen([sys.executable, "-m", "roicurate", "review", str(plane), "--model", model,
                             "--no-browser", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, ROICURATE_LOAD_PLUGINS=""))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("review at "):
            return proc, line.split()[2]
    raise AssertionError("the server printed no URL:\n" + "".join(lines))


def status_of(url, path):
    """HTTP status of GET ``path`` (sent exactly as written: no client-side normalisation of '..')."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class Page:
    def __init__(self, dt, url):
        self.dt = dt
        target = next(t for t in dt.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = dt.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            dt.send(f"{domain}.enable", self.session)
        self.open(url)

    def open(self, url):
        self.dt.send("Page.navigate", self.session, url=url)
        self.wait("document.body && document.body.dataset.ready === '1'")

    def js(self, expression):
        r = self.dt.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True,
                         awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait(self, expression, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expression):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}; error shown: {self.js(ERROR)!r}")

    def key(self, key):
        for kind in ("keyDown", "keyUp"):
            self.dt.send("Input.dispatchKeyEvent", self.session, type=kind, key=key, text=key if kind == "keyDown"
                         else "", code=f"Key{key.upper()}", windowsVirtualKeyCode=ord(key.upper()))

    def shown(self):
        return int(self.js("document.getElementById('roi').dataset.roi"))

    def errors(self):
        return [ev["params"] for ev in self.dt.events if ev.get("method") == "Runtime.exceptionThrown"
                or (ev.get("method") == "Runtime.consoleAPICalled" and ev["params"]["type"] in ("error", "assert"))
                or (ev.get("method") == "Log.entryAdded" and ev["params"]["entry"]["level"] == "error")]


ERROR = "document.getElementById('error').textContent"


def answers(plane):
    return [(a["roi"], a["label"]) for a in json.loads((plane / "roicurate_review.json").read_text())["answers"]]


def test_keyboard_answers_survive_kill_9_and_reach_iscell(chromium, tmp_path, tiny_model):  # noqa: F811
    plane = tmp_path / "plane0"
    shutil.copytree(EXAMPLE, plane)
    model = str(tiny_model / "tiny.json")
    proc, url = start_server(plane, model)
    dt = DevTools(tmp_path / "profile")
    try:
        page = Page(dt, url)
        order = page.js("S.order")
        assert sorted(order) == list(range(34)) and page.shown() == order[0]
        for k, key in enumerate("yny"):                   # three keyboard answers
            page.key(key)
            page.wait(f"document.getElementById('roi').dataset.roi === '{order[k + 1]}'")
        assert answers(plane) == [(order[0], 1), (order[1], 0), (order[2], 1)]
        assert "reviewed 3 · left 31" in page.js("document.getElementById('progress').textContent")

        # what is not this page is refused: no token, another token, a path out of the static folder
        token = urllib.parse.urlsplit(url).path.strip("/")
        assert status_of(url, "/api/state")[0] == 403
        assert status_of(url, f"/{token[:-2]}xx/api/state")[0] == 403
        for path in (f"/{token}/static/../../etc/passwd", f"/{token}/static/..%2F..%2F..%2Fetc%2Fpasswd",
                     f"/{token}/../../etc/passwd", f"/{token}/static/..%2Froicurate_review.json"):
            code, body = status_of(url, path)
            assert code in (403, 404) and b"root:" not in body and b"answers" not in body, path

        os.kill(proc.pid, signal.SIGKILL)                 # the server dies mid-session
        proc.wait(30)
        killed = url                                      # its requests in flight fail: not the page's fault
        proc, url = start_server(plane, model)
        page.open(url)
        assert page.shown() == order[3]                   # resumes at the fourth ROI, the three answers kept
        assert page.js("S.answers.length") == 3
        assert answers(plane) == [(order[0], 1), (order[1], 0), (order[2], 1)]
        cli_run("apply", plane, "--model", model)         # the three answers are the verdict in iscell.npy
        iscell = np.load(plane / "iscell.npy")
        assert iscell.dtype == np.float64 and iscell.shape == (34, 2)
        assert iscell[order[:3], 0].tolist() == [1.0, 0.0, 1.0]
        model_says = page.js(f"S.model_accepted[{order[0]}]")

        page.key("g")                                     # grid: a click flips the verdict written
        page.wait("document.querySelectorAll('.tile').length === 34")
        page.js(f"document.querySelector('.tile[data-roi=\"{order[0]}\"]').click()")
        page.wait(f"S.human[{order[0]}] === 0")
        assert answers(plane)[-1] == (order[0], 0)
        page.key("u")                                     # undo: the grid's answer is taken back
        page.wait(f"S.human[{order[0]}] === -1")
        assert answers(plane) == [(order[1], 0), (order[2], 1)]
        assert [e for e in page.errors() if not e.get("entry", {}).get("url", "").startswith(killed)] == []
        assert page.js(ERROR) == ""
    finally:
        dt.close()
        proc.terminate()
        proc.wait(30)

    cli_run("apply", plane, "--model", model)             # a second apply: ROI order[0] is the model's again
    iscell = np.load(plane / "iscell.npy")
    assert iscell[order[:3], 0].tolist() == [float(model_says), 0.0, 1.0]
    assert json.loads((plane / "roicurate.json").read_text())["human"]["reviewed"] == 2
