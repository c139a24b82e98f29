"""The folder locks behind ``safeio.locked_transaction``: an exclusive ``fcntl.flock`` on the folder itself (nothing
is left behind), taken for one unit (``folder_lock``) or kept by this process across several units of one file
(``hold_folder`` / ``release_folder``: the tables of an NWB file are written one by one, and no other run may write
between them). A lock this process holds already is not taken again (a second flock on another descriptor of the
same folder would wait for itself)."""
import contextlib
import fcntl
import os
import time

from roicurate.common import RoicurateError


def _lock_folder(folder, what):
    """An fd of ``folder`` holding an exclusive flock; waits ROICURATE_LOCK_WAIT seconds (default 10), then 'busy'.
    Test hook: ROICURATE_TEST_PAUSE_BEFORE_LOCK=seconds sleeps first (a slow classification between two units)."""
    time.sleep(float(os.environ.get("ROICURATE_TEST_PAUSE_BEFORE_LOCK") or 0))
    wait = float(os.environ.get("ROICURATE_LOCK_WAIT", "10"))
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise RoicurateError(f"{folder}: cannot open the folder ({e.strerror})") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise RoicurateError(f"{what}: busy: another roicurate run is writing in {folder}; "
                                     f"try again when it has finished") from None
            time.sleep(0.05)


_HELD = {}       # folder (real path) -> [fd, holders]: locks this process keeps across several units (hold_folder)


@contextlib.contextmanager
def folder_lock(folder, what):
    """Exclusive flock on ``folder`` itself, for one unit; nothing to take where this process holds it already
    (``hold_folder``)."""
    if os.path.realpath(folder) in _HELD:
        yield
        return
    fd = _lock_folder(folder, what)
    try:
        yield
    finally:
        os.close(fd)                          # closing the descriptor releases the lock


def hold_folder(folder, what):
    """Take (or count one more holder of) the lock on ``folder`` and keep it across units until as many
    ``release_folder`` calls: the units of one file that are written one by one (the tables of an NWB file) form
    one critical section, so that another run cannot write between them."""
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        _HELD[key] = [_lock_folder(folder, what), 1]


def release_folder(folder):
    key = os.path.realpath(folder)
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        os.close(held[0])
