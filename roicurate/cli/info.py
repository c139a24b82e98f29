"""``roicurate models`` and ``roicurate plugins``: what is installed."""
import json

import click

from roicurate.cli.common import cli, echo


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models(as_json):
    """List registered networks and trained models."""
    from roicurate.plugins import model_specs
    rows = []
    for spec in model_specs().values():
        card = json.load(open(spec.card_path)) if spec.card_path else {}
        classes = list(card.get("classes") or spec.classes) or ["(named by the labels)"]
        rows.append({"name": spec.name, "pipeline": spec.pipeline, "task": spec.task, "classes": classes,
                     "threshold": card.get("threshold"), "sha256": card.get("sha256"),
                     "trained": bool(spec.weights), "description": spec.description})
    rows.sort(key=lambda r: not r["trained"])          # trained models first, then the architectures
    if as_json:
        echo(json.dumps(rows, indent=1))
        return
    w = max([16] + [len(",".join(r["classes"])) for r in rows])
    echo(f"{'name':<20} {'pipeline':<8} {'classes':<{w}} {'threshold':<9} {'sha256':<12} description")
    for r in rows:
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        sha = (r["sha256"] or "-")[:12]
        desc = r["description"] + ("" if r["trained"] else " (architecture: train it with roicurate train --arch)")
        echo(f"{r['name']:<20} {r['pipeline']:<8} {','.join(r['classes']):<{w}} {thr:<9} {sha:<12} {desc}")


@cli.command()
def plugins():
    """List plugins, their versions and the hooks they implement."""
    from roicurate.plugins import plugin_info
    for name, version, hooks in plugin_info():
        echo(f"{name:<28} {version:<10} {', '.join(hooks)}")


