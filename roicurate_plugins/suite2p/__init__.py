"""Suite2p source: reads a plane folder (stat.npy + iscell.npy + ops) and writes the verdict into iscell.npy;
registered as ``suite2p``.

What the Suite2p GUI and pipeline expect (see docs/formats.md): iscell.npy is float64 (N, 2) =
[accepted 1.0/0.0, probability]; combined/iscell.npy is the concatenation of the planes' iscell.npy in
natural plane order. We keep the pipeline's own iscell.npy once as iscell_suite2p.npy and record what we
wrote (with its sha256) in roicurate.json, so a later run notices hand edits made in the GUI. A model with more
than two classes also gets its per-class probabilities written to roicurate_classes.npy (float64 (N, K), the
class names in roicurate.json); iscell's probability column stays that of the positive class.
Suite2p itself is never imported.

Reading and checking Suite2p's files: ``suite2p.files``. roicurate's record and backup and their verified state:
``suite2p.state``. Writing, rebuilding combined/ and reverting: ``suite2p.write``.
"""
from pathlib import Path

from roicurate import RoicurateError
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.rois import RoiSet
from roicurate.scale import set_diameter
from roicurate.sources import Source
from roicurate_plugins.suite2p.files import (BACKUP, ISCELL, diameter_setting, expand_units, is_plane,
                                             is_suite2p_dir, load_iscell, load_ops, load_stat, load_traces,
                                             natural_key, roi_pixels, stat_features, summary_images)
from roicurate_plugins.suite2p.state import read_recorded, red_labels
from roicurate_plugins.suite2p.write import (check_types_writable, check_writable, rebuild_all_combined,
                                             revert_path, write_plane, write_types)

__all__ = ["Suite2pSource", "natural_key"]


class Suite2pSource(Source):
    name = "suite2p"
    description = "a Suite2p plane folder (stat.npy + iscell.npy), a suite2p/ folder or the folder holding it"
    crop = CropSpec(size=64, channels=("mask",), binarize=0.0)
    display_name, default_model, default_arch = "Suite2p", "suite2p-resnet50", "resnet50"
    unit_noun = "plane"

    def detect(self, path):
        path = Path(path)
        return path.is_dir() and (is_plane(path) or is_suite2p_dir(path) or is_suite2p_dir(path / "suite2p"))

    def expand(self, path):
        return expand_units(path)

    # ---- reading -------------------------------------------------------------------------------------
    def read(self, path):
        plane = Path(path)
        stat_path = plane / "stat.npy"
        stat = load_stat(stat_path)
        n = len(stat)
        iscell = load_iscell(plane / ISCELL, n)
        ops, shape = load_ops(plane)
        ys, xs, ws = roi_pixels(stat, stat_path, shape)
        features = stat_features(stat)
        features["suite2p_prob"] = iscell[:, 1].copy()
        red, red_problem = red_labels(plane, n)
        features.update(red)
        roiset = RoiSet.from_pixels(
            shape, ys, xs, ws, images=summary_images(ops, shape), traces=load_traces(plane, n),
            pipeline_accepted=iscell[:, 0] > 0.5, features=features,
            source="suite2p", pipeline="suite2p", path=str(plane),
            origin={"roi_file": str(stat_path), "n": n,
                    **({"redcell_problem": red_problem} if red_problem else {})})
        roiset.validate(stat_path)
        d = diameter_setting(ops)
        if d:
            set_diameter(roiset, d, "Suite2p diameter setting")
        return roiset

    def recording(self, path):
        """The planes of one suite2p/ folder are one recording, named by the folder that holds suite2p/."""
        p = Path(path)
        return str(p.parent.parent) if p.name.startswith("plane") and p.parent.name == "suite2p" else str(p)

    def recorded(self, path):
        return read_recorded(path)

    def original_verdict(self, path, roiset):
        backup = Path(path) / BACKUP
        if backup.exists():
            iscell = load_iscell(backup, len(roiset))
            return iscell[:, 0] > 0.5, iscell[:, 1]
        return roiset.pipeline_accepted, roiset.features.get("suite2p_prob")

    # ---- writing (suite2p.write) ---------------------------------------------------------------------
    def backup_path(self, path):
        """Where ``write`` keeps the plane's original iscell.npy (what ``apply`` tells the user)."""
        return Path(path) / BACKUP

    def check_writable(self, path, force=False):
        """Everything ``write`` needs, checked before anything is written (and again under the lock): iscell.npy,
        the backup (loads, ROI count of stat.npy, recorded sha256), hand edits, replaceable files, combined/."""
        return check_writable(path, force)

    def write(self, path, roiset, curation, force=False, **options):
        """Under the plane's lock: verify (or make) the backup, keep hand edits beside iscell.npy, write the
        record first (it names the backup's sha256 and every state this write passes through), then the backup,
        then iscell.npy. A failure at any step undoes the earlier ones. Returns a note when edits were kept."""
        return write_plane(path, roiset, curation, force)

    def check_types_writable(self, path, force=False, redcell=False):
        check_types_writable(path, force, redcell)

    def write_types(self, path, roiset, curation, force=False, redcell=False):
        """roicurate_types.npy (float64 (N, K), class names in roicurate.json) and, for a two-class model with
        ``redcell``, redcell.npy ``[P(positive) >= threshold, P(positive)]`` in the original's dtype (Suite2p
        1.1.0 writes float32); the original redcell.npy is kept once as redcell_suite2p.npy (or, where there was
        none, revert removes ours)."""
        write_types(path, roiset, curation, force, redcell)

    def space_needed(self, path):
        """iscell.npy's temp copy and, where there is none yet, its backup, plus the record (combined/'s are as
        small: the margin covers them)."""
        plane = Path(path)
        size = (plane / ISCELL).stat().st_size
        return (0 if (plane / BACKUP).exists() else size) + (64 << 10), size + (1 << 20)

    def finish_batch(self, units):
        """Rebuild combined/ of every suite2p/ folder written to (and of one a killed run left out of step)."""
        return rebuild_all_combined(units)

    def revert(self, path, force=False):
        return revert_path(path, force)


@hookimpl
def register_sources(register):
    register(Suite2pSource())
