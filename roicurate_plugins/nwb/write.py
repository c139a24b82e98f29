"""Writing roicurate's verdict into an NWB file, and putting the file back byte for byte.

What is written: a processing module ``roicurate`` holding, per curated ROI table, a DynamicTable (named after
the PlaneSegmentation, e.g. ``PlaneSegmentation`` or ``PlaneSegmentation_plane1``) with one row per ROI:
``roi`` (a DynamicTableRegion into the PlaneSegmentation's rows), ``probability`` (the model's probability of
the positive class), ``accepted`` (bool) and, for models with more than two classes, ``class_probability``
(ROIs x classes); and one DynamicTable ``curations`` with one row per curated table: which table and
PlaneSegmentation, the pipeline, model (name or card path) and its sha256, threshold, classes and accepted
classes, crop inputs, reference cell diameter (px, NaN for native-pixel crops) and where it came from, roicurate
version, time, the sha256 of what was written in the verdict table (to notice hand edits), the backup's name and
sha256, and (optional columns, empty in older files) the ROIs' fingerprint, the card's operating point and TTA.
The PlaneSegmentation itself (Suite2p's iscell, CaImAn's keep) is never changed.

How: under the folder's lock, the original file is copied once to ``NAME.roicurate-backup.nwb`` (created without
replacing; verified on every later run: HDF5, the same ROI count in every PlaneSegmentation, the sha256 recorded in
the file). A modified copy is made in a temp file beside it (the old table of this unit and ``curations`` removed
with h5py, the new ones added with pynwb in append mode), fsynced and ``os.replace``d over the file. Each unit
(ROI table) is one such atomic rewrite of the whole file; the tables of one file that a run writes form one critical
section (the folder's lock is kept from the first table's write to the last: ``write_table``), so two runs never
leave a file's tables at different thresholds. h5py and pynwb write the temp copy through ``fileguard.writing_copy``:
a full disk or an I/O error is one line naming the file and the errno, nothing changed. ``revert`` restores the
verified backup byte for byte.
"""
import datetime
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from roicurate import RoicurateError, __version__, hdf5_content
from roicurate.fileguard import writing_copy
from roicurate.rois import roi_fingerprint
from roicurate.safeio import atomic_replace, hold_folder, locked_transaction, release_folder, sha256_file
from roicurate.sources import (check_whole_file_writable, prepare_whole_file, restore_whole_file,
                               settle_without_record)
from roicurate_plugins.nwb.shared import MODULE, backup_of, has_hdf5_signature, pynwb

CURATIONS = "curations"
ROOT_ATTRS = (".specloc", "nwb_version")   # set by whichever pynwb wrote last
TEXT = ("table", "plane_segmentation", "pipeline", "model", "model_sha256", "classes", "accepted_classes", "inputs",
        "diameter_source", "roicurate_version", "time", "verdict_sha256", "backup", "backup_sha256")
FLOAT = ("threshold", "reference_diameter_px")
OPTIONAL = ("roi_sha256", "operating_point", "tta")    # columns files written by earlier versions lack (read as "")
DESCRIBE = {
    "table": "the roicurate verdict table of this row (in this module)",
    "plane_segmentation": "the PlaneSegmentation it refers to (processing module/ImageSegmentation/name[/planeZ])",
    "pipeline": "the pipeline that found the ROIs (suite2p, caiman; empty: unknown)",
    "model": "the model that classified them (registered name or model card path)",
    "model_sha256": "sha256 of the model's weights", "threshold": "accepted when probability >= threshold",
    "classes": "JSON list of the model's classes", "accepted_classes": "JSON list of the classes counted as accepted",
    "inputs": "JSON list of the crop channels given to the model",
    "reference_diameter_px": "reference cell diameter the crops were scaled by (px); NaN: native pixels",
    "diameter_source": "where the reference diameter came from", "roicurate_version": "roicurate version",
    "time": "UTC time of the write", "verdict_sha256": "sha256 of the verdict table as roicurate wrote it",
    "backup": "file name of roicurate's copy of the original file",
    "backup_sha256": "sha256 of roicurate's copy of the original file",
    "roi_sha256": "fingerprint of the ROIs the verdict is for (sha256 of the table's masks: frame, then each ROI's "
                  "rows, columns and weights in order; roicurate.rois.roi_fingerprint)",
    "operating_point": "the model card's operating point the threshold is (empty: a custom threshold, or a card "
                       "without points)",
    "tta": "true: probabilities averaged over the eight rotations/flips of each crop (test-time augmentation)"}


