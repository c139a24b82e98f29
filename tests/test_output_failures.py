"""Issue #23 case 2: output is never part of the transaction. The real command line runs in a subprocess with its
stdout on /dev/full (Linux answers every write with ENOSPC, as a full disk behind ``> log.txt`` does) or on a pipe
whose reader is gone (EPIPE). Every unit is still written, ``combined/`` is rebuilt to match the planes, a revert
restores everything, and the command exits non-zero with one line on stderr (none where stderr is what failed),
never a traceback."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_model, tree_hashes

from roicurate_plugins.caiman import CaimanSource

DEV_FULL = Path("/dev/full")
pytestmark = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs Linux's /dev/full")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {kind: save_tiny_model(folder / kind, kind) for kind in ("suite2p", "caiman")}


def run_to(sink, *args, err_sink=None, env=None):
    """``roicurate ARGS`` in a subprocess with stdout on ``sink`` ("full": /dev/full; "closed": a pipe whose read
    end is closed before the command starts, so every write gets EPIPE; "pipe": captured) and stderr captured (or,
    with ``err_sink="full"``, on /dev/full too). Returns (exit status, stdout text, stderr text)."""
    cmd = [sys.executable, "-m", "roicurate.cli", *map(str, args)]
    env = dict(os.environ, ROICURATE_LOAD_PLUGINS="", **(env or {}))
    with contextlib.ExitStack() as stack:
        if sink == "closed":
            read_end, write_end = os.pipe()
            os.close(read_end)
            stdout = stack.enter_context(open(write_end, "w"))
        else:
            stdout = stack.enter_context(open(DEV_FULL, "w")) if sink == "full" else subprocess.PIPE
        stderr = stack.enter_context(open(DEV_FULL, "w")) if err_sink == "full" else subprocess.PIPE
        p = subprocess.run(cmd, stdout=stdout, stderr=stderr, text=True, env=env, timeout=300)
    return p.returncode, p.stdout or "", p.stderr or ""


def one_line(stderr, *words):
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("roicurate: error: "), stderr
    for word in words:
        assert word in lines[0], stderr
    return lines[0]


def assert_curated_with_combined(suite2p):
    """Both planes curated by this run and combined/iscell.npy rebuilt as their concatenation, with its backup."""
    planes = [suite2p / "plane0", suite2p / "plane1"]
    for plane in planes:
        assert (plane / "roicurate.json").exists() and (plane / "iscell_suite2p.npy").exists(), plane
    rows = np.concatenate([np.load(p / "iscell.npy") for p in planes])
    assert np.array_equal(np.load(suite2p / "combined" / "iscell.npy"), rows)
    assert (suite2p / "combined" / "iscell_suite2p.npy").exists()
    assert not list(suite2p.rglob("*.tmp*")) and not list(suite2p.rglob(".roicurate-*"))


@pytest.mark.parametrize("sink,errno_text", [("full", "No space left on device"), ("closed", "Broken pipe")])
@pytest.mark.parametrize("as_json", [False, True])
def test_apply_suite2p_finishes_every_plane_and_combined(copy_example, models, sink, errno_text, as_json):
    suite2p = copy_example()
    original = tree_hashes(suite2p)
    rc, _, err = run_to(sink, "apply", suite2p, "--model", models["suite2p"], *(["--json"] if as_json else []))
    assert rc != 0
    if as_json:            # human lines go to stderr there and are written; the error is the last line
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("roicurate: error: cannot write")
        assert f"cannot write to stdout ({errno_text})" in err
    else:
        one_line(err, "stdout", errno_text)
    assert_curated_with_combined(suite2p)
    # the revert, with its own output failing too, puts every byte back
    rc, _, err = run_to(sink, "revert", suite2p)
    assert rc != 0
    one_line(err, "stdout", errno_text)
    assert tree_hashes(suite2p) == original


def test_apply_with_stdout_and_stderr_failing_finishes_silently(copy_example, models):
    suite2p = copy_example()
    rc, _, _ = run_to("full", "-v", "apply", suite2p, "--model", models["suite2p"], err_sink="full")
    assert rc != 0
    assert_curated_with_combined(suite2p)


@pytest.mark.parametrize("sink,errno_text", [("full", "No space left on device"), ("closed", "Broken pipe")])
def test_apply_and_revert_caiman_files(copy_caiman, models, tmp_path, sink, errno_text):
    files = [copy_caiman("evaluated"), copy_caiman("evaluated_seed1")]
    original = {f: f.read_bytes() for f in files}
    rc, _, err = run_to(sink, "apply", *files, "--model", models["caiman"])
    assert rc != 0
    one_line(err, "stdout", errno_text)
    src = CaimanSource()
    for f in files:                             # both files written, each with its backup
        assert src.recorded(f) is not None, f
        assert src.backup_path(f).read_bytes() == original[f]
    rc, _, err = run_to(sink, "revert", *files)
    assert rc != 0
    one_line(err, "stdout", errno_text)
    for f in files:
        assert f.read_bytes() == original[f] and not src.backup_path(f).exists()


def test_status_to_a_full_disk_is_one_line(copy_example):
    suite2p = copy_example()
    rc, _, err = run_to("full", "status", suite2p)
    assert rc != 0
    one_line(err, "stdout", "No space left on device")
    rc, out, err = run_to("pipe", "status", suite2p)            # the same command to a working stdout: exit 0
    assert rc == 0 and "plane1" in out and err == ""


# every other command prints through the same writer (cli.common.echo): its files are written, then one line


@pytest.mark.parametrize("sink,errno_text", [("full", "No space left on device"), ("closed", "Broken pipe")])
def test_report_and_explain_write_their_pages_then_say_one_line(copy_example, models, tmp_path, sink, errno_text):
    suite2p = copy_example()
    original = tree_hashes(suite2p)
    rc, _, err = run_to(sink, "report", suite2p, "--model", models["suite2p"], "--out", tmp_path / "report",
                        "--explain", "2", "--examples", "1")
    assert rc != 0
    one_line(err, "stdout", errno_text)
    assert "<html" in (tmp_path / "report" / "index.html").read_text().lower()
    rc, _, err = run_to(sink, "explain", suite2p / "plane0", "--model", models["suite2p"], "--rois", "0,1",
                        "--out", tmp_path / "explain")
    assert rc != 0
    one_line(err, "stdout", errno_text)
    assert (tmp_path / "explain" / "index.html").stat().st_size > 0
    assert tree_hashes(suite2p) == original          # reading commands leave the recording alone


def test_evaluate_and_models_to_a_full_disk(suite2p_sessions, models, tmp_path):
    rc, _, err = run_to("full", "evaluate", suite2p_sessions[2], "--model", models["suite2p"], "--out", tmp_path / "e")
    assert rc != 0
    one_line(err, "stdout", "No space left on device")
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["n_rois"] > 0
    rc, _, err = run_to("full", "models")
    assert rc != 0
    one_line(err, "stdout", "No space left on device")


def test_progress_on_a_failing_stderr_turns_off_and_the_run_finishes(copy_example, models):
    """Progress lines every 0 s to a stderr on /dev/full: the first failing line turns progress off, every plane and
    combined/ are written, the summary still reaches stdout, and the exit status says something was lost."""
    suite2p = copy_example()
    rc, out, _ = run_to("pipe", "apply", suite2p, "--model", models["suite2p"], err_sink="full",
                        env={"ROICURATE_PROGRESS_SECONDS": "0"})
    assert rc == 1 and "Traceback" not in out
    assert "plane0" in out and "plane1" in out
    assert_curated_with_combined(suite2p)
