"""The ``roicurate`` command group (``cli``) and what its commands share: output lines (``say``, ``note``,
``detail``, ``emit``, ``warn``, ``log``: all through one writer, ``Output``), shared options and the ``--recursive``
listing. Every user-facing error is one line on stderr and a non-zero exit status. Command modules (and plugins'
commands) import from here, never from the package."""
import json
import os
import sys

import click

from roicurate.common import RoicurateError, __version__
from roicurate.api.results import Events
from roicurate.progress import QUIET, VERBOSE, set_verbosity, verbosity


class Output:
    """The one writer of every line the command line prints. Output is never part of a write sequence: when stdout
    or stderr fails (ENOSPC of a full disk behind ``> log.txt``, EPIPE of a closed pipe, EIO), the first failure is
    kept, that stream is pointed at /dev/null (so that Python's own flush at exit cannot fail either) and no longer
    tried, and the command runs to its end: every unit finished (``combined/`` included) or undone. ``finish`` then
    exits 1 with one line on stderr, or silently where stderr is the stream that failed."""

    def __init__(self):
        self.failed = {}                  # {err (False: stdout, True: stderr): the OSError}

    def echo(self, message, err=False):
        if err in self.failed:
            return
        try:
            click.echo(message, err=err)
        except OSError as e:             # BrokenPipeError included
            self.broken(err, e)

    def broken(self, err, e):
        """Stream ``err`` failed with ``e``: from now on it goes to /dev/null."""
        self.failed.setdefault(err, e)
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, (sys.stderr if err else sys.stdout).fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):   # no real file descriptor (a test runner's stream)
            pass

    def finish(self):
        """At the end of a command: exit 1 if a stream failed, with one line on stderr where it still works."""
        if not self.failed:
            return
        err, e = next(iter(self.failed.items()))
        self.echo(f"roicurate: error: cannot write to {'stderr' if err else 'stdout'} ({e.strerror or e}); the "
                  f"command ran to its end, but what it printed is incomplete", err=True)
        sys.exit(1)


_OUTSIDE = Output()          # lines printed outside a command (e.g. a plugin that fails to load)


def output():
    """The current command's ``Output`` (one per command run, on the root context)."""
    ctx = click.get_current_context(silent=True)
    return _OUTSIDE if ctx is None else ctx.find_root().meta.setdefault("roicurate.output", Output())


def echo(message, err=False):
    """Print one line (stderr with ``err``) through the command's ``Output``: never raises an I/O error."""
    output().echo(message, err=err)


def fail(e):
    """The one-line error on stderr (where it can still be written), exit 1."""
    echo(f"roicurate: error: {e}", err=True)
    sys.exit(1)


def _set_verbosity(ctx, param, value):
    if value:
        set_verbosity(ctx, quiet=param.name == "quiet", verbose=param.name == "verbose")


def _verbosity_params():
    return [click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_verbosity,
                         help="print only the totals, warnings and errors (no progress, no per-plane lines)"),
            click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_verbosity,
                         help="also print what each step read, used and took")]


class _Group(click.Group):
    def invoke(self, ctx):
        output()                   # the writer exists before anything prints (progress finds it on the context)
        try:
            result = super().invoke(ctx)
        except RoicurateError as e:
            fail(e)
        output().finish()
        return result

    def add_command(self, cmd, name=None):
        """Every command, plugins' included, takes -q/--quiet and -v/--verbose (as the group itself does)."""
        if not any(p.name in ("quiet", "verbose") for p in cmd.params):
            cmd.params.extend(_verbosity_params())
        super().add_command(cmd, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="roicurate")
@click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
              help="print only the totals, warnings and errors (no progress, no per-plane lines)")
@click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
              help="also print what each step read, used and took")
def cli():
    """Curate Suite2p and CaImAn ROIs with a classifier made for each pipeline."""


def json_mode():
    """From now on this command's human lines go to stderr: stdout carries JSON lines only (``--json``)."""
    click.get_current_context().meta["roicurate.json"] = True


def emit(obj):
    """One JSON object on one line of stdout (``--json``)."""
    echo(json.dumps(obj, default=str))


def say(message):
    """A result line (stdout; stderr with --json), left out with --quiet."""
    ctx = click.get_current_context(silent=True)
    if verbosity() != QUIET:
        echo(message, err=bool(ctx and ctx.meta.get("roicurate.json")))


