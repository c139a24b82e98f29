"""What a lab that scripts its planes relies on: `apply --json` and `status --json` print JSON lines with every
field, `--recursive` finds every output under a tree (and `--dry-run` writes nothing), `python -m roicurate`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

UNIT_FIELDS = {"type", "path", "source", "pipeline", "model", "sha256", "threshold", "operating_point", "tta", "rois",
               "accepted", "rejected", "inputs", "reference_diameter", "diameter_source", "written", "backup",
               "dry_run"}
TOTALS_FIELDS = {"type", "units", "rois", "accepted", "rejected", "written_units", "seconds", "dry_run"}
STATUS_FIELDS = {"type", "path", "source", "state", "model", "sha256", "threshold", "operating_point", "tta", "date",
                 "backup", "detail", "review"}


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "roicurate", *map(str, args)], capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def json_lines(text):
    """Every stdout line must be one JSON object."""
    return [json.loads(line) for line in text.splitlines()]


def test_apply_json_prints_one_object_per_unit_and_totals(copy_example, copy_caiman, tiny_model):
    s2p = copy_example()
    cnm = copy_caiman("evaluated")
    p = run("apply", s2p, "--model", tiny_model, "--json")
    *units, totals = json_lines(p.stdout)
    assert [u["path"] for u in units] == [str(s2p / "plane0"), str(s2p / "plane1")]
    for u in units:
        plane = Path(u["path"])
        assert set(u) == UNIT_FIELDS and u["type"] == "unit" and u["dry_run"] is False
        assert (u["source"], u["pipeline"], u["model"], u["inputs"]) == ("suite2p", "suite2p", "tiny", ["mask"])
        card = json.loads((tiny_model / "tiny.json").read_text())
        assert u["sha256"] == card["sha256"] and u["threshold"] == card["threshold"]
        iscell = np.load(plane / "iscell.npy")
        assert u["rois"] == len(iscell) and u["accepted"] == int(iscell[:, 0].sum())
        assert u["accepted"] + u["rejected"] == u["rois"]
        assert u["written"] == [str(plane / f) for f in ("iscell.npy", "iscell_suite2p.npy", "roicurate.json")]
        assert u["backup"] == str(plane / "iscell_suite2p.npy")
        assert u["reference_diameter"] is None and u["diameter_source"] is None     # a native-scale model
    assert set(totals) == TOTALS_FIELDS and totals["type"] == "totals"
    assert (totals["units"], totals["written_units"], totals["dry_run"]) == (2, 2, False)
    assert totals["rois"] == sum(u["rois"] for u in units) and totals["accepted"] == sum(u["accepted"] for u in units)
    assert "ROIs," in p.stderr and "undo with: roicurate revert" in p.stderr        # the human lines, on stderr

    # a CaImAn file with the bundled model, dry run: nothing written, the scale it would use reported
    before = cnm.read_bytes()
    [u, totals] = json_lines(run("apply", cnm, "--json", "--dry-run").stdout)
    assert (u["source"], u["model"], u["written"], u["backup"], u["dry_run"]) == ("caiman", "caiman-cnn2", [], None,
                                                                                 True)
    assert u["reference_diameter"] == 12.0 and u["diameter_source"].startswith("CaImAn gSig setting")
    assert totals["written_units"] == 0 and cnm.read_bytes() == before


def test_status_says_what_roicurate_did(copy_example, tiny_model):
    s2p = copy_example()
    plane0, plane1 = s2p / "plane0", s2p / "plane1"
    status = lambda: {r["path"]: r for r in json_lines(run("status", s2p, "--json").stdout)}
    rows = status()
    assert all(set(r) == STATUS_FIELDS and r["state"] == "not curated" and r["model"] is None for r in rows.values())
    assert "plane0: not curated by roicurate" in run("status", s2p).stdout

    run("apply", plane0, "--model", tiny_model)
    run("apply", plane1, "--model", tiny_model, "--threshold", "0.2")
    rows = status()
    card = json.loads((tiny_model / "tiny.json").read_text())
    for plane, thr in ((plane0, card["threshold"]), (plane1, 0.2)):
        r = rows[str(plane)]
        assert (r["state"], r["model"], r["sha256"], r["threshold"]) == ("curated", str(tiny_model / "tiny.json"),
                                                                         card["sha256"], thr)
        assert r["date"] and r["date"][:4].isdigit() and r["backup"] == str(plane / "iscell_suite2p.npy")
    text = run("status", plane1).stdout
    assert text.startswith(f"{plane1}: curated by {tiny_model / 'tiny.json'} at threshold 0.200 on 20")

    iscell = np.load(plane0 / "iscell.npy")                  # a hand edit in the GUI
    iscell[0, 0] = 1 - iscell[0, 0]
    np.save(plane0 / "iscell.npy", iscell)
    (plane1 / "iscell_suite2p.npy").unlink()                 # the backup lost
    rows = status()
    assert rows[str(plane0)]["state"] == "edited since" and rows[str(plane1)]["state"] == "backup missing"
    assert "BACKUP MISSING" in run("status", plane1).stdout


def test_status_of_a_caiman_file(copy_caiman, tmp_path):
    cnm = copy_caiman("evaluated")
    run("apply", cnm)
    [row] = json_lines(run("status", cnm, "--json").stdout)
    assert (row["state"], row["model"], row["backup"]) == ("curated", "caiman-cnn2",
                                                           str(cnm.with_name("cnmf_refit_evaluated.roicurate-backup.hdf5")))
    assert row["date"].startswith("20") and row["threshold"] > 0


def test_recursive_finds_every_output_of_a_tree_of_datasets(suite2p_sessions, caiman_sessions, caiman_files,
                                                            geometry_only_plane, tmp_path):
    """Every Suite2p plane (a folder with stat.npy) and every CaImAn .hdf5 under a tree laid out like the shared
    datasets (sessions with suite2p/ and combined/, caiman/ folders, truth/, labels.json, summary images), nothing
    else: not roicurate's own backups."""
    import shutil
    from roicurate.discover import find_outputs
    datasets = tmp_path / "datasets"
    shutil.copytree(suite2p_sessions[1].parent.parent, datasets / "sim")
    for folder in caiman_sessions.values():
        shutil.copytree(folder, datasets / "sim" / folder.name)
    shutil.copytree(caiman_files["evaluated"].parent, datasets / "real" / "caiman")
    shutil.copytree(geometry_only_plane, datasets / "real" / "shape_only" / "suite2p" / "plane0")
    (datasets / "sim/s2p_sim1/summary_images.npz").write_bytes(b"")
    shutil.copyfile(caiman_files["evaluated"], datasets / "real/caiman/cnmf_refit_evaluated.roicurate-backup.hdf5")
    found = find_outputs([datasets])
    units = sorted(str(u) for src, path in found for u in src.expand(path))
    planes = sorted(str(p.parent) for p in datasets.rglob("stat.npy") if p.parent.name != "combined")
    hdf5 = sorted(str(p) for p in datasets.rglob("*.hdf5") if ".roicurate-" not in p.name)
    assert planes and hdf5 and units == sorted(planes + hdf5)
    assert (len(planes), len(hdf5)) == (1 + 2 + 1 + 1, 3 + 4)
    assert {src.name for src, _ in found} == {"suite2p", "caiman"}


