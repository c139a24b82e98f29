"""roicurate: curate Suite2p and CaImAn ROIs with a classifier made for each pipeline."""
__version__ = "0.2.0"


class RoicurateError(Exception):
    """A problem with the user's input, reported as one line; nothing has been changed on disk."""
