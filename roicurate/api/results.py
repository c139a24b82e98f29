"""What the Python API returns (small frozen records, one per plane / file) and what it tells a caller as it goes
(``Events``: the command line subclasses it to print; a library call hears nothing and prints nothing)."""
from dataclasses import dataclass, field

from roicurate.common import RoicurateError


class RoicurateWarning(UserWarning):
    """A note a library caller must see (e.g. where hand edits were kept before roicurate replaced them)."""


@dataclass(frozen=True, repr=False)
class UnitResult:
    """The verdict on one unit (a Suite2p plane folder, a CaImAn file, an NWB ROI table), as ``apply`` wrote it
    (or, with ``dry_run``, would have written it).

    Attributes:
        path: the unit (plane folder, file, or ``FILE::table`` of an NWB file with several ROI tables).
        source: the registered source that read it (``suite2p``, ``caiman``, ``nwb`` ...).
        pipeline: the pipeline that found the ROIs (``suite2p``, ``caiman``; ``""`` unknown).
        probabilities: (N,) float64, the model's probability of the positive class (``cell``) per ROI.
        accepted: (N,) bool, the verdict (probability, plus any ``also_accept`` classes, >= ``threshold``).
        threshold: the threshold used (None for a unit with no ROIs).
        model: the model's name (None for a unit with no ROIs); ``model_sha256`` the sha256 of its weights.
        inputs: the crop channels the model was given (``("mask",)``, ``("mask", "mean")`` ...).
        reference_diameter: the cell diameter (px) crops were scaled by; None for native-pixel models.
        diameter_source: where that diameter came from (the pipeline's setting, ``--diameter``, the ROIs).
        written: the files this call created or replaced (empty for a dry run).
        backup: where the pipeline's original verdict is kept (None when there is none, e.g. a dry run on a
            never-curated unit).
        dry_run: True when nothing was written.
        line: the summary line the command line prints for this unit.
        notes: must-see notes (hand edits kept beside the file, a stale backup set aside).
        warnings: warnings about the verdict (e.g. a cell diameter outside the model's training range).
        curation: the full ``roicurate.curation.Curation`` (all class probabilities), None without ROIs.
        operating_point: the model card's operating point ``threshold`` is (``recall``, ``balanced`` ...); None for
            a custom ``threshold``, a card without points, or a unit with no ROIs.
        tta: True when the probabilities are averaged over the eight rotations/flips of each crop (``tta``).
    """
    path: str
    source: str
    pipeline: str
    probabilities: object
    accepted: object
    threshold: float | None
    model: str | None
    model_sha256: str | None
    inputs: tuple
    reference_diameter: float | None
    diameter_source: str | None
    written: tuple
    backup: str | None
    dry_run: bool
    line: str
    notes: tuple = ()
    warnings: tuple = ()
    curation: object = field(default=None, repr=False, compare=False)
    operating_point: str | None = None
    tta: bool = False

    @property
    def rois(self):
        """The number of ROIs."""
        return len(self.accepted)

    def __repr__(self):
        return (f"UnitResult(path={self.path!r}, rois={self.rois}, accepted={int(self.accepted.sum())}, "
                f"model={self.model!r}, threshold={self.threshold!r}, dry_run={self.dry_run}, "
                f"written={len(self.written)} files)")

    def record(self):
        """The JSON object ``roicurate apply --json`` prints for this unit."""
        if self.model is None:
            return {"type": "unit", "path": self.path, "source": self.source, "pipeline": self.pipeline, "rois": 0,
                    "written": [], "dry_run": self.dry_run}
        n_accepted = int(self.accepted.sum())
        return {"type": "unit", "path": self.path, "source": self.source, "pipeline": self.pipeline,
                "model": self.model, "sha256": self.model_sha256, "threshold": self.threshold,
                "operating_point": self.operating_point, "tta": self.tta, "rois": self.rois,
                "accepted": n_accepted, "rejected": self.rois - n_accepted, "inputs": list(self.inputs),
                "reference_diameter": self.reference_diameter, "diameter_source": self.diameter_source,
                "written": list(self.written), "backup": self.backup, "dry_run": self.dry_run}


