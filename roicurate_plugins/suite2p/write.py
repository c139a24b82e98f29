"""Writing a verdict into Suite2p's files and taking it back, by the write protocol (roicurate/sources.py).

iscell.npy is float64 (N, 2) = [accepted 1.0/0.0, probability], exactly as Suite2p writes it; the pipeline's own
iscell.npy is kept once as iscell_suite2p.npy and what was written is recorded (with its sha256) in roicurate.json,
so a later run notices hand edits made in the GUI and keeps them beside the file. A model with more than two
classes also gets roicurate_classes.npy (float64 (N, K)); a cell-type model writes roicurate_types.npy and, on
request, redcell.npy. combined/iscell.npy is rebuilt as the concatenation of the planes' iscell.npy, in natural
plane order, as Suite2p does. Every file is replaced through ``Transaction.write`` (``safeio.atomic_write``).
"""
from pathlib import Path

import numpy as np

import roicurate
from roicurate import RoicurateError
from roicurate.rois import roi_fingerprint
from roicurate.safeio import (NothingToRevert, check_free_space, check_replaceable, clean_stale_temps, free_name,
                              locked_transaction, pause_after_check, sha256_bytes, sha256_file)
from roicurate.sources import check_dir_writable
from roicurate_plugins.suite2p.files import (BACKUP, CLASSES, ISCELL, RECORD, RED_BACKUP, REDCELL, TYPES,
                                             expand_units, load_file, load_iscell, load_redcell, plane_fingerprint,
                                             plane_folders, roi_count)
from roicurate_plugins.suite2p.state import (is_curated, json_bytes, npy_bytes, now_utc, parse_iscell, read_bytes,
                                             read_record, red_entry, types_record, verdict_of, verified_state)


def keep_edits(folder, st, tx):
    """Where ``st`` (``verified_state``) says iscell.npy holds hand edits, keep its bytes beside it under a free
    name (iscell_edited-<time>.npy) and return that path; else None."""
    if not st.edited:
        return None
    kept = free_name(folder, "iscell_edited", ".npy")
    tx.create(kept, st.current)
    return kept


PREVIOUS = (RECORD, BACKUP, CLASSES, TYPES, RED_BACKUP)     # an earlier curation's files, set aside after a re-run


def set_aside_previous(folder, tx):
    """Suite2p re-ran since roicurate curated ``folder`` (``verified_state``'s ``rerun``): the earlier curation's
    files (record, backup of the earlier run's verdict, class probabilities, cell types) are kept under dated names
    (``roicurate_before-rerun-<UTC>.json`` ...), never deleted; the new run's iscell.npy becomes the new backup.
    Undone with the unit. Returns the note for the user."""
    kept = []
    for name in PREVIOUS:
        data = read_bytes(folder / name)
        if data is None:
            continue
        stem, dot, suffix = name.rpartition(".")
        aside = free_name(folder, f"{stem}_before-rerun", f"{dot}{suffix}")
        tx.create(aside, data)
        tx.remove(folder / name)
        kept.append(aside.name)
    return (f"{folder}: Suite2p re-ran since roicurate curated it (other ROIs); the earlier curation's files are "
            f"kept as {', '.join(kept)}")


def refuse_rerun_over_our_verdict(folder, st):
    """A re-run whose iscell.npy still holds exactly roicurate's verdict on the earlier ROIs: Suite2p's own verdict
    on the new ROIs is not here, so there is no original to back up."""
    if st.rerun and st.previous.get("written_sha256") == st.sha:
        raise RoicurateError(f"{folder / 'stat.npy'}: its ROIs changed since roicurate curated them (Suite2p re-run?), "
                             f"but {ISCELL} still holds roicurate's verdict on the earlier ROIs, so Suite2p's verdict "
                             f"on these is not here; nothing written (re-run Suite2p's classification first)")