def _h5py():
    import h5py
    return h5py


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def table_name(unit_table):
    """``ophys/ImageSegmentation/PlaneSegmentation[/planeZ]`` -> ``PlaneSegmentation[_planeZ]`` (the default
    module and container names left out)."""
    parts = unit_table.split("/")
    keep = [p for i, p in enumerate(parts) if not (i == 0 and p == "ophys") and not (i == 1 and p == "ImageSegmentation")]
    return "_".join(keep)


def verdict_sha256(rows, probability, accepted, class_probability=None):
    h = hashlib.sha256()
    for a, dt in ((rows, "<i8"), (probability, "<f8"), (np.asarray(accepted, bool), "u1")):
        h.update(np.ascontiguousarray(np.asarray(a).astype(dt)).tobytes())
    if class_probability is not None:
        h.update(np.ascontiguousarray(np.asarray(class_probability, "<f8")).tobytes())
    return h.hexdigest()


def _file_verdict(group, name):
    """(sha256, (N,) bool accepted by ROI) of roicurate's verdict table as the file holds it now ((None, None): gone
    or unreadable); the pipeline's own verdict stays apart, in its PlaneSegmentation."""
    try:
        t = group[name]
        roi, accepted = t["roi"][()], t["accepted"][()]
        sha = verdict_sha256(roi, t["probability"][()], accepted,
                             t["class_probability"][()] if "class_probability" in t else None)
        by_roi = np.zeros(int(roi.max()) + 1 if len(roi) else 0, bool)
        by_roi[np.asarray(roi, np.int64)] = np.asarray(accepted, bool)
        return sha, by_roi
    except Exception:
        return None, None


def _open(path, what="file"):
    h5py = _h5py()
    if not has_hdf5_signature(path):
        raise RoicurateError(f"{path}: {what} is not an HDF5 file (truncated or corrupt); nothing changed")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise RoicurateError(f"{path}: {what} cannot be opened ({e}); nothing changed") from None


def _ps_counts(f):
    """{group path: rows} of every PlaneSegmentation in an open file."""
    out = {}

    def visit(name, obj):
        if _text(obj.attrs.get("neurodata_type", "")) == "PlaneSegmentation" and "id" in obj:
            out[name] = len(obj["id"])
    f.visititems(visit)
    return out


def _curations(f):
    """[row dict] of processing/roicurate/curations ([] when there is none)."""
    t = f.get(f"processing/{MODULE}/{CURATIONS}")
    if t is None:
        return []
    try:
        cols = {k: t[k][()] for k in TEXT + FLOAT}
        n = len(cols["table"])
        cols.update({k: t[k][()] if k in t else [""] * n for k in OPTIONAL})
        return [{k: (float(v[i]) if k in FLOAT else _text(v[i])) for k, v in cols.items()} for i in range(n)]
    except Exception as e:
        raise RoicurateError(f"{f.filename}: processing/{MODULE}/{CURATIONS} is unreadable ({type(e).__name__}); "
                             f"move the file's backup away or restore the file by hand; nothing changed") from None


