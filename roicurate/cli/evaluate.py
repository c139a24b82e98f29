"""``roicurate evaluate``: a model scored on labelled outputs, per recording and pooled, against the baselines."""
import math

import click

from roicurate.common import RoicurateError
from roicurate.cli.common import add_image_option, class_rule, cli, echo, log, num, pipeline_option
from roicurate.progress import progress


def print_evaluation(numbers, out_dir=None):
    """The table `roicurate evaluate` prints: the model per recording, pooled and macro; the baselines pooled."""
    cols = ("precision", "recall", "f1", "roc_auc", "pr_auc", "ece")
    echo(f"{'':<44} {'ROIs':>5} {'cells':>5} " + " ".join(f"{c:>9}" for c in cols))
    row = lambda label, m: echo(f"{label[-44:]:<44} {m.get('n', ''):>5} {m.get('n_cell', ''):>5} "
                                      + " ".join(f"{num(m.get(c)):>9}" for c in cols))
    for rec, m in numbers["per_recording"].items():
        row(rec, m)
    row(f"model, pooled (threshold {numbers['threshold']:.3f})", numbers["pooled"])
    row("model, mean per recording", numbers["macro"])
    from roicurate.baselines import NAMES
    for k, b in numbers["baselines"].items():
        row(f"{NAMES.get(k, k)}, pooled", b["pooled"])
    best = numbers.get("best_threshold")
    if best and not math.isnan(best["f1"]) and best["f1"] > numbers["pooled"]["f1"]:
        echo(f"on these ROIs the best threshold is {best['threshold']:.3f} (pooled F1 {best['f1']:.3f}): "
                   f"`apply --threshold {best['threshold']:.3f}` uses it; check it on sessions you did not pick it on")
    if "classes" in numbers:
        print_classes(numbers["classes"]["pooled"])
    if out_dir:
        echo(f"numbers, per-ROI scores and figures in {out_dir}")


def print_classes(m):
    """Per-class precision / recall / F1 and the confusion matrix of a K-class model (most probable class)."""
    names = m["classes"]
    w = max(len(c) for c in names) + 2
    echo(f"\n{m['n']} ROIs with class labels: accuracy {num(m['accuracy'])} (majority class "
               f"{num(m['majority_rate'])}), macro-F1 {num(m['macro_f1'])}")
    echo(f"{'class':<{w}} {'ROIs':>5} {'precision':>9} {'recall':>9} {'F1':>9}   predicted as: "
               + " ".join(f"{c:>{w}}" for c in names))
    for c, row in zip(names, m["confusion_matrix"]):
        pc = m["per_class"][c]
        echo(f"{c:<{w}} {pc['support']:>5} {num(pc['precision']):>9} {num(pc['recall']):>9} "
                   f"{num(pc['f1']):>9}                 " + " ".join(f"{v:>{w}}" for v in row))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "model_name", required=True,
              help="registered model name, or a folder / NAME.json of a trained model")
@pipeline_option
@click.option("--threshold", type=click.FloatRange(0, 1), help="accept ROIs with probability >= this (default: the model's)")
@click.option("--out", type=click.Path(), help="folder for metrics.json, scores.csv and roc/pr/reliability PNGs")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--suite2p-classifier", type=click.Path(exists=True),
              help="Suite2p classifier file for the built-in baseline (default: the one Suite2p ships)")
@click.option("--class-rule", "class_rule_path", type=click.Path(exists=True, dir_okay=False),
              help="models with more than two classes: JSON rule giving the ROIs' classes (default: the model card's)")
@click.option("--types", "types", metavar="redcell|FILE.csv", help="cell-type models: the labels to score against "
              "('redcell' or a CSV 'roi,class', as for train)")
@add_image_option
def evaluate(paths, model_name, pipeline, threshold, out, device, suite2p_classifier, class_rule_path, types,
             add_image):
    """Score a model on labelled pipeline outputs, per recording and pooled, against the baselines (accept all,
    the pipeline's own verdict, Suite2p's built-in classifier) on the same ROIs. A model with more than two
    classes is also scored per class where the labels name object classes (confusion matrix). A cell-type model
    is scored on --types labels, against accept-all and the pipeline's own red-cell probability."""
    from roicurate.evaluate import evaluate_model
    from roicurate.report.evaluation import write_evaluation
    from roicurate.images import parse_image_options
    from roicurate.models import Classifier
    from roicurate.training.data import load_labelled
    clf = Classifier.load(model_name, device=device)
    if (types is not None) != (clf.task == "types"):
        raise RoicurateError(f"--types scores a cell-type model, and model '{clf.name}' "
                             f"{'is one: give --types' if clf.task == 'types' else 'is not'}")
    rule = None if types else class_rule(class_rule_path, clf.card.get("class_rule"), clf.classes, required=False)
    sets = load_labelled(paths, pipeline, log=log, class_rule=rule, types=types, type_classes=clf.classes if types
                         else None, images=parse_image_options(add_image))
    bar = progress(sum(len(rs) for rs in sets), "scoring")
    numbers, table = evaluate_model(clf, sets, threshold, suite2p_classifier=suite2p_classifier, progress=bar.update)
    bar.close()
    if out:
        write_evaluation(out, numbers, table)
    print_evaluation(numbers, out)