def check_writable(path, force=False, combined=True):
    """Everything ``write`` needs, checked before anything is written (and again under the lock): iscell.npy,
    the backup (loads, ROI count of stat.npy, recorded sha256), hand edits, replaceable files and, with
    ``combined``, combined/ (under the plane's lock it is left out: ``rebuild_combined`` verifies combined/ under
    its own lock). Returns the plane's verified state."""
    plane = Path(path)
    check_dir_writable(plane)
    clean_stale_temps(plane)
    st = verified_state(plane, roi_count(plane))
    refuse_rerun_over_our_verdict(plane, st)
    if st.edited and not force:
        raise RoicurateError(f"{plane / ISCELL}: changed since roicurate wrote it (edited in the Suite2p GUI?); "
                             f"use --force to overwrite those edits (they are kept beside it)")
    for name in (ISCELL, RECORD, CLASSES) + (PREVIOUS if st.rerun else ()):
        check_replaceable(plane / name)
    combined_dir = plane.parent / "combined"
    if combined and (combined_dir / ISCELL).exists():
        combined_rows(plane.parent)
        check_dir_writable(combined_dir)
        cst = verified_state(combined_dir, roi_count(combined_dir))
        refuse_rerun_over_our_verdict(combined_dir, cst)
        if cst.edited and not force:
            raise RoicurateError(f"{combined_dir / ISCELL}: changed since roicurate rebuilt it (flips in the Suite2p "
                                 f"GUI's combined view stay there); use --force (they are kept beside it)")
        for name in (ISCELL, RECORD):
            check_replaceable(combined_dir / name)
    return st


def write_plane(path, roiset, curation, force=False):
    """Under the plane's lock: verify (or make) the backup, keep hand edits beside iscell.npy, write the
    record first (it names the backup's sha256 and every state this write passes through), then the backup,
    then iscell.npy. A failure at any step undoes the earlier ones. Returns a note when edits were kept."""
    plane = Path(path)
    n = len(roiset)
    if n == 0:
        return None
    if len(curation.accepted) != n:
        raise RoicurateError(f"{plane}: curation has {len(curation.accepted)} ROIs, the plane has {n}")
    iscell = np.stack([np.asarray(curation.accepted, bool).astype(np.float64),
                       np.asarray(curation.score, np.float64)], axis=1)
    data = npy_bytes(iscell)
    multi = len(curation.classes) > 2
    classes = npy_bytes(np.asarray(curation.probabilities, np.float64)) if multi else b""
    roi_sha = roi_fingerprint(roiset)
    with locked_transaction(plane, plane / ISCELL) as tx:
        st = check_writable(plane, force=force, combined=False)   # again: another run may have written meanwhile
        if roi_count(plane) != n or plane_fingerprint(plane) != roi_sha:
            raise RoicurateError(f"{plane / 'stat.npy'}: changed while roicurate ran (now {roi_count(plane)} "
                                 f"ROIs, {n} read); nothing written")
        check_free_space(plane, 3 * len(data) + len(classes) + (1 << 20), f"{ISCELL}, its backup and the record")
        pause_after_check()
        notes = [set_aside_previous(plane, tx)] if st.rerun else []
        kept = keep_edits(plane, st, tx)
        original = parse_iscell(st.backup if st.backup is not None else st.current)
        tx.write(plane / RECORD, json_bytes({**types_record(plane), **{
            "roicurate_version": roicurate.__version__,
            "time": now_utc(),
            "model": dict(curation.model),
            "threshold": float(curation.threshold),
            "operating_point": curation.operating_point,   # the card's point (None: a custom threshold, no points)
            "tta": curation.tta,
            "classes": list(curation.classes),
            "positive_class": curation.classes[curation.positive],
            "accepted_classes": curation.accepted_classes,
            "accept_rule": f"P({' + '.join(curation.accepted_classes)}) >= threshold",
            "class_probabilities": CLASSES if multi else None,
            "counts": {"rois": n, "accepted_before": int((original[:, 0] > 0.5).sum()),
                       "accepted_after": int(iscell[:, 0].sum())},
            "human": curation.human_record(),      # review answers that set the verdict (roicurate review)
            "inputs": list(curation.inputs),
            "reference_diameter": None if curation.diameter is None else
                                  {"px": round(float(curation.diameter), 3), "source": curation.diameter_source},
            "roi_sha256": roi_sha,              # the ROIs this verdict is for (roicurate.rois.roi_fingerprint)
            "backup": BACKUP,
            "backup_sha256": st.original_sha or sha256_bytes(st.current),
            "written_sha256": sha256_bytes(data),
            "prior_sha256": st.sha,             # iscell.npy before this write (ours, Suite2p's, or kept edits)
            "edits_kept": st.record.get("edits_kept", []) + ([kept.name] if kept else []),
        }}))
        if st.backup is None:
            tx.create(plane / BACKUP, st.current)
        if multi:
            tx.write(plane / CLASSES, classes)
        else:
            tx.remove(plane / CLASSES)                 # from an earlier run with a K-class model
        tx.write(plane / ISCELL, data)
    notes += [f"{plane / ISCELL}: hand edits kept in {kept}"] if kept else []
    return "; ".join(notes) or None


