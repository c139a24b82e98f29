"""The training loop: 8 rotations/flips as augmentation, class balance by weighting the loss (no item is ever
copied), a one-cycle learning-rate schedule, early stopping on validation F1, a progress bar per epoch, and a
checkpoint after every epoch that ``resume`` continues exactly (same weights as an uninterrupted run). Also what
fine-tuning needs: freezing the layers below a named one.

A network with one output is trained with BCE (``pos_weight`` = negatives / positives) and stopped on the best
validation F1 of its score; one with K > 1 outputs is trained with cross-entropy on class indices, each class
weighted by the inverse of its training frequency, and stopped on the best validation macro-F1 (the mean F1 over
the classes present, predicting the most probable class)."""
import json
import sys
import time
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError
from roicurate.crops import dihedral
from roicurate.evaluate import best_f1_threshold, class_metrics, roc_auc
from roicurate.models import logits_to_probabilities, torch_device
from roicurate.safeio import atomic_write

DEFAULTS = {"epochs": 20, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "lr_decay": None, "patience": 6}


def unjittered(x):
    """The crops of ``x`` at the recording's own reference scale: variant 0 of scale-jittered (N, J, C, S, S)."""
    return x[:, 0] if x.ndim == 5 else x


def predict_outputs(module, x, device, batch=256):
    """(N, K) uncalibrated probabilities of the crops ``x`` (``models.logits_to_probabilities``, in float32 as the
    network computes them): what the epochs' validation scores and the out-of-fold scores are."""
    import torch
    module.eval()
    out = []
    x = unjittered(x)
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = module(torch.from_numpy(x[i:i + batch]).to(device))
            out.append(logits_to_probabilities(logits, dtype=torch.float32))
    return torch.cat(out).double().numpy() if out else np.zeros((0, 2))


def predict_scores(module, x, device, batch=256, positive=-1):
    """The probability of class ``positive`` (default: the last one) per crop."""
    return predict_outputs(module, x, device, batch)[:, positive]


def n_outputs(module, x, device):
    """How many logits the network gives per crop (one forward pass in eval mode: no state changes)."""
    import torch
    training = module.training
    module.eval()
    x = unjittered(x[:2])
    with torch.inference_mode():
        k = int(module(torch.from_numpy(x).to(device)).shape[1])
    module.train(training)
    return k


def freeze_below(module, layer):
    """Freeze every parameter that comes before ``layer`` (a name such as ``layer3`` or ``head.1``) in the
    network; ``layer`` and everything after it train. Returns the frozen parameter names."""
    names = [n for n, _ in module.named_parameters()]
    first = next((i for i, n in enumerate(names) if n == layer or n.startswith(layer + ".")), None)
    if first is None:
        tops = list(dict.fromkeys(n.split(".")[0] for n in names))
        raise RoicurateError(f"--freeze-until {layer}: the network has no such layer (layers: {', '.join(tops)})")
    for i, (_, p) in enumerate(module.named_parameters()):
        p.requires_grad_(i >= first)
    return names[:first]


def _freeze_bn_of_frozen(module):
    """Batch-norm layers whose parameters are frozen also keep their running statistics (fine-tuning)."""
    import torch
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def _epoch_metrics(y, s):
    if not len(y):
        return float("nan"), float("nan"), float("nan")
    thr, f1 = best_f1_threshold(y, s)
    return f1, thr, roc_auc(y, s)


def _class_epoch_metrics(y, proba, positive):
    """(macro-F1, accuracy, ROC AUC of class ``positive`` vs the rest) of K-class predictions."""
    if not len(y):
        return float("nan"), float("nan"), float("nan")
    m = class_metrics(y, proba.argmax(1), range(proba.shape[1]))
    return m["macro_f1"], m["accuracy"], roc_auc(y == (positive % proba.shape[1]), proba[:, positive])


