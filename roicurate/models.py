"""Model specs, model cards and the Classifier; the one place that resolves torch devices (``torch_device``: the
Classifier and the training loop place networks through it) and sets inference threads, and the one step from
logits to probabilities (``logits_to_probabilities``).

A trained model on disk is two files, ``NAME.safetensors`` (weights) and ``NAME.json`` (the card). Loading
reads tensors with safetensors and JSON with json: nothing is ever unpickled.
"""
import copy
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError, __version__
from roicurate.crops import CropSpec, make_crops
from roicurate.safeio import atomic_write_bytes, sha256_file

BINARY_CLASSES = ("not_cell", "cell")


@dataclass
class ModelSpec:
    """What a plugin registers: an architecture with its crop and classes, and (optionally) bundled weights.

    ``build(**build_kwargs)`` returns a ``torch.nn.Module`` mapping (N, C, S, S) crops to logits (N, n_out);
    ``n_out == 1`` is one sigmoid output for the last class. ``crop`` None means "the pipeline's default crop".
    ``inference(module)``, if given, returns a module computing the same logits faster (evaluation only), which
    ``Classifier.predict_proba`` runs; gradients, training and explanations use the plain module.
    """

    name: str
    pipeline: str                      # "suite2p", "caiman" or "any"
    build: object
    crop: CropSpec | None = None
    classes: tuple = BINARY_CLASSES
    threshold: float = 0.5
    weights: str | None = None         # path of bundled NAME.safetensors (its card is NAME.json beside it)
    build_kwargs: dict = field(default_factory=dict)
    description: str = ""
    positive_class: str | None = None  # the class that counts as accepted (default: the last of ``classes``)
    class_rule: dict | None = None     # how `train` derives these classes from matched ground truth (labels.py)
    inference: object = None           # module -> equivalent faster module for predict_proba (see above)
    task: str = "curate"               # "curate": cell / not cell, written as the pipeline's verdict; "types": cell
                                       # types (classes named by the training labels), written beside it

    @property
    def card_path(self):
        return None if self.weights is None else str(Path(self.weights).with_suffix(".json"))


def read_card(path):
    """The card at ``path`` as a dict, after :func:`validate_card`: a bad card is a one-line error, never a traceback
    or a network of absurd size."""
    try:
        with open(path) as f:
            card = json.load(f)
    except (OSError, ValueError) as e:
        raise RoicurateError(f"{path}: cannot read model card ({e.__class__.__name__}: {e})") from None
    validate_card(card, path)
    return card


# bounds of the architecture options a card may ask for (anything else must be a plain scalar or a short int list)
BUILD_BOUNDS = {"width": (0, 256), "in_channels": (1, 64), "n_out": (1, 1000), "size": (8, 256), "first_stride": (1, 8),
                "fc": (1, 8192), "hidden": (1, 8192), "dropout": (0, 1), "depth": (1, 200)}
TASKS = ("curate", "types", "segmentation")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v, n=None):
    return isinstance(v, list) and (n is None or len(v) == n) and all(_number(x) for x in v)


