"""What every module of roicurate shares, in a leaf that imports nothing: the version and the one-line error.
``roicurate`` re-exports both (``from roicurate import RoicurateError`` keeps working for plugins and scripts)."""
__version__ = "0.2.0"


class RoicurateError(Exception):
    """A problem with the user's input, reported as one line; nothing has been changed on disk."""