def _loss(module, x_tr, y_tr, dev, draw=None):
    """(loss function, number of outputs): BCE with pos_weight for one output, class-weighted cross-entropy
    (weight = N / (classes present x class count), 0 for absent classes) for K outputs. ``draw``: the items'
    probabilities of being drawn (rehearsal); the class counts are then those expected in an epoch."""
    import torch
    k = n_outputs(module, x_tr, dev)
    w = np.ones(len(y_tr)) if draw is None else np.asarray(draw) * len(y_tr)
    if k == 1:
        npos = max(float((w * y_tr).sum()), 1.0)
        pos_weight = torch.tensor((w.sum() - npos) / npos, dtype=torch.float32, device=dev)
        return torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight), k
    y = np.asarray(y_tr, np.int64)
    if y.min() < 0 or y.max() >= k:
        raise RoicurateError(f"labels must be class indices 0..{k - 1} for a network with {k} outputs")
    count = np.bincount(y, w, minlength=k)
    weight = np.where(count > 0, w.sum() / (max((count > 0).sum(), 1) * np.maximum(count, 1e-6)), 0.0)
    return torch.nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32, device=dev)), k


def fit(module, x_tr, y_tr, x_va, y_va, hp, seed=0, device="cpu", log=print, checkpoint=None, resume=False,
        config=None, callback=None, positive=-1, draw=None, dropout_channels=(), dropout_p=0.5):
    """Train ``module`` in place and restore the epoch with the best validation F1 — macro-F1 for a K-output
    network, whose labels are class indices (the last epoch when there is no validation set). ``hp``: epochs, lr,
    weight_decay, batch_size, lr_decay (final / peak learning rate of the one-cycle schedule; None: PyTorch's
    default), patience. ``positive``: the class whose ROC AUC against the rest a K-output network's history
    reports. With ``checkpoint`` (a path) the state is saved after every epoch; ``resume`` continues from it
    (``config`` must match). ``draw``: each training item's probability of being drawn (rehearsal: an epoch is
    then len(y_tr) draws with replacement, instead of every item once). ``x_tr`` (N, J, C, S, S) holds J scale
    variants of every crop (scale jitter): each draw takes one at random. ``dropout_channels``: channel indices
    zeroed together in a random ``dropout_p`` of the drawn crops, so that the network also works on recordings
    without those images. Returns the history."""
    import torch
    from tqdm import tqdm
    hp = dict(DEFAULTS, **{k: v for k, v in hp.items() if v is not None})
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch_device(device)
    module.to(dev)
    loss_fn, n_out = _loss(module, x_tr, y_tr, dev, draw)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise RoicurateError("every parameter is frozen; name a lower layer with --freeze-until")
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    bs = int(hp["batch_size"])
    steps = hp["epochs"] * int(np.ceil(len(y_tr) / bs))
    sched_kw = {} if hp["lr_decay"] is None else {"final_div_factor": 1 / (25.0 * hp["lr_decay"])}
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=max(steps, 1), pct_start=0.15,
                                                **sched_kw)
    state = {"epoch": 0, "best": -1.0, "stale": 0, "history": [], "best_state": None}
    if resume:
        state = _load_checkpoint(checkpoint, config, module, opt, sched, rng)
        log(f"resumed from {checkpoint} after epoch {state['epoch']}")
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for epoch in range(state["epoch"], hp["epochs"]):
        if state["stale"] >= hp["patience"]:
            break
        t0 = time.time()
        module.train()
        _freeze_bn_of_frozen(module)
        order = rng.permutation(len(y_tr)) if draw is None else rng.choice(len(y_tr), len(y_tr), p=draw)
        bar = tqdm(total=int(np.ceil(len(order) / bs)), desc=f"epoch {epoch + 1}/{hp['epochs']}", unit="batch",
                   leave=False, disable=None, file=sys.stderr)
        step = (module, loss_fn, n_out, opt, sched, dev)
        total, seen = _train_epoch(step, xt, yt, order, bs, rng, dropout_channels, dropout_p, bar)
        bar.close()
        has_val = len(y_va) > 0
        row, f1, acc, auc = _epoch_row(module, n_out, (x_va, y_va) if has_val else (x_tr, y_tr), has_val, dev,
                                       positive)
        row.update(epoch=epoch + 1, loss=total / max(seen, 1), seconds=round(time.time() - t0, 2))
        state["history"].append(row)
        what = "val" if has_val else "train (no validation)"
        scores = f"F1 {f1:.3f}" if n_out == 1 else f"macro-F1 {f1:.3f}  accuracy {acc:.3f}"
        log(f"epoch {epoch + 1}/{hp['epochs']}  loss {row['loss']:.4f}  {what} {scores}  ROC AUC {auc:.3f}"
            f"  ({row['seconds']:.0f} s)")
        state["epoch"] = epoch + 1
        if not has_val or f1 > state["best"]:
            state["best"], state["stale"] = f1, 0
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        else:
            state["stale"] += 1
            if state["stale"] >= hp["patience"]:
                log(f"early stop: no better validation {'F1' if n_out == 1 else 'macro-F1'} for "
                    f"{hp['patience']} epochs")
        if checkpoint:
            _save_checkpoint(checkpoint, config, state, module, opt, sched, rng)
        if callback:
            callback(row)
    module.load_state_dict(state["best_state"])
    return state["history"]


