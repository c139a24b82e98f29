"""A writer process for the fault-injection tests: what ``roicurate apply`` / ``revert`` do to a unit, without
loading torch (a fixed random verdict stands in for the model), so that a test can start several, race them and
kill them at random times within a few seconds.

    python _safety_writer.py apply|revert|loop suite2p|caiman PATH [SEED]

Errors are printed as the CLI prints them (one line, exit 1); ``loop`` alternates apply and revert forever,
after printing "ready".
"""
import sys

import numpy as np

from roicurate import RoicurateError
from roicurate.curation import Curation
from roicurate.safeio import NothingToRevert


def curation_for(n, seed):
    p = np.random.default_rng(seed).random(n)
    return Curation(probabilities=np.stack([1 - p, p], 1), accepted=p >= 0.5, threshold=0.5,
                    classes=("not_cell", "cell"), positive=1, model={"name": "t", "sha256": "0", "arch": "x"})


def main(op, kind, path, seed=0):
    if kind == "suite2p":
        from roicurate_plugins.suite2p import Suite2pSource as S
    else:
        from roicurate_plugins.caiman import CaimanSource as S
    src = S()

    def apply(seed):
        units = src.expand(path)
        sets = [(u, src.read(u)) for u in units]
        for u, _ in sets:
            src.check_writable(u)
        for u, rs in sets:
            src.write(u, rs, curation_for(len(rs), seed))
        src.finish(units)

    if op == "apply":
        apply(seed)
        print("applied")
    elif op == "revert":
        try:
            print(src.revert(path))
        except NothingToRevert as e:
            print(e)
    else:
        print("ready", flush=True)
        i = seed
        while True:
            apply(i)
            try:
                src.revert(path)
            except NothingToRevert:
                pass
            i += 1


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    except RoicurateError as e:
        print(f"roicurate: error: {e}", file=sys.stderr)
        sys.exit(1)