# ---- cell types (a model whose card says task "types") -----------------------------------------------
def check_types_writable(path, force=False, redcell=False):
    """Everything ``write_types`` needs: a writable plane and, with ``redcell``, a readable redcell.npy that holds
    Suite2p's labels or exactly what roicurate wrote (else ``force``)."""
    plane = Path(path)
    check_dir_writable(plane)
    if not redcell or not (plane / REDCELL).exists():
        return
    load_redcell(plane / REDCELL, len(load_iscell(plane / ISCELL)))     # a broken original: nothing written
    red = red_entry(types_record(plane))
    if not force and red.get("written_sha256") and sha256_file(plane / REDCELL) != red["written_sha256"]:
        raise RoicurateError(f"{plane / REDCELL}: changed since roicurate wrote it (edited in the Suite2p GUI?); "
                             f"use --force to overwrite those edits")


def write_types(path, roiset, curation, force=False, redcell=False):
    """roicurate_types.npy (float64 (N, K), class names in roicurate.json) and, for a two-class model with
    ``redcell``, redcell.npy ``[P(positive) >= threshold, P(positive)]`` in the original's dtype (Suite2p
    1.1.0 writes float32); the original
    redcell.npy is kept once as redcell_suite2p.npy (or, where there was none, revert removes ours)."""
    plane = Path(path)
    n = len(roiset)
    if n == 0:
        return
    if curation.probabilities.shape[0] != n:
        raise RoicurateError(f"{plane}: {curation.probabilities.shape[0]} type probabilities, the plane has {n} ROIs")
    if redcell and len(curation.classes) != 2:
        raise RoicurateError(f"--redcell needs a two-class model (e.g. not_red / red); this one has "
                             f"{len(curation.classes)} classes")
    with locked_transaction(plane, plane / TYPES) as tx:
        check_types_writable(plane, force, redcell)
        pause_after_check()
        record = types_record(plane)
        old = red_entry(record)
        red = None
        if redcell:
            created = old.get("created", not (plane / REDCELL).exists())
            if not created and not (plane / RED_BACKUP).exists():
                tx.create(plane / RED_BACKUP, (plane / REDCELL).read_bytes())
            dtype = np.dtype(np.float32) if created else load_file(plane / RED_BACKUP).dtype  # Suite2p 1.1.0: float32
            dtype = dtype if dtype.kind == "f" else np.float32
            rows = npy_bytes(np.stack([curation.accepted, curation.score], 1).astype(dtype))
            tx.write(plane / REDCELL, rows)
            red = {"file": REDCELL, "created": created, "backup": None if created else RED_BACKUP,
                   "rule": f"P({curation.classes[curation.positive]}) >= threshold",
                   "written_sha256": sha256_bytes(rows)}
        elif old:
            red = old                                      # an earlier run's redcell.npy stays as it is
        tx.write(plane / TYPES, npy_bytes(np.asarray(curation.probabilities, np.float64)))
        counts = np.bincount(curation.probabilities.argmax(1), minlength=len(curation.classes))
        full = read_record(plane)
        full["types"] = {"roicurate_version": roicurate.__version__, "time": now_utc(), "model": dict(curation.model),
                         "file": TYPES, "classes": list(curation.classes),
                         "positive_class": curation.classes[curation.positive],
                         "threshold": float(curation.threshold), "operating_point": curation.operating_point,
                         "tta": curation.tta, "most_probable": dict(zip(curation.classes, counts.tolist())),
                         "redcell": red}
        tx.write(plane / RECORD, json_bytes(full))