def _train_epoch(step, xt, yt, order, bs, rng, dropout_channels, dropout_p, bar):
    """One pass over ``order`` (item indices) in batches of ``bs``: a random scale variant (5-D crops), the image
    channels dropped at random, one of the 8 rotations/flips per crop, a step. Returns (summed loss, items seen)."""
    import torch
    module, loss_fn, n_out, opt, sched, dev = step
    total, seen = 0.0, 0
    for i in range(0, len(order), bs):
        idx = torch.from_numpy(order[i:i + bs])
        bar.update(1)
        if len(idx) < 2:
            continue
        k = torch.from_numpy(rng.integers(0, 8, len(idx)))
        if xt.ndim == 5:
            xb = xt[idx, torch.from_numpy(rng.integers(0, xt.shape[1], len(idx)))]
        else:
            xb = xt[idx]
        if len(dropout_channels):
            xb = xb.clone()
            drop = torch.from_numpy(rng.random(len(idx)) < dropout_p)
            xb[drop.nonzero()[:, 0][:, None], torch.tensor(list(dropout_channels))[None, :]] = 0
        yb = yt[idx]
        xb = torch.cat([dihedral(xb[k == j], j) for j in range(8)])
        yb = torch.cat([yb[k == j] for j in range(8)])
        out = module(xb.to(dev))
        loss = loss_fn(out[:, 0], yb.to(dev)) if n_out == 1 else loss_fn(out, yb.to(dev).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total, seen


def _epoch_row(module, n_out, scored, has_val, dev, positive):
    """(history row without epoch / loss / seconds, F1 or macro-F1, accuracy or None, ROC AUC) of the network on
    ``scored`` (x, y): the validation set, or the training set when there is none."""
    x_m, y_m = scored
    acc = None
    if n_out == 1:
        f1, thr, auc = _epoch_metrics(y_m, predict_scores(module, x_m, dev))
    else:
        f1, acc, auc = _class_epoch_metrics(np.asarray(y_m, np.int64), predict_outputs(module, x_m, dev), positive)
    row = {"epoch": None, "loss": None, "val_f1": f1 if has_val else None,
           "val_f1_threshold": (thr if n_out == 1 else None) if has_val else None,
           "val_roc_auc": auc if has_val else None, "train_f1": None if has_val else f1, "seconds": None}
    if n_out > 1:
        row["val_accuracy" if has_val else "train_accuracy"] = acc
    return row, f1, acc, auc


def _save_checkpoint(path, config, state, module, opt, sched, rng):
    """Our own file, read back with ``torch.load(weights_only=True)`` (tensors and plain Python values only), written
    through ``safeio.atomic_write``."""
    import torch
    ckpt = {"config": json.dumps(config, sort_keys=True), "epoch": state["epoch"], "best": state["best"],
            "stale": state["stale"], "history": json.dumps(state["history"]), "best_state": state["best_state"],
            "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state()}
    atomic_write(path, lambda f: torch.save(ckpt, f))


def _load_checkpoint(path, config, module, opt, sched, rng):
    import torch
    if not path or not Path(path).exists():
        raise RoicurateError(f"--resume: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        raise RoicurateError(f"{path}: unreadable checkpoint ({e.__class__.__name__})") from None
    if ckpt["config"] != json.dumps(config, sort_keys=True):
        raise RoicurateError(f"{path}: was made with other data or settings; run without --resume to start over")
    module.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    rng.bit_generator.state = ckpt["numpy_rng"]
    torch.set_rng_state(ckpt["torch_rng"])
    return {"epoch": ckpt["epoch"], "best": ckpt["best"], "stale": ckpt["stale"],
            "history": json.loads(ckpt["history"]), "best_state": ckpt["best_state"]}
