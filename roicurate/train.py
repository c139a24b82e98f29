"""Train a classifier on labelled ROI sets: split by recording, 8-fold dihedral augmentation, class-balanced
loss, early stopping on validation F1, a precision-first threshold chosen on validation, a card with
per-recording validation metrics."""
import random
import time

import numpy as np

from roicurate import RoicurateError
from roicurate.crops import make_crops
from roicurate.evaluate import best_f1_threshold, evaluate_groups, threshold_for_precision
from roicurate.labels import attach_labels
from roicurate.models import _device, save_model


def load_labelled(paths, pipeline=None, use_pipeline_labels=True):
    """Read every unit under ``paths`` with its source; keep those with labels. Returns [RoiSet]."""
    from roicurate.plugins import source_for
    sets = []
    for path in paths:
        src = source_for(str(path))
        if pipeline and src.name != pipeline:
            raise RoicurateError(f"{path}: is {src.name} output, but --pipeline {pipeline} was given")
        for unit in src.expand(str(path)):
            rs = attach_labels(src.read(unit), use_pipeline=use_pipeline_labels)
            if len(rs) and rs.labels is not None:
                rs.origin["source"] = src.name
                sets.append(rs)
    if not sets:
        raise RoicurateError("no labelled ROIs found in the given paths")
    return sets


def split_by_recording(sets, val):
    """``val``: a list of recording names (substring match) or a fraction of recordings (float in (0, 1))."""
    recs = sorted({rs.origin["recording"] for rs in sets})
    if isinstance(val, float):
        rng = random.Random(0)
        shuffled = recs[:]
        rng.shuffle(shuffled)
        nval = max(1, round(val * len(recs)))
        if nval >= len(recs):
            raise RoicurateError(f"--val {val}: need at least 2 recordings, found {len(recs)}")
        val_recs = set(shuffled[:nval])
    else:
        val_recs = {r for r in recs if any(v in r for v in val)}
        missing = [v for v in val if not any(v in r for r in recs)]
        if missing:
            raise RoicurateError(f"--val: no recording matches {', '.join(missing)} (recordings: {', '.join(recs)})")
    train = [rs for rs in sets if rs.origin["recording"] not in val_recs]
    valid = [rs for rs in sets if rs.origin["recording"] in val_recs]
    if not train or not valid:
        raise RoicurateError("the split left no training or no validation recordings")
    return train, valid


def _stack(sets, crop):
    x = np.concatenate([make_crops(rs, crop) for rs in sets])
    y = np.concatenate([(rs.labels > 0).astype(np.float32) for rs in sets])
    return x, y


def _dihedral(x, k):
    import torch
    x = torch.rot90(x, k % 4, (2, 3))
    return torch.flip(x, (3,)) if k >= 4 else x