def rebuild_all_combined(paths):
    """Rebuild combined/ of every suite2p/ folder written to (and of one a killed run left out of step)."""
    notes = []
    for parent in sorted({Path(p).parent for p in paths}):
        if (parent / "combined" / ISCELL).exists():
            notes += rebuild_combined(parent)
    return "; ".join(notes) or None


def combined_rows(suite2p_dir):
    """The planes' iscell rows, concatenated, after checking they match combined/stat.npy."""
    combined = suite2p_dir / "combined"
    planes = plane_folders(suite2p_dir)
    rows = np.concatenate([load_iscell(p / ISCELL) for p in planes]) if planes else np.zeros((0, 2))
    n = roi_count(combined)
    if len(rows) != n:
        raise RoicurateError(f"{combined / 'stat.npy'}: has {n} ROIs but the planes' iscell.npy have "
                             f"{len(rows)} rows in all; re-run Suite2p's combine step")
    return rows


def plane_verdicts(suite2p_dir):
    """Whose verdict each plane's rows in combined/ are, from the planes' own records: {plane: {model, sha256,
    threshold, operating_point, tta}}, or None for a plane roicurate has not curated (the pipeline's own verdict)."""
    recs = {plane.name: read_record(plane) for plane in plane_folders(suite2p_dir)}
    return {name: verdict_of(rec) if rec.get("written_sha256") else None for name, rec in recs.items()}


def rebuild_combined(suite2p_dir):
    """combined/iscell.npy = the planes' iscell.npy concatenated, as Suite2p does, under combined/'s lock, with
    its original kept once; flips made in the GUI's combined view (which stay there) are kept beside."""
    combined = suite2p_dir / "combined"
    with locked_transaction(combined, combined / ISCELL) as tx:
        data = npy_bytes(combined_rows(suite2p_dir))
        st = verified_state(combined, roi_count(combined))
        check_free_space(combined, 3 * len(data) + (1 << 20), f"{combined / ISCELL} and its backup")
        notes = [set_aside_previous(combined, tx)] if st.rerun else []
        if st.edited:
            notes.append(f"{combined / ISCELL}: hand edits kept in {keep_edits(combined, st, tx)}")
        verdicts = plane_verdicts(suite2p_dir)
        if st.sha == sha256_bytes(data) and st.record and st.record.get("verdicts") == verdicts:
            return notes
        tx.write(combined / RECORD, json_bytes({
            "roicurate_version": roicurate.__version__,
            "time": now_utc(),
            "rebuilt_from": [p.name for p in plane_folders(suite2p_dir)],
            "verdicts": verdicts,
            "note": "combined/iscell.npy rebuilt as the concatenation of the planes' iscell.npy, as Suite2p does",
            "roi_sha256": plane_fingerprint(combined),
            "backup": BACKUP,
            "backup_sha256": st.original_sha or st.sha,
            "written_sha256": sha256_bytes(data),
            "prior_sha256": st.sha,
        }))
        if st.backup is None:
            tx.create(combined / BACKUP, st.current)
        tx.write(combined / ISCELL, data)
    return notes


# ---- reverting -----------------------------------------------------------------------------------
def revert_path(path, force=False):
    """Revert every curated plane under ``path`` (each checked before the first is restored), then combined/."""
    path = Path(path)
    if path.name == "combined":
        expand_units(path)  # raises the "pass the suite2p folder" error
    if not path.exists():
        raise RoicurateError(f"{path}: does not exist")
    planes = expand_units(path) if path.is_dir() else []
    parents = sorted({p.parent for p in planes})
    for folder in planes + [d / "combined" for d in parents if (d / "combined").is_dir()]:
        clean_stale_temps(folder)              # a killed run's leftovers, even where nothing is curated
    curated = [p for p in planes if is_curated(p)]
    for p in curated:                          # every plane checked before the first one is restored
        check_revert(p, force)
    for parent in parents:                     # and combined/: never the earlier run's verdict on other ROIs
        if (parent / "combined" / RECORD).exists():
            refuse_revert_after_rerun(parent / "combined", verified_state(parent / "combined",
                                                                           roi_count(parent / "combined")))
    done = []
    for p in curated:
        done += revert_plane(p, force)
    for parent in parents:                     # also when a killed revert left only combined/ curated
        done += revert_combined(parent)
    if not done:                               # nothing curated, or another run reverted it meanwhile
        raise NothingToRevert(f"{path}: nothing to revert (no {BACKUP} or cell types from an earlier roicurate run)")
    return "; ".join(done)


