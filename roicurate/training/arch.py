"""The network ``roicurate train`` fits: which architecture, crop and classes, and how a fresh module starts
(new weights, a model to fine-tune as it is, or the weights that fit from a model of another architecture)."""
from dataclasses import dataclass, replace

from roicurate.common import RoicurateError
from roicurate.training.fit import freeze_below


@dataclass
class Architecture:
    """What the run trains: ``spec`` (ModelSpec), ``crop``, ``build_kwargs``, the classes and the positive one,
    and where the weights start (``init``, ``transfer``: copy the weights that fit into another architecture)."""
    spec: object
    crop: object
    build_kwargs: dict
    init: object = None
    transfer: bool = False
    freeze_until: str | None = None
    seed: int = 0
    init_state: dict | None = None

    @property
    def task(self):
        return getattr(self.spec, "task", "curate")

    @property
    def classes(self):
        return list(self.spec.classes)

    @property
    def multi(self):
        """A K-class model (K > 2): class-index labels, K-class calibration."""
        return len(self.classes) > 2

    @property
    def pos(self):
        return self.classes.index(self.spec.positive_class or self.classes[-1])

    def new_module(self):
        """(module, frozen parameter names): a fresh network, seeded, started from ``init`` where it applies."""
        import torch
        torch.manual_seed(self.seed)
        m = self.spec.build(**self.build_kwargs)
        reshaped = set()
        if self.transfer:
            reshaped = transfer_weights(m, self.init_state, new_output=list(self.init.classes) != self.classes)
        elif self.init is not None:
            m.load_state_dict(self.init_state)
        frozen = freeze_below(m, self.freeze_until) if self.freeze_until else []
        mods = list(m.named_modules())
        for (a, _), (b, bn) in zip(mods, mods[1:]):   # the batch norm right after a reshaped convolution
            if isinstance(bn, torch.nn.BatchNorm2d) and f"{a}.weight" in reshaped:
                reshaped |= {f"{b}.weight", f"{b}.bias"}
        for name, p in m.named_parameters():       # nothing of theirs to keep: they train
            if name in reshaped:
                p.requires_grad_(True)
        return m, [n for n in frozen if n not in reshaped]


def same_network(init, arch_name):
    """Whether a run continues ``init``'s own network (``arch_name`` is its architecture): it keeps ``init``'s spec,
    crop and build options, where another architecture only gets the weights that fit."""
    return init is not None and arch_name == init.spec.name


def resolve_architecture(arch_spec, crop, sets, options, keep):
    """The Architecture of a run with options ``options`` (TrainOptions) on labelled ``sets``; one-line errors for
    combinations that cannot work. ``keep``: --epochs 0 (``options.init``'s weights as they are)."""
    init, task = options.init, getattr(arch_spec, "task", "curate")
    # fine-tuning a model as it is, or ``transfer``: the weights that fit a network of another architecture, input
    # channels or classes (a cell-type network started from the bundled cell / not-cell one)
    transfer = init is not None and (not same_network(init, arch_spec.name) or task == "types")
    if keep and transfer:
        raise RoicurateError("--epochs 0 keeps --init as it is; another architecture, input or classes needs training")
    init_state = None if init is None else {k: v.detach().cpu().clone() for k, v in init.module.state_dict().items()}
    if transfer and tuple(crop.channels[:len(init.crop.channels)]) != tuple(init.crop.channels):
        raise RoicurateError(f"--init {init.name}: its input channels ({', '.join(init.crop.channels)}) must come "
                             f"first in the new network's ({', '.join(crop.channels)})")
    if init is not None and not transfer:
        arch_spec, crop = init.spec, init.crop
        build_kwargs = dict(init.card.get("build_kwargs", {}))
    else:
        inherited = {} if init is None else {k: v for k, v in init.card.get("build_kwargs", {}).items()
                                             if k not in ("in_channels", "n_out")}   # e.g. the width, so weights fit
        build_kwargs = {**inherited, **(options.build_kwargs or {})}
        build_kwargs.setdefault("in_channels", len(crop.channels))
    if task == "types":
        found = {tuple(rs.origin.get("label_classes") or ()) for rs in sets}
        if len(found) != 1 or len(next(iter(found))) < 2:
            raise RoicurateError(f"a cell-type model trains on cell-type labels of one set of two or more classes "
                                 f"(--types); found {', '.join('/'.join(f) or 'none' for f in found)}")
        arch_spec = replace(arch_spec, classes=next(iter(found)), positive_class=None)
        build_kwargs.setdefault("n_out", 1 if len(arch_spec.classes) == 2 else len(arch_spec.classes))
    arch = Architecture(arch_spec, crop, build_kwargs, init, transfer, options.freeze_until, options.seed, init_state)
    if options.operating_point == "out-of-lab" and arch.multi:
        raise RoicurateError("--operating-point out-of-lab is for cell / not-cell models")
    if arch.multi and options.shape_prior:
        raise RoicurateError("--shape-prior adds to a one-output network's logit; this model has "
                             f"{len(arch.classes)} classes")
    if arch.multi and options.class_rule is not None and options.class_rule["positive"] != arch.classes[arch.pos]:
        raise RoicurateError(f"the class rule's positive class is '{options.class_rule['positive']}', the model's "
                             f"'{arch.classes[arch.pos]}'")
    return arch


def transfer_weights(module, state, new_output=False):
    """Load into ``module`` what fits of another network's ``state``: tensors of the same name and shape are
    copied; a convolution with more input channels (the trained network's channels first, e.g. mask -> mask +
    images) gets the trained filters on those and zeros on the new ones, so that it starts out computing exactly
    what the trained network did and learns what the new channels add; the rest keep their fresh initialisation,
    and so does the output layer (the last module with parameters) when ``new_output`` (other classes). Returns
    the names of the parameters not copied as they were."""
    import torch
    own = module.state_dict()
    last = [name for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))][-1]
    new = {}
    for k, v in own.items():
        w = state.get(k)
        if w is None or not w.is_floating_point() or (new_output and k.rsplit(".", 1)[0] == last):
            continue
        if w.shape == v.shape:
            new[k] = w
        elif w.ndim == v.ndim == 4 and w.shape[0] == v.shape[0] and w.shape[2:] == v.shape[2:] \
                and w.shape[1] < v.shape[1]:
            new[k] = torch.zeros_like(v)
            new[k][:, :w.shape[1]] = w
    module.load_state_dict({**own, **new})
    return {n for n, _ in module.named_parameters() if n not in new or new[n].shape != state[n].shape}


def fp16_round(module):
    """Score with the fp16 weights that will ship, so that the card describes the saved model."""
    module.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in module.state_dict().items()})
