"""roicurate: curate Suite2p and CaImAn ROIs with a classifier made for each pipeline.

The Python API (``roicurate.apply``, ``predict``, ``revert``, ``status`` and their result classes) lives in
``roicurate.api`` and is loaded on first use, so ``import roicurate`` (and ``roicurate -h``) stays light."""
from roicurate.common import RoicurateError, __version__

__all__ = ["RoicurateError", "__version__"]

_API = ("apply", "predict", "revert", "status", "UnitResult", "RevertResult", "StatusResult", "RoicurateWarning")


def __getattr__(name):
    if name in _API:
        from roicurate import api
        return getattr(api, name)
    raise AttributeError(f"module 'roicurate' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