def inspect(path):
    """The verified state of ``path`` and its backup: ``rows`` (curations), ``edited`` (tables whose content is no
    longer what roicurate wrote), ``counts`` (PlaneSegmentation rows), ``backup_sha``, ``stale`` (no record, and a
    backup of another file), ``adopt`` (no record, byte-identical backup: an interrupted first run)."""
    path = Path(path)
    backup = backup_of(path)
    with _open(path) as f:
        rows = _curations(f)
        counts = _ps_counts(f)
        group = f.get(f"processing/{MODULE}")
        edited = [r["table"] for r in rows if _file_verdict(group, r["table"])[0] != r["verdict_sha256"]]
    st = SimpleNamespace(rows=rows, counts=counts, edited=edited, stale=False, adopt=False, rerun=False,
                         backup_sha=rows[0]["backup_sha256"] if rows else None)
    if settle_without_record(path, backup, bool(rows), st):
        return st
    with _open(backup, "roicurate's backup") as f:
        bcounts = _ps_counts(f)
    if bcounts != counts:
        raise RoicurateError(f"{backup}: roicurate's backup has other ROI tables or counts than {path.name} "
                             f"({_counts(bcounts)} vs {_counts(counts)}); nothing changed")
    if sha256_file(backup) != st.backup_sha:
        raise RoicurateError(f"{backup}: differs from the sha256 roicurate recorded when it made this backup (changed "
                             f"or corrupt); nothing changed")
    return st


def _counts(counts):
    return ", ".join(f"{k.rsplit('/', 1)[-1]} {v}" for k, v in counts.items()) or "none"


def check_writable(path, force=False, unit_table=None):
    """``unit_table``: the unit's ROI table (``module/ImageSegmentation/PlaneSegmentation[/planeZ]``); only its own
    verdict table counts as edited (None: every table of the file)."""
    path = Path(path)

    def state(path):
        st = inspect(path)
        if unit_table is not None:
            st.edited = [t for t in st.edited if t == table_name(unit_table)]
        return st
    return check_whole_file_writable(path, state, force, lambda st: (
        st.edited and f"roicurate's verdict ({', '.join(st.edited)}) changed since roicurate wrote it; use --force "
                      f"to overwrite those edits (the edited file is kept beside it)",
        st.stale and f"differs from {backup_of(path).name} and carries no roicurate record (re-saved since roicurate "
                     f"backed it up?); move the old backup away, or use --force (it is kept as "
                     f"{path.stem}.roicurate-backup-stale-<time>{path.suffix})"))


def _provenance(roiset, curation, sha, backup, backup_sha):
    d = curation.diameter
    model = curation.model.get("source") or curation.model.get("name", "")
    return {"table": table_name(roiset.origin["table"]), "plane_segmentation": roiset.origin["table"],
            "pipeline": roiset.pipeline or "", "model": str(model), "model_sha256": str(curation.model.get("sha256", "")),
            "classes": json.dumps(list(curation.classes)), "accepted_classes": json.dumps(curation.accepted_classes),
            "inputs": json.dumps(list(curation.inputs)), "diameter_source": curation.diameter_source or "",
            "roicurate_version": __version__,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "verdict_sha256": sha, "backup": backup.name, "backup_sha256": backup_sha,
            "roi_sha256": roi_fingerprint(roiset), "operating_point": curation.operating_point or "",
            "tta": json.dumps(bool(curation.tta)),
            "threshold": float(curation.threshold), "reference_diameter_px": np.nan if d is None else float(d)}


def write(path, roiset, curation, force=False):
    """One unit: under the folder's lock, verify (or make) the backup, keep an edited file beside, rewrite the
    whole file through a temp copy (fsync, ``os.replace``). A failure undoes every step."""
    path = Path(path)
    backup = backup_of(path)
    rows = np.asarray(roiset.origin["rows"], np.int64)
    n = len(rows)
    if len(curation.accepted) != n or len(roiset) != n:
        raise RoicurateError(f"{path}: curation has {len(curation.accepted)} ROIs, the table has {n}")
    prob = np.asarray(curation.score, np.float64)
    accepted = np.asarray(curation.accepted, bool)
    cp = np.asarray(curation.probabilities, np.float64) if len(curation.classes) > 2 else None
    sha = verdict_sha256(rows, prob, accepted, cp)
    with locked_transaction(path.parent, path) as tx:
        st = check_writable(path, force, roiset.origin["table"])     # again: another run may have written meanwhile
        ps_key = next((k for k in st.counts if k.endswith("/" + roiset.origin["plane_segmentation"])), None)
        if ps_key is None or st.counts[ps_key] != roiset.origin["ps_rows"]:
            raise RoicurateError(f"{path}: {roiset.origin['plane_segmentation']} changed while roicurate ran; "
                                 f"nothing written")
        tmp, new_backup, notes = prepare_whole_file(path, backup, st, tx, extra=path.stat().st_size)
        prov = _provenance(roiset, curation, sha, backup, st.backup_sha)
        _rewrite(tmp, path, roiset.origin["plane_segmentation"], rows, prob, accepted, cp, curation, prov,
                 [] if new_backup else st.rows)
        atomic_replace(tmp, path)
    return "; ".join(notes) or None


