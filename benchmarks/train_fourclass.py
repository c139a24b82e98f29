"""Four-class models (neuron / doubtful / process / noise): train and measure them, and rebuild the bundled one.

    python benchmarks/train_fourclass.py caiman [--archs vgg16-4c,cnn2-4c] [--out runs/fourclass] [--json F]
    python benchmarks/train_fourclass.py caiman --bundle vgg16-4c   # also -> roicurate_plugins/weights/caiman-vgg16-4c

Only the simulations carry object classes (soma / process / out-of-focus blob in their truth/classes.json); the
architectures' class rule (roicurate_plugins/fourclass.py, SIM_CLASS_RULE) turns each ROI's one-to-one
ground-truth partner into one of the four classes. Each architecture is trained with ``roicurate train`` on the
first simulation, stopped early and calibrated on the second, and tested on the third (benchmarks/splits.py):
whole recordings, never seen in training. The real human-labelled test recordings of splits.py only say cell /
not cell, so on them the models are measured as neuron vs the rest (ROC AUC of P(neuron)), next to the bundled
two-class model on the same ROIs. Prints a markdown table; ``--json`` keeps every number.

Recipe (RECIPES): at most 40 epochs, early stopping after 12 without a better validation macro-F1, batch 32 (the
training set is ~200 ROIs: smaller batches give batch norm more updates per epoch), seed 0; the VGGs at half width
(``--build width=0.5``: the study's channel counts halved, for a 2-core CPU and ~200 training ROIs).
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from splits import SPLITS, path

from roicurate.evaluate import evaluate_model, jsonable
from roicurate.models import Classifier
from roicurate.training.data import load_labelled

ROOT = Path(__file__).resolve().parents[1]
BINARY = {"caiman": "caiman-cnn2", "suite2p": "suite2p-resnet50"}
COMMON = ["--epochs", "40", "--patience", "12", "--batch-size", "32"]
RECIPES = {"vgg13-4c": ["--build", "width=0.5"], "vgg16-4c": ["--build", "width=0.5"],
           "vgg19-4c": ["--build", "width=0.5"], "resnet50-4c": [], "cnn2-4c": []}


def sims(pipeline, part):
    return [r for r in SPLITS[pipeline][part] if r.startswith("sim/")]


def train(pipeline, arch, out, name, seed):
    recs = sims(pipeline, "train") + sims(pipeline, "val") + sims(pipeline, "test")
    cmd = [sys.executable, "-m", "roicurate.cli", "train", *[str(path(r, pipeline)) for r in recs],
           "--pipeline", pipeline, "--arch", arch, "--val", sims(pipeline, "val")[0].split("/")[-1],
           "--test", sims(pipeline, "test")[0].split("/")[-1], *COMMON, *RECIPES.get(arch, []), "--seed", str(seed),
           "--device", "cpu", "--out", str(out), "--name", name]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out / f"{name}.json"


def real_auc(clf, pipeline):
    """Neuron-vs-rest ROC AUC (pooled) per real dataset among the test recordings."""
    out = {}
    for group in ("abo275", "neurofinder_train"):
        recs = [r for r in SPLITS[pipeline]["test"] if r.startswith(group)]
        sets = load_labelled([str(path(r, pipeline)) for r in recs], pipeline, use_pipeline_labels=False)
        numbers, _ = evaluate_model(clf, sets, baselines=False)
        out[group] = {"recordings": recs, "n": numbers["pooled"]["n"], "roc_auc": numbers["pooled"]["roc_auc"],
                      "pr_auc": numbers["pooled"]["pr_auc"], "f1": numbers["pooled"]["f1"]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=SPLITS)
    ap.add_argument("--archs", default=",".join(RECIPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "fourclass"))
    ap.add_argument("--bundle", metavar="ARCH",
                    help="copy this architecture's trained model into roicurate_plugins/weights/ as PIPELINE-ARCH")
    ap.add_argument("--json")
    a = ap.parse_args()
    archs = [x for x in a.archs.split(",") if x]
    if a.bundle and a.bundle not in archs:
        archs.append(a.bundle)
    binary = {"real": real_auc(Classifier.load(BINARY[a.pipeline]), a.pipeline)}
    results = {}
    for arch in archs:
        name = f"{a.pipeline}-{arch}"
        card_path = train(a.pipeline, arch, Path(a.out) / name, name, a.seed)
        test = json.loads((card_path.parent / f"{name}.test" / "metrics.json").read_text())
        clf = Classifier.load(str(card_path))
        results[arch] = {"card": str(card_path), "test_sim": test["classes"]["pooled"],
                         "test_sim_neuron_roc_auc": test["pooled"]["roc_auc"], "real": real_auc(clf, a.pipeline),
                         "epochs_run": json.loads(card_path.read_text())["training"]["epochs_run"]}
        if a.json:
            Path(a.json).write_text(json.dumps(jsonable({"pipeline": a.pipeline, "models": results,
                                                         BINARY[a.pipeline]: binary}), indent=1) + "\n")
        if arch == a.bundle:
            card = json.loads(card_path.read_text())
            card["test"] = jsonable({"how": "benchmarks/train_fourclass.py: recordings never used in training, early "
                                            "stopping, calibration or threshold choice",
                                     "simulation": {"recordings": sims(a.pipeline, "test"), **results[arch]["test_sim"],
                                                    "neuron_vs_rest_roc_auc": results[arch]["test_sim_neuron_roc_auc"]},
                                     "real_neuron_vs_rest": results[arch]["real"]})
            weights = ROOT / "roicurate_plugins" / "weights"
            shutil.copyfile(card_path.with_suffix(".safetensors"), weights / f"{name}.safetensors")
            (weights / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
            print(f"bundled: {weights / name}.safetensors + .json")
    classes = next(iter(results.values()))["test_sim"]["classes"]
    print(f"\n{a.pipeline}: trained on {', '.join(sims(a.pipeline, 'train'))}, validation "
          f"{', '.join(sims(a.pipeline, 'val'))}, test {', '.join(sims(a.pipeline, 'test'))}")
    hdr = ["model", "epochs", "4-class accuracy (majority)", "macro-F1"] + [f"F1 {c}" for c in classes] + \
          ["neuron ROC AUC, sim", "neuron ROC AUC, ABO (real)", "neuron ROC AUC, Neurofinder (real)"]
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    fmt = lambda v: "–" if v is None or v != v else f"{v:.3f}"
    for arch, r in results.items():
        m = r["test_sim"]
        print(f"| {arch} | {r['epochs_run']} | {fmt(m['accuracy'])} ({fmt(m['majority_rate'])}) | {fmt(m['macro_f1'])} | "
              + " | ".join(fmt(m["per_class"][c]["f1"]) for c in classes)
              + f" | {fmt(r['test_sim_neuron_roc_auc'])} | {fmt(r['real']['abo275']['roc_auc'])} | "
                f"{fmt(r['real']['neurofinder_train']['roc_auc'])} |")
    print(f"| {BINARY[a.pipeline]} (two classes, for scale) | | | | " + " | ".join("" for _ in classes)
          + f" | | {fmt(binary['real']['abo275']['roc_auc'])} | {fmt(binary['real']['neurofinder_train']['roc_auc'])} |")
    for arch, r in results.items():
        m = r["test_sim"]
        print(f"\n{arch}: confusion matrix on {', '.join(sims(a.pipeline, 'test'))} (rows: labelled, columns: "
              f"most probable)\n| | " + " | ".join(classes) + " |\n|" + "---|" * (len(classes) + 1))
        for c, row in zip(classes, m["confusion_matrix"]):
            print(f"| **{c}** ({m['per_class'][c]['support']}) | " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    sys.exit(main())
