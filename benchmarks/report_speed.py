"""How long `roicurate report` takes on one plane, and where the time goes.

`python benchmarks/report_speed.py [--plane DIR] [--rois 300] [--explain 50] [--model suite2p-resnet50]
[--stride 1] [--threads N] [--plain-occlusion]`

Default input: the first 300 ROIs of a real Suite2p plane (abo275/524691284, 382 ROIs), the bundled Suite2p model,
50 ROIs explained (the report's default) plus its 4 confident accepts and 4 confident rejects. Prints one row per
step: start-up (importing roicurate, its plugins and torch), reading the plane, loading the model, classifying, and
the report's own steps as ``write_report(timings=...)`` measures them, each in wall-clock and CPU seconds (on a
machine others load, the CPU seconds say more: the wall time on 2 idle cores is about CPU / 2 to CPU). ``--plain-occlusion`` times occlusion the
naive way too (every window through the plain network), for the speed-up. Say how busy the machine was: the
numbers scale with free cores.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter(), time.process_time()
import numpy as np  # noqa: E402

from roicurate.plugins import model_specs, sources  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from splits import DATA  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plane", default=str(DATA / "real/abo275/524691284/suite2p/plane0"))
    ap.add_argument("--rois", type=int, default=300, help="the plane's first N ROIs (0: all)")
    ap.add_argument("--explain", type=int, default=50)
    ap.add_argument("--model", default="suite2p-resnet50")
    ap.add_argument("--stride", type=int, default=1, help="occlusion stride (the report's --stride)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--plain-occlusion", action="store_true", help="also time the naive occlusion, for comparison")
    a = ap.parse_args()
    rows = []

    def row(step, since):
        """A row of (wall-clock, CPU) seconds since ``since`` (a clock() reading)."""
        rows.append((step, time.perf_counter() - since[0], time.process_time() - since[1]))

    def clock():
        return time.perf_counter(), time.process_time()

    import torch
    from roicurate.curation import curate
    from roicurate.models import Classifier
    from roicurate.report import ReportUnit, write_report
    if a.threads:
        torch.set_num_threads(a.threads)
    row("start-up: import roicurate, plugins, torch", T0)
    t = clock()
    rs = sources()["suite2p"].read(a.plane)
    if a.rois and a.rois < len(rs):
        rs = rs.subset(np.arange(a.rois))
    row(f"read the plane ({len(rs)} ROIs)", t)
    t = clock()
    clf = Classifier.load(a.model, model_specs(), device="cpu")
    row(f"load {a.model}", t)
    t = clock()
    cur = curate(rs, clf)
    row("classify", t)
    timings = {}
    with tempfile.TemporaryDirectory() as out:
        t = clock()
        unit = ReportUnit.build(Path(a.plane).name, rs, cur, clf)
        row("labels lookup", t)
        t = clock()
        write_report(out, [unit], n_explain=a.explain, stride=a.stride, progress=False, timings=timings)
        report_wall, report_cpu = time.perf_counter() - t[0], time.process_time() - t[1]
        n_explained = len(list((Path(out) / Path(a.plane).name).glob("roi*.png")))
    for step, (wall, cpu) in timings.items():
        rows.append((f"report: {step}", wall, cpu))
    rows.append(("report: the rest (page, tables)", report_wall - sum(w for w, _ in timings.values()),
                 report_cpu - sum(c for _, c in timings.values())))
    total, total_cpu = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"# roicurate report on {len(rs)} ROIs of {a.plane}, {n_explained} ROIs explained (occlusion stride "
          f"{a.stride}), model {a.model}; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| step | wall s | CPU s | share of CPU |\n|---|---:|---:|---:|")
    for step, wall, cpu in rows:
        print(f"| {step} | {wall:.2f} | {cpu:.2f} | {cpu / total_cpu:.0%} |")
    print(f"| **total** | **{total:.2f}** | **{total_cpu:.2f}** | |")
    if a.plain_occlusion:
        from roicurate.explain import occlusion
        idx = cur.uncertain[:2]
        t = time.process_time()
        occlusion(clf, rs, idx)
        fast = time.process_time() - t
        t = time.process_time()
        occlusion(clf, rs, idx, skip_unchanged=False, fast=False)
        plain = time.process_time() - t
        print(f"\nocclusion of {len(idx)} ROIs: {fast:.2f} CPU s as the report runs it, {plain:.2f} CPU s naive "
              f"(every window, plain network): {plain / fast:.1f}x")


if __name__ == "__main__":
    main()