# ---- one critical section for the tables of a file (a file with several ROI tables is several units) ----------
_PENDING = {}      # file (real path) -> its tables this process checked for writing and has not written yet
_HOLDING = set()   # files whose folder lock this process keeps until their last checked table is written


def expect_write(path, table):
    """``apply`` checked ``table`` of ``path`` for writing (before its first write): the folder's lock, once taken
    for one of the file's tables, is kept until every table it checked is written, so two runs cannot interleave
    their tables (which would leave them at different thresholds)."""
    if table is not None:
        _PENDING.setdefault(os.path.realpath(path), set()).add(table)


def write_table(path, table, roiset, curation, force=False):
    """``write`` of one unit; for a table of a multi-table file, inside the file's lock (``expect_write``)."""
    path = Path(path)
    key = os.path.realpath(path)
    if table is not None and key not in _HOLDING:
        hold_folder(path.parent, path)      # waits, or 'busy', while another run writes this file's tables
        _HOLDING.add(key)
    done = False
    try:
        note = write(path, roiset, curation, force)
        done = True
        return note
    finally:
        pending = _PENDING.get(key, set())
        pending.discard(table)
        if not done or not pending:         # a failed table ends the section: nothing more is written to this file
            release_files([path])


def release_files(paths):
    """End the critical sections of these files (``finish_batch``, or a failed table)."""
    for path in paths:
        key = os.path.realpath(path)
        _PENDING.pop(key, None)
        if key in _HOLDING:
            _HOLDING.discard(key)
            release_folder(Path(path).parent)


def _rewrite(tmp, path, ps_path, rows, prob, accepted, cp, curation, prov, old_rows):
    """Replace this unit's verdict table and the curations table in the copy ``tmp`` of ``path``, through one h5py
    file on ``fileguard.writing_copy`` (an I/O error: one line naming ``path`` and the errno)."""
    name = prov["table"]
    records = [r for r in old_rows if r["table"] != name] + [prov]
    for r in records:                      # the file-level values follow the current backup
        r["backup"], r["backup_sha256"] = prov["backup"], prov["backup_sha256"]
    with writing_copy(tmp, path) as raw, _h5py().File(raw, "r+") as f:
        group = f.get(f"processing/{MODULE}")
        if group is not None:
            for key in (name, CURATIONS):
                if key in group:
                    del group[key]
        with pynwb().NWBHDF5IO(mode="a", file=f) as io:
            nwb = io.read()
            m, seg, ps_name = ps_path.split("/")
            _add_tables(nwb, nwb.processing[m][seg].plane_segmentations[ps_name], ps_path, rows, prob, accepted, cp,
                        curation, prov, records)
            io.write(nwb)


