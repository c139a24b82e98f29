"""The report in a real headless browser: no console errors, every image loaded.

Optional group ``browser`` (``pytest -m browser``): needs Debian's Chromium
(``apt-get install -y --no-install-recommends chromium``); skipped without it, unless
``ROICURATE_REQUIRE_BROWSER=1`` (CI) turns the skip into a failure. Chromium is driven over
``--remote-debugging-pipe`` with the DevTools protocol: nothing listens on a port, no Python package needed.
"""
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from roicurate import report
from roicurate.crops import CropSpec
from roicurate.curation import curate
from roicurate.models import Classifier, save_model
from roicurate.plugins import sources
from roicurate_plugins.nets import cnn2

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


class DevTools:
    """Minimal DevTools-protocol client over the pipe Chromium opens on fds 3 (commands) and 4 (replies)."""

    def __init__(self, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # bash (dash only knows fds 0-9) puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', CHROMIUM, *FLAGS,
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome_r), os.close(from_chrome_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def _read(self, timeout):
        import select
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.from_chrome], [], [], timeout)
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, session=None, timeout=30, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, timeout=60):
        deadline = time.time() + timeout
        while True:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            self.events.append(self._read(max(0.1, deadline - time.time())))

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome), os.close(self.from_chrome)


def open_in_browser(page, profile, screenshot=None):
    """Load ``page``; return (console errors, [(src, complete, naturalWidth)] of every <img>)."""
    dt = DevTools(profile)
    try:
        target = next(t for t in dt.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = dt.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            dt.send(f"{domain}.enable", session)
        dt.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=1000, deviceScaleFactor=1,
                mobile=False)
        dt.send("Page.navigate", session, url=page.resolve().as_uri())
        dt.wait_for("Page.loadEventFired")
        images = dt.send("Runtime.evaluate", session, returnByValue=True, expression=(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"))
        if screenshot:
            import base64
            shot = dt.send("Page.captureScreenshot", session, captureBeyondViewport=True, format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = [ev["params"] for ev in dt.events if
                  ev.get("method") == "Runtime.exceptionThrown"
                  or (ev.get("method") == "Runtime.consoleAPICalled" and ev["params"]["type"] in ("error", "assert"))
                  or (ev.get("method") == "Log.entryAdded" and ev["params"]["entry"]["level"] == "error")]
        return errors, images["result"]["value"]
    finally:
        dt.close()


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        why = "chromium is not installed (Debian: apt-get install -y --no-install-recommends chromium)"
        if os.environ.get("ROICURATE_REQUIRE_BROWSER"):
            pytest.fail(why + "; ROICURATE_REQUIRE_BROWSER is set")
        pytest.skip(why)
    return CHROMIUM


def test_the_harness_sees_a_broken_image_and_a_console_error(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img src='missing.png'><script>console.error('boom')</script>"
                    "</body></html>")
    errors, images = open_in_browser(page, tmp_path / "profile")
    assert images == [["missing.png", True, 0]]
    assert len(errors) >= 2          # the script's console.error and the failed image load


def test_report_opens_without_console_errors_and_every_image_loads(chromium, example_suite2p, geometry_only_plane,
                                                                   tmp_path):
    torch.manual_seed(0)
    kw = {"size": 64, "channels": [8, 16], "hidden": 32}
    card = {"arch": "cnn2", "build_kwargs": kw, "crop": CropSpec(64, binarize=0.0).to_dict(),
            "classes": ["not_cell", "cell"], "threshold": 0.5}
    clf = Classifier.load(save_model(tmp_path / "model", "small", cnn2(**kw), card))
    units = []
    for plane in (example_suite2p / "plane0", geometry_only_plane):                  # images / shape only
        rs = sources()["suite2p"].read(plane)
        units.append((str(plane), rs, curate(rs, clf, float(np.median(clf.predict_proba(rs)[:, 1]))), clf))
    page = report.write_report(tmp_path / "report", units, n_explain=4, n_examples=2, progress=False)
    errors, images = open_in_browser(page, tmp_path / "profile", screenshot=tmp_path / "report.png")
    assert errors == []
    assert len(images) >= 2 * (2 + 4)       # per plane: histogram, field of view, >= 4 ROI panels
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert broken == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