def predict_scores(module, x, device, batch=512):
    import torch
    module.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logit = module(torch.from_numpy(x[i:i + batch]).to(device))
            out.append((torch.sigmoid(logit[:, 0]) if logit.shape[1] == 1 else torch.softmax(logit, 1)[:, -1]).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def fit(module, x_tr, y_tr, x_va, y_va, epochs=20, lr=1e-3, weight_decay=1e-4, batch_size=64, seed=0,
        device="cpu", patience=6, log=print):
    """Train ``module`` (one sigmoid output) in place; returns the history and restores the best epoch's weights."""
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = _device(device)
    module.to(dev)
    npos = max(y_tr.sum(), 1)
    pos_weight = torch.tensor((len(y_tr) - npos) / npos, dtype=torch.float32, device=dev)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * int(np.ceil(len(y_tr) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    best, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(epochs):
        t0 = time.time()
        module.train()
        _freeze_bn_of_frozen(module)
        order = rng.permutation(len(y_tr))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[i:i + batch_size])
            if len(idx) < 2:
                continue
            xb, yb = xt[idx], yt[idx]
            k = torch.from_numpy(rng.integers(0, 8, len(idx)))
            xb = torch.cat([_dihedral(xb[k == j], j) for j in range(8)])
            yb = torch.cat([yb[k == j] for j in range(8)])
            loss = loss_fn(module(xb.to(dev))[:, 0], yb.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        s = predict_scores(module, x_va, dev)
        thr, f1 = best_f1_threshold(y_va, s)
        row = {"epoch": epoch + 1, "loss": total / len(y_tr), "val_f1": f1, "val_f1_threshold": thr,
               "val_roc_auc": evaluate_groups({"v": (y_va, s)}, 0.5)["pooled"]["roc_auc"], "seconds": time.time() - t0}
        history.append(row)
        log(f"epoch {epoch + 1}/{epochs}  loss {row['loss']:.4f}  val F1 {f1:.3f}  val ROC AUC {row['val_roc_auc']:.3f}"
            f"  ({row['seconds']:.0f} s)")
        if f1 > best:
            best, stale = f1, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                log(f"early stop: no better validation F1 for {patience} epochs")
                break
    module.load_state_dict(best_state)
    return history


def _freeze_bn_of_frozen(module):
    """Batch-norm layers whose parameters are frozen also keep their running statistics (fine-tuning)."""
    import torch
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def choose_threshold(y, s, target_precision):
    """Precision first: the lowest threshold reaching ``target_precision`` on validation; max F1 if none does."""
    thr = threshold_for_precision(y, s, target_precision) if target_precision else None
    if thr is not None:
        return thr, f"lowest threshold with validation precision >= {target_precision}"
    thr, f1 = best_f1_threshold(y, s)
    how = "maximum validation F1" + (f" (precision {target_precision} is never reached)" if target_precision else "")
    return thr, how


def train(sets, arch_spec, crop, val, out, name, epochs=20, lr=1e-3, weight_decay=1e-4, batch_size=64, seed=0,
          device="cpu", target_precision=None, build_kwargs=None, log=print):
    """Split, fit, choose the threshold, save weights + card. Returns the card path."""
    import torch
    torch.manual_seed(seed)
    train_sets, val_sets = split_by_recording(sets, val)
    build_kwargs = dict(build_kwargs or {})
    build_kwargs.setdefault("in_channels", len(crop.channels))
    module = arch_spec.build(**build_kwargs)
    x_tr, y_tr = _stack(train_sets, crop)
    x_va, y_va = _stack(val_sets, crop)
    log(f"train: {len(y_tr)} ROIs ({int(y_tr.sum())} cells) from {len({r.origin['recording'] for r in train_sets})} "
        f"recordings; validation: {len(y_va)} ROIs ({int(y_va.sum())} cells) from "
        f"{len({r.origin['recording'] for r in val_sets})} recordings")
    history = fit(module, x_tr, y_tr, x_va, y_va, epochs=epochs, lr=lr, weight_decay=weight_decay,
                  batch_size=batch_size, seed=seed, device=device, log=log)
    module.cpu()
    # score validation with the fp16 weights that will ship, so the card describes the saved model
    module.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in module.state_dict().items()})
    s_va = predict_scores(module, x_va, "cpu")
    thr, how = choose_threshold(y_va, s_va, target_precision)
    groups, start = {}, 0
    for rs in val_sets:
        n = len(rs)
        key = rs.origin["recording"] + ("" if len(val_sets) == len({r.origin["recording"] for r in val_sets})
                                        else f" ({rs.origin['path'].rsplit('/', 1)[-1]})")
        groups[key] = (y_va[start:start + n], s_va[start:start + n])
        start += n
    card = {
        "arch": arch_spec.name, "build_kwargs": build_kwargs, "pipeline": train_sets[0].origin["source"],
        "crop": crop.to_dict(), "classes": list(arch_spec.classes), "positive_class": arch_spec.classes[-1],
        "threshold": thr, "threshold_rule": how, "target_precision": target_precision,
        "training": {
            "recordings": sorted({rs.origin["recording"] for rs in train_sets}),
            "validation_recordings": sorted({rs.origin["recording"] for rs in val_sets}),
            "label_sources": sorted({str(rs.origin["label_source"]) for rs in sets}),
            "n_train": int(len(y_tr)), "n_train_cells": int(y_tr.sum()),
            "n_val": int(len(y_va)), "n_val_cells": int(y_va.sum()),
            "epochs_run": len(history), "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
            "seed": seed, "augmentation": "8 rotations/flips", "class_balance": "BCE pos_weight = negatives/positives",
            "history": history,
        },
        "validation": evaluate_groups(groups, thr),
    }
    return save_model(out, name, module, card)