class BatchStopped(RoicurateError):
    """``apply`` could not write one unit of a batch (a full disk at write time ...) after writing others: that
    unit was undone, the units written before it stay written and were finished (Suite2p's combined/ rebuilt to
    match them), and nothing after it was written. ``written``: those units; ``undo``: the ``roicurate revert``
    command that reverts exactly them (also in the message, which is one line)."""

    def __init__(self, message, written, undo):
        super().__init__(message)
        self.written, self.undo = tuple(map(str, written)), undo


@dataclass(frozen=True)
class ApplyTotals:
    """What a whole ``apply`` run did (the command line's closing lines and its ``--json`` totals object)."""
    units: int
    rois: int
    accepted: int
    written_units: int
    seconds: float
    dry_run: bool
    lines: tuple          # after the units: combined/ rebuilt, where the original verdict is kept and how to undo
    done_line: str        # "done: 2 planes, 120 ROIs, 80 accepted, 3.1 s"

    def record(self):
        return {"type": "totals", "units": self.units, "rois": self.rois, "accepted": self.accepted,
                "rejected": self.rois - self.accepted, "written_units": self.written_units,
                "seconds": round(self.seconds, 3), "dry_run": self.dry_run}


@dataclass(frozen=True)
class RevertResult:
    """What ``revert`` did to one path.

    Attributes:
        path: the path as given (or as found with ``recursive``).
        reverted: True when roicurate's verdict was taken out; False when there was nothing to revert.
        message: what was restored (``restored from iscell_suite2p.npy`` ...) or why nothing was.
        line: the line the command line prints.
    """
    path: str
    reverted: bool
    message: str
    line: str


@dataclass(frozen=True)
class StatusResult:
    """What roicurate did to one unit (``status``), read from its record only.

    Attributes:
        path, source: the unit and the source that claims it.
        state: ``not curated``, ``curated``, ``edited since`` (the verdict was changed after roicurate wrote it),
            ``re-run`` (the pipeline re-ran since: other ROIs, its own new verdict), ``backup missing``, ``backup
            damaged`` (it cannot give the original back), ``record missing`` (a backup whose record is gone) or
            ``unreadable`` (the unit's files cannot be read).
        model, sha256, threshold, date: the model (name or card path), its weights' sha256, the threshold and the
            time of roicurate's write (None when not curated).
        operating_point: the model card's operating point that threshold is (None: a custom threshold, a card
            without points, or a record written before roicurate recorded points).
        tta: the verdict's probabilities were averaged over the eight rotations/flips (``apply --tta``).
        backup: where the pipeline's original verdict is kept (None when not curated).
        detail: why the unit is unreadable, its backup damaged or its record missing, and notes (hand edits in
            Suite2p's combined/); None when there is nothing to add.
        review: ``reviewed N of M`` where ``roicurate review`` answers exist for the unit, else None.
        line: the line the command line prints.
    """
    path: str
    source: str
    state: str
    model: str | None
    sha256: str | None
    threshold: float | None
    date: str | None
    backup: str | None
    detail: str | None
    review: str | None
    line: str
    operating_point: str | None = None
    tta: bool = False

    def record(self):
        """The JSON object ``roicurate status --json`` prints."""
        return {"path": self.path, "source": self.source, "state": self.state, "model": self.model,
                "sha256": self.sha256, "threshold": self.threshold, "operating_point": self.operating_point,
                "tta": self.tta,
                "date": self.date, "backup": self.backup,
                "detail": self.detail, "review": self.review, "type": "unit"}


class Events:
    """What ``apply``, ``revert`` and ``status`` tell their caller while they run. This default hears nothing (a
    library call prints nothing: its results carry every line); the command line subclasses it to print."""

    show_progress = False      # progress bars / lines on stderr (apply's classifying and report steps)

    def found(self, roots, listing):
        """``recursive``: every pipeline output found under ``roots``, before anything is read. ``listing``:
        [(path, source, units)]."""

    def detail(self, message):
        """A line about what was read and used (the command line prints it with ``--verbose``)."""

    def progress(self, total, desc):
        """A progress reporter for ``total`` ROIs (``update(k)``, ``clear()``, ``close()``): a bar or periodic
        lines on stderr with ``show_progress``, else silent."""
        from roicurate.progress import progress
        return progress(total, desc, enabled=self.show_progress)

    def line(self, text):
        """A closing line of ``apply``, as it is made: combined/ rebuilt, where the original verdict is kept and how
        to undo, where the report is."""

    def finished(self, totals):
        """``apply`` is done: ``totals`` is an ``ApplyTotals`` (closing lines and counts)."""