def note(message):
    """A line the user must see even with --quiet (where an edit was kept, a warning): stdout, stderr with --json."""
    ctx = click.get_current_context(silent=True)
    echo(message, err=bool(ctx and ctx.meta.get("roicurate.json")))


def detail(message):
    """A --verbose line (stderr)."""
    if verbosity() == VERBOSE:
        echo(message, err=True)


def add_image_option(f):
    return click.option("--add-image", "add_image", multiple=True, metavar="NAME=FILE",
                        help="an extra summary image (.npy or TIFF of the frame size) as crop channel NAME, e.g. "
                             "mean_chan2=red.tif; a relative FILE is looked up in each plane folder / beside each "
                             "CaImAn file (repeatable)")(f)


def types_option(f):
    f = click.option("--classes", "type_classes", help="cell-type models: the class names in order, comma-separated "
                     "(the last is the positive one, e.g. not_red,red); default: the names in the labels, sorted")(f)
    return click.option("--types", "types", metavar="redcell|FILE.csv",
                        help="train / score a cell-type model on these labels: 'redcell' (Suite2p's redcell.npy) or "
                             "a CSV 'roi,class' (ROI index from 0; relative paths: in each plane folder)")(f)


def log(message):
    """A line on stderr whatever the verbosity (warnings, training's progress)."""
    echo(message, err=True)


def num(v, fmt=".3f"):
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, fmt)


def class_rule(path, default, classes, required=True):
    """The class rule a K-class model trains or is evaluated with: ``path`` (--class-rule), else ``default``
    (the architecture's or the card's); None for a two-class model (and, unless ``required``, when there is none:
    evaluation on cell / not cell only)."""
    from roicurate.labels import read_class_rule
    if len(classes) <= 2:
        if path:
            raise RoicurateError(f"--class-rule: the model has only the classes {', '.join(classes)}")
        return None
    rule = read_class_rule(path) if path else default
    if rule is None and required:
        raise RoicurateError(f"the model has {len(classes)} classes ({', '.join(classes)}) but no class rule; "
                             f"give one with --class-rule FILE.json")
    return rule


class PipelineChoice(click.ParamType):
    """``--pipeline``: one of the pipelines whose sources are registered (asked when the option is used, so that
    ``roicurate -h`` loads no plugin)."""
    name = "pipeline"

    def get_metavar(self, param, ctx=None):
        return "suite2p|caiman|..."

    def convert(self, value, param, ctx):
        from roicurate.plugins import pipelines
        if value not in pipelines():
            self.fail(f"'{value}' is not a registered pipeline (choose from {', '.join(pipelines())})", param, ctx)
        return value


def recursive_option(f):
    return click.option("--recursive", "-r", is_flag=True, help="PATHS are folders: every Suite2p output, CaImAn "
                        ".hdf5 and other pipeline output found under them (never roicurate's own backups)")(f)


class Printer(Events):
    """The command line's ``roicurate.api.Events``: says what the API tells it as it goes (outputs found,
    ``--verbose`` details, progress, closing lines); ``as_json`` also emits the ``found`` listing."""
    show_progress = True

    def __init__(self, as_json=False):
        self.as_json = as_json

    def found(self, roots, listing):
        say_found(roots, listing, self.as_json)

    def detail(self, message):
        detail(message)

    def line(self, text):
        say(text)


def say_found(roots, listing, as_json=False):
    """``--recursive``: one line per pipeline output found (how many units), a totals line, and with ``as_json`` a
    ``found`` object, before anything is read or written."""
    from collections import Counter
    kinds = Counter()
    for path, src, units in listing:
        kinds[src.display_name or src.name] += len(units)
        say(f"found {path}: {src.display_name or src.name}, {len(units)} unit{'s' * (len(units) != 1)}")
    say(f"found under {', '.join(map(str, roots))}: " + (", ".join(f"{k} {n} unit{'s' * (k != 1)}"
                                                                   for n, k in sorted(kinds.items())) or "nothing"))
    if as_json:
        emit({"type": "found", "roots": [str(p) for p in roots],
              "outputs": [{"path": path, "source": src.name, "units": [str(u) for u in units]}
                          for path, src, units in listing]})


def expand_paths(paths, recursive, as_json=False):
    """PATHS as given, or with --recursive every pipeline output under them, listed (how many units of each kind)
    before anything is read or written."""
    from roicurate.api.paths import expand
    return expand(list(paths), recursive, Printer(as_json))


def pipeline_option(f):
    return click.option("--pipeline", type=PipelineChoice(), help="only accept this pipeline's outputs")(f)
