"""Progress for long steps, readable wherever stderr goes.

On a terminal: a tqdm bar (erased when the step ends; the command's own lines say what was done). Elsewhere (a log
file, ``nohup``, a cluster job) tqdm shows nothing, so instead one plain line every ``ROICURATE_PROGRESS_SECONDS``
seconds (default 10) and, after those, one when the step ends: ``classifying: 120/300 ROIs (40%), 12 s``. A step
shorter than the interval prints nothing (its result lines say it all, and an error stays one line). ``--quiet``
turns both off. The verbosity is the command line's (``roicurate -q/-v`` or the command's own ``--quiet/--verbose``), read from
the click context, so library calls outside a command are quiet unless asked.
"""
import os
import sys
import time

QUIET, NORMAL, VERBOSE = 0, 1, 2


def verbosity():
    """The current command's verbosity (NORMAL outside a command)."""
    import click
    ctx = click.get_current_context(silent=True)
    return NORMAL if ctx is None else ctx.find_root().meta.get("roicurate.verbosity", NORMAL)


def set_verbosity(ctx, quiet=False, verbose=False):
    """Record ``--quiet`` / ``--verbose`` on the root context (the last one given wins over the group's)."""
    root = ctx.find_root()
    if quiet or verbose:
        root.meta["roicurate.verbosity"] = QUIET if quiet else VERBOSE


def interval():
    try:
        return max(0.0, float(os.environ.get("ROICURATE_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


class LineProgress:
    """tqdm's ``update`` / ``clear`` / ``close`` as periodic plain lines on ``file``."""

    def __init__(self, total, desc, unit="ROI", file=None, every=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.every = interval() if every is None else every
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.closed = self.printed = False

    def _line(self, end=""):
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{pct}, {time.monotonic() - self.t0:.0f} s{end}",
              file=self.file, flush=True)

    def update(self, k=1):
        self.n += k
        now = time.monotonic()
        if now - self.last >= self.every and self.n < self.total:
            self.last, self.printed = now, True
            self._line()

    def clear(self):
        pass

    def close(self):
        if not self.closed and self.printed:
            self.closed = True
            self._line(", done")


class _Off:
    def update(self, k=1):
        pass

    def clear(self):
        pass

    def close(self):
        pass


class _Safe:
    """A reporter whose failing stderr (a full disk, a closed pipe) turns it off instead of stopping a write
    sequence. Inside a command the failure goes to the command's writer (``roicurate.cli.common.Output``, kept on
    the root click context), which points stderr at /dev/null and makes the command exit 1 at its end."""

    def __init__(self, bar):
        self.bar = bar

    def _call(self, name, *args):
        if self.bar is None:
            return
        try:
            getattr(self.bar, name)(*args)
        except OSError as e:
            self.bar = None
            import click
            ctx = click.get_current_context(silent=True)
            writer = None if ctx is None else ctx.find_root().meta.get("roicurate.output")
            if writer is not None:
                writer.broken(True, e)

    def update(self, k=1):
        self._call("update", k)

    def clear(self):
        self._call("clear")

    def close(self):
        self._call("close")


def progress(total, desc, unit="ROI", enabled=True):
    """A progress reporter for ``total`` items: a bar on a terminal, periodic lines elsewhere, nothing when quiet.
    It never raises an I/O error (``_Safe``)."""
    if not enabled or verbosity() == QUIET:
        return _Off()
    if sys.stderr.isatty():
        from tqdm import tqdm
        return _Safe(tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False))
    return _Safe(LineProgress(total, desc, unit))