def validate_card(card, where="model card"):
    """Raise a one-line RoicurateError naming ``where`` and the field unless ``card`` is a well-formed model card:
    the types and bounds of everything used to build the network, crop the ROIs and turn logits into a verdict.
    Checked before anything is built (a width of 1e5 would ask for tens of GB). Fields this function does not
    know in ``crop`` are left to ``CropSpec.from_dict``."""
    def bad(field, why):
        raise RoicurateError(f"{where}: model card field '{field}' {why}")

    if not isinstance(card, dict):
        raise RoicurateError(f"{where}: a model card is a JSON object, not {type(card).__name__}")
    for key in ("name", "arch", "crop", "classes", "threshold"):
        if key not in card:
            raise RoicurateError(f"{where}: model card has no '{key}'")
    for key in ("name", "arch"):
        if not isinstance(card[key], str) or not card[key]:
            bad(key, "must be a non-empty string")
    task = card.get("task", "curate")
    if task not in TASKS:
        bad("task", f"is {task!r}; known: {', '.join(TASKS)}")
    kw = card.get("build_kwargs", {})
    if not isinstance(kw, dict):
        bad("build_kwargs", f"must be an object of architecture options, not {type(kw).__name__}")
    for k, v in kw.items():
        field = f"build_kwargs.{k}"
        if isinstance(v, list):
            if len(v) > 16 or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4096 for x in v):
                bad(field, "must be a scalar (or a short list of integers 1..4096)")
        elif not (v is None or isinstance(v, (str, bool)) or _number(v)):
            bad(field, f"must be a scalar, not {type(v).__name__}")
        if k in BUILD_BOUNDS and v is not None:
            lo, hi = BUILD_BOUNDS[k]
            if not _number(v) or not lo <= v <= hi or (k != "width" and k != "dropout" and v != int(v)) \
                    or (k == "width" and v <= 0):
                bad(field, f"is {v!r}; expected a number in {'(' if k == 'width' else '['}{lo}, {hi}]")
    crop = card["crop"]
    if crop is None and task != "segmentation":
        bad("crop", "is missing (null); a classifier needs its crop")
    if crop is not None:
        if not isinstance(crop, dict):
            bad("crop", f"must be an object, not {type(crop).__name__}")
        size = crop.get("size", 64)
        if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 256:
            bad("crop.size", f"is {size!r}; expected an integer from 8 to 256")
        ch = crop.get("channels", ["mask"])
        if not isinstance(ch, list) or not ch or not all(isinstance(c, str) and c for c in ch) or len(ch) > 64:
            bad("crop.channels", f"is {ch!r}; expected a non-empty list of image names")
        b = crop.get("binarize")
        if b is not None and (not _number(b) or not 0 <= b <= 1):
            bad("crop.binarize", f"is {b!r}; expected null or a number from 0 to 1")
        if "in_channels" in kw and kw["in_channels"] != len(ch):
            bad("build_kwargs.in_channels", f"is {kw['in_channels']} but the crop has {len(ch)} channels")
    classes = card["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes) \
            or len(set(classes)) != len(classes):
        bad("classes", f"is {classes!r}; expected a non-empty list of distinct class names")
    thr = card["threshold"]
    if not _number(thr) or not 0 <= thr <= 1:
        bad("threshold", f"is {thr!r}; expected a number from 0 to 1")
    pos = card.get("positive_class")
    if pos is not None and pos not in classes:
        bad("positive_class", f"{pos!r} is not one of the classes ({', '.join(classes)})")
    _validate_calibration(card.get("calibration"), bad)
    _validate_prior(card.get("shape_prior"), bad)
    _validate_head(card, bad)
    _validate_points(card.get("operating_points"), thr, bad)
    digest = card.get("sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        bad("sha256", "must be 64 lowercase hex digits (or null)")
    return card


def _validate_calibration(c, bad):
    if c is None:
        return
    if not isinstance(c, dict) or c.get("method") not in ("platt", "temperature", "isotonic", "none"):
        bad("calibration", "must be null or an object whose method is platt, temperature, isotonic or none")
    for k in ("a", "b", "temperature", "prior_weight"):
        if k in c and not _number(c[k]):
            bad(f"calibration.{k}", f"is {c[k]!r}; expected a finite number")
    if c.get("method") == "temperature" and "temperature" in c and c["temperature"] <= 0:
        bad("calibration.temperature", "must be > 0")
    if c.get("method") == "platt" and not c.get("folded") and not all(k in c for k in ("a", "b")):
        bad("calibration", "platt needs 'a' and 'b'")
    if "bias" in c and not _numbers(c["bias"]):
        bad("calibration.bias", "must be a list of finite numbers")
    if c.get("method") == "isotonic" and not c.get("folded"):
        x, y = c.get("x"), c.get("y")
        if not (_numbers(x) and _numbers(y) and len(x) == len(y) and len(x) >= 1 and np.all(np.diff(x) >= 0)):
            bad("calibration", "isotonic needs lists x (non-decreasing) and y of equal length")


def _validate_prior(p, bad):
    if p is None:
        return
    if not isinstance(p, dict):
        bad("shape_prior", "must be null or an object")
    from roicurate.shape import FEATURES
    n = len(FEATURES)
    for k in ("mean", "scale", "coef"):
        if not _numbers(p.get(k), n) or n == 0:
            bad(f"shape_prior.{k}", "must be a list of finite numbers, one per feature")
    if not all(s > 0 for s in p["scale"]):
        bad("shape_prior.scale", "must be positive")
    if not _number(p.get("intercept")):
        bad("shape_prior.intercept", "must be a finite number")
    if not _number(p.get("binarize")) or not 0 <= p["binarize"] <= 1:
        bad("shape_prior.binarize", "must be a number from 0 to 1")
    if "features" in p and (not isinstance(p["features"], list) or len(p["features"]) != n):
        bad("shape_prior.features", f"must name the {n} shape features")


def _validate_head(card, bad):
    from roicurate import head
    h = card.get("head")
    head.validate(h, bad)
    if h is None:
        return
    if card.get("shape_prior") is not None:
        bad("head", "a card has a head or a shape_prior, not both (the head holds the shape features)")
    if len(card["classes"]) != 2:
        bad("head", f"is for cell / not-cell models; this one has {len(card['classes'])} classes")
    c = card.get("calibration") or {}
    if c.get("method", "none") != "none" and not c.get("folded"):
        bad("head", "needs the network's calibration folded into its weights (or none): the head follows it")


POINT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _validate_points(points, threshold, bad):
    """``operating_points``: {name: {"threshold": 0..1, "rule": text, ...}}; the card's own ``threshold`` is one of
    them (the default, ``apply`` without ``--operating-point``)."""
    if points is None:
        return
    if not isinstance(points, dict) or not points or len(points) > 16:
        bad("operating_points", "must be null or an object of up to 16 named points")
    for name, point in points.items():
        if not POINT_NAME.fullmatch(name):
            bad("operating_points", f"has a point named {name!r}; names are lowercase letters, digits, - and _")
        if not isinstance(point, dict) or not _number(point.get("threshold")) or not 0 <= point["threshold"] <= 1:
            bad(f"operating_points.{name}.threshold", "must be a number from 0 to 1")
        if not isinstance(point.get("rule"), str) or not point["rule"]:
            bad(f"operating_points.{name}.rule", "must say how the threshold was chosen")
    if default_point(points, threshold) is None:
        bad("operating_points", f"none of them is the card's threshold {threshold}")


def default_point(points, threshold):
    """The name of the operating point at the card's own ``threshold`` (None if there is none)."""
    return next((n for n, p in (points or {}).items() if abs(p["threshold"] - threshold) < 1e-12), None)


def resolve_model_files(name_or_path, specs):
    """(weights path, card path) for a registered model name, a card/weights path or a folder with one model."""
    if name_or_path in specs:
        spec = specs[name_or_path]
        if spec.weights is None:
            raise RoicurateError(f"model '{name_or_path}' is an architecture without trained weights; "
                                 f"train one with: roicurate train ... --arch {name_or_path}")
        return spec.weights, spec.card_path
    p = Path(name_or_path)
    if p.is_dir():
        cards = sorted(p.glob("*.json"))
        cards = [c for c in cards if c.with_suffix(".safetensors").exists()]
        if len(cards) != 1:
            raise RoicurateError(f"{p}: expected one NAME.json + NAME.safetensors pair, found {len(cards)}")
        p = cards[0]
    if p.suffix in (".json", ".safetensors") and p.exists():
        return str(p.with_suffix(".safetensors")), str(p.with_suffix(".json"))
    known = ", ".join(usable_classifiers(specs)) or "none"
    raise RoicurateError(f"unknown model '{name_or_path}' (not a registered name — known: {known} — nor a model file or folder)")


def usable_classifiers(specs):
    """Names of the registered models ``apply`` can run: trained, and classifiers (not segmentation models)."""
    return [n for n, s in specs.items() if s.weights and s.task != "segmentation"]


def crop_from_card(card, where="model card"):
    """The card's CropSpec; a field CropSpec does not know (or cannot take) is a one-line error."""
    try:
        return CropSpec.from_dict(card["crop"])
    except (TypeError, ValueError) as e:
        raise RoicurateError(f"{where}: model card field 'crop' is not a crop this roicurate knows ({e})") from None


class Classifier:
    """A network with its card: ``predict_proba(roiset) -> (N, K)`` with batching, threads and device here, once."""

    def __init__(self, module, card, arch_spec, device="cpu", batch_size=64, threads=None, fast=True, tta=False):
        """``tta``: test-time augmentation, the network's logits averaged over the eight rotations/flips of each crop
        (eight times the network work; ``benchmarks/head.py`` measures what it gains, docs/speed.md what it
        costs). ``batch_size`` 64: on a 2-core CPU larger batches spilled the cache and ran 2-3x slower per ROI
        (``benchmarks/speed.py --batch N`` compares); channels-last memory layout was another 1.2-1.7x. ``fast``:
        run the architecture's ``inference`` form (same logits, less work); False runs the plain module."""
        import torch
        self.card = card
        self.spec = arch_spec
        self.crop = crop_from_card(card, card.get("name", "model card"))
        self.classes = tuple(card["classes"])
        self.threshold = float(card["threshold"])
        self.device = torch_device(device)
        self.batch_size = batch_size
        self.fast = fast
        self.tta = bool(tta)
        if threads:
            torch.set_num_threads(int(threads))
        self.module = module.to(self.device).eval().to(memory_format=torch.channels_last)

    @property
    def name(self):
        return self.card["name"]

    @property
    def task(self):
        return self.card.get("task", "curate")

    @property
    def operating_points(self):
        """{name: {"threshold", "rule", ...}} of the card (empty where it names none)."""
        return dict(self.card.get("operating_points") or {})

    @property
    def default_point(self):
        """The name of the operating point ``apply`` uses by default (the card's threshold), or None."""
        return default_point(self.operating_points, self.threshold)

    def threshold_at(self, point):
        """The threshold of the named operating point; a name the card lacks is a one-line error."""
        points = self.operating_points
        if point not in points:
            have = ", ".join(points) or "none (it has only its threshold; use --threshold)"
            raise RoicurateError(f"model '{self.name}' has no operating point '{point}' (its points: {have})")
        return float(points[point]["threshold"])

    @property
    def positive(self):
        """Index of the class that counts as 'accepted' (``cell`` / ``neuron``)."""
        return self.classes.index(self.card.get("positive_class", self.classes[-1]))

    def with_tta(self):
        """This classifier (the same network and card) with test-time augmentation on."""
        other = copy.copy(self)
        other.tta = True
        return other

    @classmethod
    def load(cls, name_or_path, specs=None, **kw):
        """The Classifier of a registered model name, a trained model's folder or its NAME.json (card validated,
        weights checked against it; nothing unpickled). ``specs``: {name: ModelSpec} (default: every registered
        one); ``kw``: ``device`` ("cpu", "cuda", "auto" ...), ``batch_size``, ``threads``, ``tta``.
        Raises RoicurateError."""
        if specs is None:
            from roicurate.plugins import model_specs
            specs = model_specs()
        spec = specs.get(str(name_or_path))
        if spec is not None and spec.task == "segmentation":
            raise RoicurateError(f"model '{name_or_path}' is a segmentation model (roicurate segment), not an ROI "
                                 f"classifier; usable here: {', '.join(usable_classifiers(specs)) or 'none'}")
        weights, card_path = resolve_model_files(str(name_or_path), specs)
        card = read_card(card_path)
        if card.get("task") == "segmentation":
            raise RoicurateError(f"{card_path}: model '{card['name']}' is a segmentation model (roicurate segment), "
                                 f"not an ROI classifier")
        arch = specs.get(card["arch"])
        if arch is None:
            raise RoicurateError(f"{card_path}: architecture '{card['arch']}' is not registered (missing plugin?)")
        module, digest = load_weights(weights, card, arch.build)
        card["sha256"] = digest
        # how to find this model again (roicurate report, a later apply): its registered name, else its card's path
        bundled = specs.get(card["name"])
        card["source"] = card["name"] if bundled is not None and bundled.weights else str(Path(card_path).resolve())
        return cls(module, card, arch, **kw)

    def prior_logits(self, roiset):
        """(N,) what the card adds to each ROI's network logit: the shape part of its ``head``
        (roicurate/head.py) or its ``shape_prior``'s logit; None for a model with neither."""
        if self.card.get("head") is not None:
            from roicurate.head import offsets
            return offsets(self.card["head"], roiset)
        from roicurate.shape import prior_logit
        prior = self.card.get("shape_prior")
        return None if prior is None else prior_logit(prior, roiset)

    def logits_to_proba(self, logits, prior=None):
        """(N, K) float64 probabilities of a batch of network outputs, calibrated as the card says (isotonic maps
        are applied here; affine calibrations are already folded into the weights), with the card's head or shape
        prior: the network logit times the head's network weight, plus the ROIs' ``prior`` (from
        :meth:`prior_logits`). The one place that turns logits into what thresholds, reports and explanations
        compare."""
        from roicurate.calibrate import apply as calibrate
        head = self.card.get("head")
        if (prior is not None) != (head is not None or self.card.get("shape_prior") is not None):
            raise RoicurateError("a model with a head or a shape prior needs the ROIs' prior logits (and one "
                                 "without, none)")
        if head is not None:
            from roicurate.head import network_weight
            if logits.shape[1] != 1:
                raise RoicurateError(f"model '{self.name}': a head needs a one-output network")
            logits = logits * network_weight(head)
        out = logits_to_probabilities(logits, prior).numpy()
        if len(self.classes) == 2 and self.card.get("calibration"):
            p = calibrate(self.card["calibration"], out[:, self.positive])
            out[:, self.positive], out[:, 1 - self.positive] = p, 1 - p
        return out

    def predict_proba(self, roiset, progress=None):
        """(N, K) probabilities. Crops are built batch by batch (memory does not grow with N), and a batch holds
        ROIs of similar pixel counts: an ``inference`` network that skips the empty part of the crops (cnn2's)
        then has little left to compute on a batch of small ROIs. Returns float64 (N, K), columns in the order of
        ``classes`` (column ``positive`` is P(cell)); ``progress(k)`` is called as batches are done."""
        import torch
        n = len(roiset)
        out = np.zeros((n, len(self.classes)), np.float64)
        buf = None
        prior = self.prior_logits(roiset)
        order = np.argsort(roiset.npix, kind="stable")
        with torch.inference_mode():
            inference = getattr(self.spec, "inference", None) if self.fast else None
            net = inference(self.module) if inference else self.module
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                buf = make_crops(roiset, self.crop, idx, out=None if buf is None or len(buf) != len(idx) else buf)
                x = torch.from_numpy(buf).to(self.device).contiguous(memory_format=torch.channels_last)
                out[idx] = self.logits_to_proba(self.network_logits(net, x), None if prior is None else prior[idx])
                if progress:
                    progress(len(idx))
        return out


    def network_logits(self, net, x):
        """The network's logits of a batch of crops ``x``; with ``tta`` their mean over the eight rotations/flips."""
        if not self.tta:
            return net(x)
        import torch
        from roicurate.crops import dihedral
        return sum(net(dihedral(x, k).contiguous(memory_format=torch.channels_last)) for k in range(8)) / 8


def load_weights(weights, card, build):
    """(module, sha256): ``build(**card["build_kwargs"])`` holding the weights of ``weights`` (safetensors, floats
    as fp32), after checking the file's sha256 against the card; every failure is a one-line error."""
    from safetensors.torch import load_file
    if not os.path.exists(weights):
        raise RoicurateError(f"{weights}: model weights are missing")
    digest = sha256_file(weights)
    if card.get("sha256") and card["sha256"] != digest:
        raise RoicurateError(f"{weights}: sha256 does not match its card (file changed or corrupt)")
    try:
        module = build(**card.get("build_kwargs", {}))
    except (TypeError, ValueError, RuntimeError, KeyError) as e:   # options the architecture cannot take
        raise RoicurateError(f"{weights}: its card's build_kwargs do not build architecture '{card['arch']}' "
                             f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    try:
        state = load_file(weights)
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise RoicurateError(f"{weights}: cannot read weights ({e})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise RoicurateError(f"{weights}: weights do not fit architecture '{card['arch']}' ({str(e).splitlines()[0]})") from None
    return module, digest


def torch_device(device):
    """The ``torch.device`` of ``--device`` (cpu, cuda, cuda:N; "auto" or None: cuda when present), or a one-line
    error when CUDA is asked for and absent. Classifier and the training loop both place networks through it."""
    import torch
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RoicurateError(f"--device {device}: no CUDA device is available here")
    return torch.device(device)


def logits_to_probabilities(logits, prior=None, dtype=None):
    """(N, K) CPU tensor of a batch of network outputs: [1 - p, p] of a one-output (sigmoid) network, with the
    shape-prior logits ``prior`` added before the sigmoid, or the softmax of a K-output one; computed in ``dtype``
    (default float64; training's own epoch scores use the network's float32). No calibration: that is the card's
    (:meth:`Classifier.logits_to_proba`)."""
    import torch
    dtype = torch.float64 if dtype is None else dtype
    if logits.shape[1] == 1:
        z = logits[:, 0].to(dtype)
        p = torch.sigmoid(z if prior is None else z + torch.from_numpy(np.array(prior, np.float64)).to(z.device))
        return torch.stack([1 - p, p], 1).cpu()
    return torch.softmax(logits.to(dtype), 1).cpu()


def save_model(out_dir, name, module, card):
    """Write NAME.safetensors (fp16 floats) and NAME.json with its sha256, each through ``safeio.atomic_write``
    (temp file, fsync, rename); returns the card path."""
    from safetensors.torch import save
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in module.state_dict().items()}
    wpath = out / f"{name}.safetensors"
    atomic_write_bytes(wpath, save(state))       # a new file gets the umask's permissions: a lab shares its models
    card = dict(card, name=name, sha256=sha256_file(wpath), roicurate_version=__version__)
    cpath = out / f"{name}.json"
    atomic_write_bytes(cpath, (json.dumps(card, indent=1) + "\n").encode())
    return str(cpath)
