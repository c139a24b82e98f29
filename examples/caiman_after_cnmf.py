"""Curate CaImAn components with roicurate inside your CaImAn script.

Where it goes in a usual CaImAn pipeline (demo_pipeline.py style)::

    cnm = cnmf.CNMF(n_processes, params=opts, dview=dview)
    cnm.fit(images)
    cnm2 = cnm.refit(images, dview=dview)
    cnm2.estimates.evaluate_components(images, cnm2.params, dview=dview)

    import roicurate.caiman
    curation = roicurate.caiman.curate(cnm2)            # <- sets idx_components / idx_components_bad

    cnm2.estimates.select_components(use_object=True)   # as usual: keeps the accepted components
    cnm2.save("analysis_results.hdf5")                  # also stores roicurate_probability + provenance

``curate`` must run before ``select_components`` (which throws the rejected components away). Pass
``as_cnn_preds=True`` to put the probabilities in ``cnn_preds`` instead of CaImAn's CNN, and combine them
with SNR and r-values through CaImAn's ``filter_components`` / ``params.quality['min_cnn_thr']``.

Without CaImAn at hand, try it on a file saved by ``cnm.save()`` before ``select_components``::

    python examples/caiman_after_cnmf.py --demo cnmf_refit_evaluated.hdf5 [--model DIR_OR_NAME]

(the file is read into an Estimates-like object and left unchanged; use ``roicurate apply FILE`` to write it).
"""
import argparse
import sys

import numpy as np

import roicurate.caiman
from roicurate import RoicurateError


def report(estimates, curation):
    print(f"{len(curation.accepted)} components: {len(estimates.idx_components)} accepted, "
          f"{len(estimates.idx_components_bad)} rejected by {curation.model['name']} "
          f"at threshold {curation.threshold:.2f}")
    for k in curation.uncertain[:5]:
        print(f"  component {k:4d}: p(cell) = {curation.score[k]:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", metavar="FILE", required=True, help="a CaImAn .hdf5 saved before select_components")
    ap.add_argument("--model", default=None, help="roicurate model name or folder (default: caiman-cnn2)")
    args = ap.parse_args()

    from roicurate_plugins.caiman import load_estimates
    try:
        estimates = load_estimates(args.demo)      # stands in for cnm.estimates
        before = None if estimates.idx_components is None else np.asarray(estimates.idx_components)
        curation = roicurate.caiman.curate(estimates, model=args.model)
    except RoicurateError as e:
        sys.exit(f"error: {e}")

    report(estimates, curation)
    if before is not None:
        agree = np.isin(estimates.idx_components, before).sum()
        print(f"CaImAn's own evaluation accepted {len(before)}; {agree} of them are accepted by roicurate too")
