"""The lines ``apply``, ``revert`` and ``status`` say for people (the command line prints them; the Python API
carries them in its results)."""
import shlex

DRY_RUN = "  [dry run: nothing written]"


def short(source):
    """'Suite2p diameter setting', '--diameter', 'ROI statistic' (the part before any parenthesis)."""
    return source.split(" (")[0]


def point_note(point, tta=False):
    """' (recall point)' for a card's operating point, ' + TTA' with test-time augmentation; '' otherwise."""
    return (f" ({point} point)" if point else "") + (" + TTA" if tta else "")


def verdict_line(unit, rs, cur, clf, dry_run, original):
    """('PLANE: N ROIs, A accepted, R rejected (pipeline accepted P); MODEL at threshold T; ...', [warnings]).
    ``original``: the pipeline's own verdict ((N,) bool, or None where it has none)."""
    from roicurate.scale import outside_range
    s = cur.summary()
    before = "" if original is None else f" (pipeline accepted {int(original.sum())})"
    rule = "" if not cur.also_accept else f" on P({' + '.join(cur.accepted_classes)})"
    counts = "" if "classes" not in s else \
        "; most probable class: " + ", ".join(f"{c} {k}" for c, k in s["classes"].items())
    scale = "" if cur.diameter is None else f"; cell diameter {cur.diameter:.1f} px ({short(cur.diameter_source)})"
    inputs = "" if list(cur.inputs) == ["mask"] else f"; inputs {'+'.join(cur.inputs)}"
    review = "" if not s.get("human", {}).get("reviewed") else \
        (f"; {s['human']['reviewed']} set by your review answers ({s['human']['overruled']} overruling the model)")
    frame = "" if not rs.frame_source else f"; frame {rs.shape[0]}×{rs.shape[1]} px taken from {rs.frame_source}"
    warning = outside_range(cur.diameter, clf.card.get("training", {}).get("reference_diameter_px"))
    warnings = [f"{unit}: warning: {warning}"] if warning else []
    point = point_note(s["operating_point"], s["tta"])
    return (f"{unit}: {s['rois']} ROIs, {s['accepted']} accepted, {s['rejected']} rejected{before}; "
            f"{clf.name} at threshold {s['threshold']:.3f}{point}{rule}{counts}{review}{scale}{inputs}{frame}"
            f"{DRY_RUN * dry_run}",
            warnings)


def types_line(unit, cur, clf, redcell, dry_run):
    s = cur.summary()
    if len(cur.classes) == 2:
        counts = f"{s['accepted']} {cur.classes[cur.positive]} at threshold {s['threshold']:.3f}"
    else:
        best = cur.probabilities.argmax(1).tolist()
        counts = "most probable class: " + ", ".join(f"{c} {best.count(j)}" for j, c in enumerate(cur.classes))
    return (f"{unit}: {s['rois']} ROIs typed by {clf.name}: {counts}" + ("; written to redcell.npy too" if redcell
                                                                          else "") + DRY_RUN * dry_run)


def count_units(srcs):
    """'2 planes, 1 file' (each source names its units)."""
    from collections import Counter
    n = Counter(src.unit_noun for src in srcs)
    return ", ".join(f"{k} {noun}{'s' * (k != 1)}" for noun, k in sorted(n.items(), reverse=True)) or "0 planes"


def undo_line(written, paths, recursive=False):
    """Where the pipeline's original verdict is kept, and the command that puts it back."""
    backups = (src.backup_path(u) for src, units in written.items() for u in units)
    kept = list(dict.fromkeys(str(b) for b in backups if b is not None))          # NWB planes share one backup
    where = "" if not kept else f" in {kept[0]}" + (f" (and {len(kept) - 1} more like it)" if len(kept) > 1 else "")
    return f"the pipeline's original verdict is kept{where}; undo with: {undo_command(paths, recursive)}"


def undo_command(paths, recursive=False):
    """``roicurate revert [--recursive] PATH ...``, each path quoted for a shell."""
    return "roicurate revert " + ("--recursive " if recursive else "") + " ".join(shlex.quote(str(p)) for p in paths)


def status_line(row):
    """'PATH: curated by MODEL at threshold T on DATE' and the other states, for people."""
    if row["state"] == "not curated":
        return f"{row['path']}: not curated by roicurate"
    if row["state"] == "unreadable":
        return f"{row['path']}: unreadable ({row['detail']})"
    if row["state"] == "record missing":
        return f"{row['path']}: RECORD MISSING: {row['detail']}"
    thr = "?" if row["threshold"] is None else \
        f"{row['threshold']:.3f}{point_note(row.get('operating_point'), row.get('tta'))}"
    text = f"{row['path']}: curated by " + (f"{row['model']} at threshold {thr}" if row["model"] else "roicurate") + \
        (f" on {row['date']}" if row["date"] else "")
    if row["state"] == "edited since":
        text += "; the verdict was edited since (roicurate apply keeps the edits beside it before writing)"
    elif row["state"] == "re-run":
        text += ("; RE-RUN by the pipeline since roicurate curated it (other ROIs): its verdict is the new run's; "
                 "roicurate apply curates it and keeps the earlier curation's files aside, revert refuses")
    elif row["state"] == "backup missing":
        text += f"; BACKUP MISSING: {row['backup']} (the pipeline's original verdict cannot be restored)"
    elif row["state"] == "backup damaged":
        text += "; BACKUP DAMAGED (the pipeline's original verdict cannot be restored from it)"
    return text + (f"; {row['detail']}" if row["detail"] else "")
