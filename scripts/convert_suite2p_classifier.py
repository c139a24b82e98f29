"""Suite2p's pickled ``classifier.npy`` -> the plain ``roicurate/data/suite2p_classifier.npz`` (stats, keys, iscell,
order) that ``roicurate.baselines`` loads without pickle. A one-off tool, run once from a Suite2p install (see
roicurate/data/README.md); ``order`` is ``np.argsort(stats, axis=0)`` as computed by this process (Suite2p's own
call), so run it with the CPU features the README names.

    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL" python scripts/convert_suite2p_classifier.py \\
        PATH/suite2p/classifiers/classifier.npy roicurate/data/suite2p_classifier.npz
"""
import argparse

import numpy as np

from roicurate.baselines import load_suite2p_training


def convert_suite2p_classifier(src, dst):
    """Write ``dst`` (.npz) from Suite2p's classifier file ``src`` (read as plain data: no code runs)."""
    stats, keys, iscell, _ = load_suite2p_training(src)
    np.savez_compressed(dst, stats=stats, keys=np.array(keys), iscell=iscell,
                        order=np.argsort(stats, axis=0).astype(np.int32))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="Suite2p's classifiers/classifier.npy")
    ap.add_argument("dst", help="the .npz to write")
    a = ap.parse_args()
    convert_suite2p_classifier(a.src, a.dst)


if __name__ == "__main__":
    main()