def _add_tables(nwb, ps, ps_path, rows, prob, accepted, cp, curation, prov, records):
    from hdmf.common import DynamicTable, DynamicTableRegion, VectorData
    name = prov["table"]
    mod = nwb.processing[MODULE] if MODULE in nwb.processing else nwb.create_processing_module(
        MODULE, "roicurate's verdict on the ROIs of the PlaneSegmentation tables (the pipeline's own columns are "
                "unchanged); one verdict table per ROI table, provenance in 'curations'")
    cols = [DynamicTableRegion(name="roi", data=rows, description=f"the ROI's row in {ps_path}", table=ps),
            VectorData(name="probability", data=prob,
                       description=f"the model's probability of class '{curation.classes[curation.positive]}'"),
            VectorData(name="accepted", data=accepted, description="accepted as a cell by roicurate")]
    human = np.full(len(rows), -1, np.int8) if curation.human is None else np.asarray(curation.human, np.int8)
    cols.append(VectorData(name="human", data=human, description="a person's answer in roicurate review (it "
                           "set 'accepted'): 1 cell, 0 not a cell, -1 not reviewed"))
    if cp is not None:
        cols.append(VectorData(name="class_probability", data=cp,
                               description=f"probability per class ({', '.join(curation.classes)})"))
    mod.add(DynamicTable(name=name, description=f"roicurate's verdict on {ps_path} (model {prov['model']}, "
                         f"threshold {prov['threshold']:.4g})", columns=cols))
    prov_cols = [VectorData(name=k, description=DESCRIBE[k],
                            data=np.array([r[k] for r in records], np.float64) if k in FLOAT
                            else [r.get(k, "") for r in records]) for k in TEXT + FLOAT + OPTIONAL]
    mod.add(DynamicTable(name=CURATIONS, description="what roicurate wrote, one row per verdict table",
                         columns=prov_cols))


def recorded(path, table=None):
    path = Path(path)
    if not has_hdf5_signature(path):
        return None
    with _open(path) as f:
        rows = _curations(f)
        group = f.get(f"processing/{MODULE}")
        row = next((r for r in rows if table is None or r["plane_segmentation"] == table), None)
        if row is None or (table is None and len(rows) > 1):
            return None
        sha, verdict = _file_verdict(group, row["table"])
    d = row["reference_diameter_px"]
    return {"model": row["model"], "sha256": row["model_sha256"] or None, "threshold": row["threshold"],
            "operating_point": row["operating_point"] or None, "tta": row["tta"] == "true",
            "also_accept": json.loads(row["accepted_classes"])[1:],
            "diameter": None if np.isnan(d) else (d, row["diameter_source"]), "date": row["time"] or None,
            "intact": sha == row["verdict_sha256"], "backup_problem": _backup_problem(path), "verdict": verdict}


def _backup_problem(path):
    """Why the file's backup cannot give the original back (one line), or None (sound, or missing: ``status`` says
    that apart)."""
    if not backup_of(path).exists():
        return None
    try:
        inspect(path)
    except RoicurateError as e:
        return str(e).replace("; nothing changed", "")
    return None


def _content_sha256(path):
    """sha256 over everything in the file but roicurate's module and the schema pynwb caches and names
    (roicurate/hdf5_content.py). (pynwb's append mode caches its own schema version and sets the root's
    ``nwb_version`` to it.)"""
    skip = (f"processing/{MODULE}", "specifications")
    return hdf5_content.content_sha256(path, lambda n: n.startswith(skip), lambda name, k: not name and k in ROOT_ATTRS,
                                       lambda name, k: not (name == "processing" and k == MODULE))


def revert(path, force=False):
    """Restore the verified backup byte for byte (``sources.restore_whole_file``), then remove it."""
    def drift(path, st):
        if st.edited:
            return f"roicurate's verdict edited: {', '.join(st.edited)}"
        changed = bool(st.rows) and _content_sha256(path) != _content_sha256(backup_of(path))
        return "changed outside roicurate's module" if changed else ""

    def recorded_any(path):
        with _open(path) as f:
            return bool(_curations(f))
    return restore_whole_file(path, backup_of(Path(path)), recorded_any, inspect, drift, force, salvage=_salvage)


def _salvage(path):
    """``revert --force`` of a file that cannot be read (truncated): its record, with the backup's sha256, is lost
    with it, so the backup is verified alone: an HDF5 file that opens, holds PlaneSegmentation tables and no
    roicurate module (roicurate's copy of the pipeline's original). Returns the restore state."""
    backup = backup_of(path)
    with _open(backup, "roicurate's backup") as f:
        counts = _ps_counts(f)
        ours = f"processing/{MODULE}" in f
    if not counts or ours:
        raise RoicurateError(f"{backup}: not a pipeline original roicurate kept ("
                             f"{'it holds a roicurate verdict' if ours else 'no PlaneSegmentation'}); nothing changed")
    return SimpleNamespace(adopt=False, backup_sha=None, rerun=False)
