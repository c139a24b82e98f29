"""The recording split behind the bundled models: train + validation go to `roicurate train`; the test
recordings are never seen in training, early stopping or threshold choice. Split by recording, never by ROI;
sessions of the same Neurofinder lab sit on both sides on purpose (other sessions), the ABO sessions likewise."""
import os
from pathlib import Path

MODELS = {"suite2p": "suite2p-resnet50", "caiman": "caiman-cnn2"}     # the bundled cell model of each pipeline
SHARED = Path(os.environ.get("ROICURATE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "datasets"

SPLITS = {
    "suite2p": {
        "train": ["abo275/501484643", "abo275/501574836", "abo275/502608215", "abo275/524691284",
                  "neurofinder_train/neurofinder.01.00", "neurofinder_train/neurofinder.02.00",
                  "neurofinder_train/neurofinder.04.00", "sim/s2p_sim1"],
        "val": ["abo275/510214538", "neurofinder_train/neurofinder.02.01", "sim/s2p_sim2"],
        "test": ["abo275/527048992", "neurofinder_train/neurofinder.01.01", "neurofinder_train/neurofinder.04.01",
                 "sim/s2p_sim3"],
    },
    "caiman": {
        "train": ["abo275/501484643", "abo275/501574836", "abo275/502608215", "abo275/524691284",
                  "neurofinder_train/neurofinder.01.00", "neurofinder_train/neurofinder.02.00",
                  "neurofinder_train/neurofinder.04.00", "sim/caiman_sim1"],
        "val": ["abo275/510214538", "neurofinder_train/neurofinder.02.01", "sim/caiman_sim2"],
        "test": ["abo275/527048992", "neurofinder_train/neurofinder.01.01", "neurofinder_train/neurofinder.04.01",
                 "sim/caiman_sim3"],
    },
}


def path(recording, pipeline):
    base = DATA / recording if recording.startswith("sim/") else DATA / "real" / recording
    if pipeline == "suite2p":
        return base / "suite2p"
    return base / "caiman" / ("cnmf_refit_evaluated.hdf5" if recording.startswith("sim/") else "estimates.hdf5")


def paths(pipeline, *parts):
    return [str(path(r, pipeline)) for part in parts for r in SPLITS[pipeline][part]]


def val_names(pipeline):
    return ",".join(r.split("/")[-1] for r in SPLITS[pipeline]["val"])
