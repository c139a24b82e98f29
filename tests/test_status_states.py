"""Issue #23 item 7: ``status`` tells the truth in every state it used to misread (a damaged backup, a record
deleted beside its backup, an unreadable record, hand edits in Suite2p's combined/, one broken unit in a batch),
and its advice is what ``apply`` / ``revert`` then accept. A curated NWB file whose content is broken but whose
backup is intact is reverted with --force. (A re-run: tests/test_reruns.py.)"""
import json
import shutil

import numpy as np
import pytest
from conftest import cli_run, tree_hashes

from roicurate import RoicurateError
from roicurate.api.restoring import unit_status
from roicurate_plugins.suite2p import Suite2pSource
from test_suite2p import curate

src = Suite2pSource()


@pytest.fixture
def curated(copy_example):
    plane = copy_example("plane0")
    curate(plane)
    return plane


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other verdict"])
def test_damaged_backup_is_not_curated(curated, damage):
    backup = curated / "iscell_suite2p.npy"
    data = backup.read_bytes()
    if damage == "garbage":
        backup.write_bytes(b"\x00garbage" * 40)
    elif damage == "truncated":
        backup.write_bytes(data[:len(data) // 2])
    else:                                  # loads, right shape, but not what roicurate backed up
        a = np.load(backup)
        a[0, 0] = 1 - a[0, 0]
        np.save(backup, a)
    row = unit_status(src, curated)
    assert row["state"] == "backup damaged" and "iscell_suite2p.npy" in row["detail"], row
    assert "BACKUP DAMAGED" in cli_run("status", curated).output


def test_record_deleted_beside_the_backup(curated):
    (curated / "roicurate.json").unlink()
    row = unit_status(src, curated)
    assert row["state"] == "record missing" and "move iscell_suite2p.npy away" in row["detail"], row
    with pytest.raises(RoicurateError) as e:      # apply refuses with the same advice
        src.check_writable(curated, force=True)
    assert "move iscell_suite2p.npy away" in str(e.value)
    shutil.move(curated / "iscell_suite2p.npy", curated.parent / "kept.npy")       # the advice, followed
    assert unit_status(src, curated)["state"] == "not curated"
    curate(curated)


def test_unreadable_record_advice_works(curated):
    (curated / "roicurate.json").write_text("{not json")
    row = unit_status(src, curated)
    assert row["state"] == "unreadable" and "--force" not in row["detail"], row
    assert "move it and iscell_suite2p.npy away" in row["detail"]
    with pytest.raises(RoicurateError) as e:      # --force would not have helped
        src.check_writable(curated, force=True)
    assert "--force" not in str(e.value)
    shutil.move(curated / "iscell_suite2p.npy", curated / "iscell.npy")             # the advice, followed
    shutil.move(curated / "roicurate.json", curated.parent / "old.json")
    curate(curated)


def test_combined_edits_appear(copy_example, tiny_model):
    from roicurate.api import apply, status
    s2p = copy_example()
    apply(s2p, model=tiny_model)
    combined = s2p / "combined" / "iscell.npy"
    a = np.load(combined)
    a[0, 0] = 1 - a[0, 0]                                # a flip in the GUI's combined view
    np.save(combined, a)
    lines = [r.line for r in status(s2p)]
    assert all("combined" in line and "changed since roicurate rebuilt it" in line for line in lines), lines


# ---- NWB: a truncated curated file --------------------------------------------------------------------------------
@pytest.fixture
def broken_nwb(tmp_path, tiny_model):
    pytest.importorskip("pynwb")
    from test_nwb import write_suite2p_layout
    path = tmp_path / "s2p.nwb"
    write_suite2p_layout(path)
    original = path.read_bytes()
    cli_run("apply", path, "--model", tiny_model / "tiny.json")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path, original


def test_status_reports_every_unit_then_exits_1(broken_nwb, copy_example):
    path, _ = broken_nwb
    plane = copy_example("plane0")
    r = cli_run("status", path, plane, ok=False)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1, r.output
    assert any(line.startswith(f"{path}: unreadable") for line in lines), r.output
    assert any(line.startswith(f"{plane}: not curated") for line in lines), r.output
    ok = cli_run("status", plane)                         # a readable batch: exit 0
    assert ok.exit_code == 0


def test_truncated_curated_nwb_reverted_with_force(broken_nwb):
    path, original = broken_nwb
    before = tree_hashes(path.parent)
    r = cli_run("revert", path, ok=False)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "--force" in r.output, r.output
    assert tree_hashes(path.parent) == before
    broken = path.read_bytes()
    r = cli_run("revert", path, "--force")
    assert path.read_bytes() == original and not path.with_name("s2p.roicurate-backup.nwb").exists()
    kept = list(path.parent.glob("s2p.roicurate-edited-*.nwb"))
    assert len(kept) == 1 and kept[0].read_bytes() == broken and kept[0].name in r.output, r.output