def test_recursive_dry_run_lists_and_writes_nothing(copy_example, copy_caiman, tmp_path, hash_tree, tiny_model):
    tree = tmp_path / "lab"
    (tree / "mouse1" / "day1").mkdir(parents=True)
    os.rename(copy_example("", "s2p_sim2/suite2p").parent, tree / "mouse1" / "day1" / "s2p_sim2")
    (tree / "mouse1" / "caiman").mkdir()
    os.rename(copy_caiman("evaluated"), tree / "mouse1" / "caiman" / "cnmf_refit_evaluated.hdf5")
    os.rename(copy_caiman("selected"), tree / "mouse1" / "caiman" / "cnmf_selected.hdf5")
    (tree / "mouse1" / "caiman" / "old.roicurate-backup.hdf5").write_bytes(b"roicurate's own: never an output")
    before = hash_tree(tree)
    p = run("apply", tree, "--recursive", "--dry-run", "--model", tiny_model, "--any-pipeline")
    assert hash_tree(tree) == before
    err_and_out = p.stdout + p.stderr
    assert f"found {tree}/mouse1/caiman/cnmf_refit_evaluated.hdf5: CaImAn, 1 unit" in err_and_out
    assert f"found {tree}/mouse1/day1/s2p_sim2: Suite2p, 2 units" in err_and_out
    assert f"found under {tree}: 2 CaImAn units, 2 Suite2p units" in err_and_out
    assert "old.roicurate-backup" not in err_and_out
    assert "done: 2 planes, 2 files" in p.stdout and "[dry run: nothing written]" in p.stdout
    # the listing comes before anything is read: a bad file anywhere stops the batch with the listing printed
    (tree / "mouse1" / "caiman" / "broken.hdf5").write_bytes(b"not hdf5")
    p = run("apply", tree, "--recursive", "--model", tiny_model, "--any-pipeline", ok=False)
    assert p.returncode == 1 and "found under" in p.stdout and "broken.hdf5" in p.stderr.strip().splitlines()[-1]
    assert hash_tree(tree) == dict(before, **{"mouse1/caiman/broken.hdf5": hash_tree(tree)["mouse1/caiman/broken.hdf5"]})


def test_python_dash_m_works_like_the_command():
    a, b = run("--version"), subprocess.run(["roicurate", "--version"], capture_output=True, text=True)
    assert a.stdout == b.stdout and a.stdout.startswith("roicurate, version")
