"""Built-in plugin: ``roicurate review PATH``, a local page that shows the ROIs the model is least sure of (closest
to its threshold) first and keeps every answer at once in a labels file beside the unit (roicurate/review_answers.py); every later
``apply``, ``train`` and ``evaluate`` honours it. The session (model, answers, pictures) is ``session.py``, the web
server ``app.py``, the page ``static/`` (plain HTML + JS, no build step). docs/review.md is the manual."""
import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

import click

from roicurate import RoicurateError
from roicurate.cli.common import add_image_option, echo
from roicurate.hookspecs import hookimpl

HOST = "127.0.0.1"


def open_session(path, model_name=None, threshold=None, device="auto", images=()):
    """(source, unit, ReviewSession) of the one unit ``path`` stands for, with the model that curated it (else
    ``model_name``, else the pipeline's default) and its threshold; the pictures' cache is a private temp folder."""
    from roicurate.plugins import source_for
    from roicurate_plugins.report_commands import load_units
    from roicurate_plugins.review.session import ReviewSession
    src = source_for(path)
    units = src.expand(path)
    if len(units) != 1:
        raise RoicurateError(f"{path}: holds {len(units)} units ({', '.join(map(str, units[:4]))}"
                             f"{', ...' if len(units) > 4 else ''}); review one at a time")
    (unit,) = load_units([units[0]], model_name, threshold, device, images=images)
    cache = tempfile.mkdtemp(prefix="roicurate-review-")      # mode 0700: other users cannot read the pictures
    return src, units[0], ReviewSession(src, units[0], unit, cache)


def bind(port):
    """A listening socket on 127.0.0.1 (``port`` 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        raise RoicurateError(f"cannot listen on {HOST}:{port} ({e.strerror})") from None
    sock.listen(64)
    return sock


def open_browser(url, cache):
    """Open ``url`` through a private redirect file (0600, in the 0700 cache folder), so the token is never on a
    command line that other users can list."""
    import webbrowser
    page = Path(cache) / "open.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'<!DOCTYPE html><meta http-equiv="refresh" content="0; url={url}"><a href="{url}">review</a>')
    webbrowser.open(page.as_uri())


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--model", "model_name", help="the model whose verdict is reviewed (default: the one that curated "
              "PATH, else the pipeline's default)")
@click.option("--threshold", type=click.FloatRange(0, 1), help="default: the recorded one, else the model's")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="port on 127.0.0.1 (0: a free one)")
@click.option("--no-browser", is_flag=True, help="print the URL, do not open a browser")
@add_image_option
def review(path, model_name, threshold, device, port, no_browser, add_image):
    """Review the ROIs of one Suite2p plane, CaImAn file or NWB table on a local page, those the model is least sure
    of (closest to its threshold) first. Keys: y cell, n not a cell, s skip, u undo, arrows move, g grid.

    Each answer is written at once beside PATH (Suite2p: roicurate_review.json in the plane folder; CaImAn / NWB:
    NAME.roicurate-review.json); `roicurate apply` then writes the answers as the verdict, and `train` / `evaluate`
    take them as labels. The page listens on 127.0.0.1 only, behind a random token in its URL."""
    import uvicorn

    from roicurate.images import parse_image_options
    from roicurate_plugins.review.app import make_app
    src, unit, session = open_session(path, model_name, threshold, device, parse_image_options(add_image))
    try:
        sock = bind(port)
        token = secrets.token_urlsafe(24)
        url = f"http://{HOST}:{sock.getsockname()[1]}/{token}/"
        p = session.progress()
        echo(f"{unit}: {session.n} ROIs, reviewed {p['reviewed']}, about {p['errors_expected_left']:.1f} "
                   f"errors expected in the rest; answers go to {src.review_path(unit)}")
        if session.note:
            echo(session.note)
        echo(f"review at {url}  (Ctrl-C to stop)")
        if not no_browser:
            open_browser(url, session.cache)
        config = uvicorn.Config(make_app(session, token), log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        shutil.rmtree(session.cache, ignore_errors=True)


@hookimpl
def register_commands(cli):
    cli.add_command(review)