def check_revert(plane, force):
    """Everything ``revert_plane`` needs, checked before anything is restored; returns the plane's verified state."""
    n = roi_count(plane)
    st = verified_state(plane, n)
    refuse_revert_after_rerun(plane, st)
    if st.edited and not force:
        raise RoicurateError(f"{plane / ISCELL}: edited since roicurate wrote it (in the Suite2p GUI?); revert would "
                             f"drop those edits: use --force to keep them beside it and restore Suite2p's original")
    if (plane / RED_BACKUP).exists():
        load_redcell(plane / RED_BACKUP, n)
    check_dir_writable(plane)
    for name in (ISCELL, BACKUP, RECORD, CLASSES, TYPES, REDCELL, RED_BACKUP):
        check_replaceable(plane / name)
    check_free_space(plane, 2 * len(st.current) + (1 << 20), f"restoring {ISCELL}")
    return st


def refuse_revert_after_rerun(folder, st):
    """``revert`` never puts a verdict on ROIs it was not made for, --force or not."""
    if st.rerun:
        raise RoicurateError(f"{folder / 'stat.npy'}: its ROIs are not those roicurate curated (Suite2p re-run since "
                             f"{st.previous.get('time') or 'then'}), so the earlier run's verdict in {BACKUP} is not "
                             f"for them; nothing changed ({ISCELL} is the new run's own verdict; roicurate apply "
                             f"curates it and keeps the earlier curation's files aside)")


def revert_plane(plane, force):
    """Restore iscell.npy from the verified backup, then remove the backup, then the record (until the record
    is gone, a re-run can tell the restored original from hand edits)."""
    with locked_transaction(plane, plane / ISCELL) as tx:
        if not is_curated(plane):
            return []
        st = check_revert(plane, force)
        pause_after_check()
        done = []
        if st.edited:
            done.append(f"{plane / ISCELL}: hand edits kept in {keep_edits(plane, st, tx)}")
        red = red_entry(st.record)
        if st.backup is not None:
            tx.write(plane / ISCELL, st.backup)
            done.append(f"{plane / ISCELL} restored")
        if (plane / RED_BACKUP).exists():
            tx.write(plane / REDCELL, (plane / RED_BACKUP).read_bytes())
            tx.remove(plane / RED_BACKUP)
            done.append(f"{plane / REDCELL} restored")
        elif red.get("created"):
            tx.remove(plane / REDCELL)
            done.append(f"{plane / REDCELL} (made by roicurate) removed")
        tx.remove(plane / BACKUP)
        for name in (CLASSES, TYPES):
            tx.remove(plane / name)
        tx.remove(plane / RECORD)
        if not done:
            done.append(f"{plane}: roicurate's files removed ({ISCELL} was already Suite2p's)")
    return done


def revert_combined(suite2p_dir):
    """Once no plane is curated any more, combined/ gets its original back; until then it follows the planes."""
    combined = suite2p_dir / "combined"
    if not (combined / BACKUP).exists() and not (combined / RECORD).exists():
        return []
    if any(is_curated(p) for p in plane_folders(suite2p_dir)):
        return rebuild_combined(suite2p_dir) + [f"{combined / ISCELL} rebuilt from the planes"]
    with locked_transaction(combined, combined / ISCELL) as tx:
        if not (combined / BACKUP).exists() and not (combined / RECORD).exists():
            return []
        st = verified_state(combined, roi_count(combined))
        done = []
        if st.edited:
            done.append(f"{combined / ISCELL}: hand edits kept in {keep_edits(combined, st, tx)}")
        if st.backup is not None:
            tx.write(combined / ISCELL, st.backup)
        tx.remove(combined / BACKUP)
        tx.remove(combined / RECORD)
    return done + [f"{combined / ISCELL} restored"]
