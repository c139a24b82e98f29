"""Crash-safe file handling shared by the writers: one critical section per unit, undo on failure, atomic
writes, independent copies, no-replace creation.

* ``atomic_write(path, write)`` / ``atomic_replace(tmp, path)``: the one temp file + fsync + ``os.replace`` +
  folder fsync that every writer uses (a file written from Python, or a prepared copy such as an edited HDF5).
* ``locked_transaction(folder, what)``: a lock on the folder (``fcntl.flock`` on the folder itself, so nothing is left
  behind; ``roicurate.locks``), stale temp files of dead runs removed, SIGTERM turned into an exception, and a
  ``Transaction`` whose steps are undone (newest first) when a later one fails. An OSError becomes one line naming
  the file and the errno.
* Temp files are named ``.NAME.<host>.<pid>.<8 hex>.tmp``: the next run on that machine can tell a dead run's
  leftovers from a live one's.
* ``check_replaceable(path)``: read-only, immutable, symbolic links and files another process holds open for writing
  are refused before anything is written (the last two: ``roicurate.fileguard``).
* ``create_new`` never leaves a second link: ``renameat2(RENAME_NOREPLACE)`` where the filesystem has it, else
  ``os.link`` + unlink of the temp name, retried, and reported (nothing created) when the unlink keeps failing.
* Reading Suite2p's pickled ``.npy`` files without running code: ``roicurate.plaindata``.
"""
import contextlib
import datetime
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from roicurate.common import RoicurateError
from roicurate.fileguard import (CopyWriteError, errno_name, move_no_replace, refuse_open_writers,  # noqa: F401
                                 refuse_symlink)
from roicurate.locks import folder_lock, hold_folder, release_folder  # noqa: F401 (re-exported)

TEMP_RE = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
FICLONE = 0x40049409                       # linux/fs.h: _IOW(0x94, 9, int)


class NothingToRevert(RoicurateError):
    """Nothing roicurate wrote is left here: the CLI says so and exits 0."""


class Interrupted(BaseException):
    """SIGTERM arrived inside a critical section (raised so that ``finally`` and undo steps run)."""


# ---- small helpers ---------------------------------------------------------------------------------------
def temp_name(path):
    path = Path(path)
    return path.parent / f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def stamp():
    """UTC time for the names of kept files: 20261203T081500Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def sha256_file(path, block=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def fsync_dir(folder):
    """Make a rename durable (a crash right after os.replace must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder):
    """Remove ``.NAME.<host>.<pid>.<hex>.tmp`` files of this machine whose process is gone (a kill -9 in an
    earlier run)."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = TEMP_RE.match(name)            # only this machine's pids can be checked (a cluster shares folders)
        pid = int(m.group("pid")) if m else 0
        if m and m.group("host") == HOST and pid != os.getpid() and not _pid_alive(pid):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def check_free_space(folder, nbytes, what):
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if free < nbytes:
        raise RoicurateError(f"{folder}: not enough free space for {what} (needs {nbytes / 1e6:.1f} MB, "
                             f"{free / 1e6:.1f} MB free); nothing written")


def check_replaceable(path):
    """An existing file we will replace or remove: refuse read-only, immutable (chattr +i) and append-only files
    now, before anything is written (os.access alone says yes to root and knows nothing of chattr); refuse a
    symbolic link (replacing it would make it a regular file) and a file another process holds open for writing
    (its later writes would go to the replaced inode)."""
    path = Path(path)
    refuse_symlink(path)
    if not path.exists():
        return
    refuse_open_writers(path)
    try:
        fd = os.open(path, os.O_RDWR)
        os.close(fd)
    except OSError as e:
        raise RoicurateError(f"{path}: cannot be replaced ({e.strerror}: read-only or immutable file?); "
                             f"nothing written") from None


def clone_or_copy(src, dst):
    """An independent copy of ``src`` at the new path ``dst``: a reflink (FICLONE) where the filesystem has one
    (btrfs, xfs: instant, shares blocks copy-on-write), else a kernel copy. Never a hard link: a program still
    writing to the original must not write into the copy. ``src`` may be a file already open for reading (the one
    that was verified: no second open of a path another process may have replaced). Returns "reflink" or "copy"."""
    opened = contextlib.nullcontext(src) if hasattr(src, "fileno") else open(src, "rb")
    with opened as fin, open(dst, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            how = "reflink"
        except OSError:
            how = "copy"
            _sendfile_all(fin, fout)
        fout.flush()
        os.fsync(fout.fileno())
    return how


def _sendfile_all(fin, fout):
    """Kernel copy (like shutil.copyfile), or a Python copy where sendfile is not available."""
    size, sent = os.fstat(fin.fileno()).st_size, 0
    try:
        while sent < size:
            n = os.sendfile(fout.fileno(), fin.fileno(), sent, min(size - sent, 1 << 30))
            if n == 0:
                break
            sent += n
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS) or sent:
            raise
        fin.seek(0)
        shutil.copyfileobj(fin, fout, 1 << 22)


# ---- the critical section ----------------------------------------------------------------------------------
def pause_after_check():
    """Test hook, read here only: ROICURATE_TEST_PAUSE_AFTER_CHECK=seconds sleeps between a unit's checks and its
    first write (inside the lock), so tests can race two runs."""
    delay = os.environ.get("ROICURATE_TEST_PAUSE_AFTER_CHECK")
    if delay:
        time.sleep(float(delay))


@contextlib.contextmanager
def _sigterm_raises():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _shield["on"]:                      # undoing: finish that first, exit right after
            _shield["pending"] = True
            return
        raise Interrupted(signum)
    _shield.update(on=False, pending=False)
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Transaction:
    """The writes of one unit. Each step records how to undo it; ``rollback`` undoes them newest first."""

    def __init__(self):
        self.undo = []

    def write(self, path, data):
        """Replace (or create) a small file with ``data`` atomically; undo puts the old bytes back."""
        path = Path(path)
        old = path.read_bytes() if path.exists() else None
        atomic_write_bytes(path, data)
        self.undo.append(lambda: atomic_write_bytes(path, old) if old is not None else path.unlink(missing_ok=True))

    def create(self, path, data):
        """Create ``path`` with ``data``; never replaces an existing file (temp + os.link)."""
        create_new(path, data)
        self.undo.append(lambda: Path(path).unlink(missing_ok=True))

    def created(self, path):
        """Register a file this unit made some other way (undo removes it)."""
        self.undo.append(lambda: Path(path).unlink(missing_ok=True))

    def remove(self, path):
        path = Path(path)
        if not path.exists():
            return
        old = path.read_bytes()
        path.unlink()
        self.undo.append(lambda: create_new(path, old))

    def rollback(self):
        failed = []
        for step in reversed(self.undo):
            try:
                step()
            except OSError as e:
                failed.append(f"{e.filename}: {e.strerror}")
        self.undo = []
        return failed


@contextlib.contextmanager
def locked_transaction(folder, what):
    """Lock ``folder``, clean dead runs' temp files, and run the body as one transaction: any failure undoes
    this unit's steps; an OSError becomes one line naming the file; SIGTERM exits with one line."""
    folder = Path(folder)
    with folder_lock(folder, what), _sigterm_raises():
        clean_stale_temps(folder)
        tx = Transaction()
        try:
            yield tx
        except OSError as e:
            failed = _shielded(tx.rollback)
            raise RoicurateError(f"{os_error_line(e, what)}; " + (
                "nothing changed" if not failed else f"undo failed too: {'; '.join(failed)}")) from None
        except (Interrupted, KeyboardInterrupt) as e:
            _shielded(tx.rollback)
            how = "SIGTERM" if isinstance(e, Interrupted) else "Ctrl-C"
            raise SystemExit(f"roicurate: interrupted by {how}; {what}: nothing changed") from None
        except BaseException:
            _shielded(tx.rollback)
            raise


def os_error_line(e, what):
    """``x.hdf5: cannot write (No space left on device, ENOSPC)``; for a failed write into the temp copy of a
    library-written file (``fileguard.writing_copy``): ``x.hdf5: could not write the updated copy: No space left on
    device (ENOSPC)``. One line: a library's multi-line text is cut at its first line."""
    where = e.filename or what
    text = str(e.strerror or e).strip().splitlines()[0] if str(e.strerror or e).strip() else type(e).__name__
    name = errno_name(e)
    if isinstance(e, CopyWriteError):
        return f"{where}: could not write the updated copy: {text}" + (f" ({name})" if name else "")
    return f"{where}: cannot write ({text}" + (f", {name})" if name else ")")


_shield = {"on": False, "pending": False}


def _shielded(undo):
    """Run ``undo`` with SIGTERM deferred (a second signal must not stop an undo half-way); exit with one line
    afterwards if one came."""
    _shield["on"] = True
    try:
        return undo()
    finally:
        _shield["on"] = False
        if _shield.pop("pending", False):
            _shield["pending"] = False
            raise SystemExit("roicurate: interrupted by SIGTERM; the unit being written was left as it was")


# ---- atomic writes ---------------------------------------------------------------------------------------
def atomic_write(path, write):
    """Call ``write(file_object)`` on a temp file beside ``path``, then ``atomic_replace`` it into place. The temp
    file is removed on any failure (SIGTERM included, inside ``locked_transaction``)."""
    path = Path(path)
    refuse_symlink(path)                  # the last word: os.replace would turn the link into a regular file
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:
            write(f)
        atomic_replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_replace(tmp, path, mode_from=None):
    """Put the prepared temp file ``tmp`` (from ``temp_name(path)``: same folder) in the place of ``path``: fsync its
    bytes, give it the permissions of ``mode_from`` (default: the file it replaces; a new file gets the umask's),
    ``os.replace`` it and fsync the folder, so a crash leaves either the old file or the new one, never a mix. The
    caller removes ``tmp`` when this fails (``Transaction.created(tmp)`` does)."""
    path = Path(path)
    refuse_symlink(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    mode_from = mode_from if mode_from is not None else (path if path.exists() else None)
    if mode_from is not None:
        shutil.copymode(mode_from, tmp)
    else:
        os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_bytes(path, data):
    atomic_write(path, lambda f: f.write(data))


def create_new(path, data=None, copy_from=None):
    """Create ``path`` (bytes ``data``, or an independent copy of ``copy_from``) without ever replacing a file
    that exists: written to a temp file, then ``os.link``-ed to its name (FileExistsError if one appeared)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        if copy_from is not None:
            clone_or_copy(copy_from, tmp)
            shutil.copymode(copy_from, tmp)
        else:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        move_no_replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)                # after a failure; gone already after a success


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def free_name(folder, stem, suffix):
    """``stem-<UTC time>suffix`` in ``folder``, with -2, -3 ... if that name is taken."""
    base = f"{stem}-{stamp()}"
    name, i = f"{base}{suffix}", 2
    while (Path(folder) / name).exists():
        name, i = f"{base}-{i}{suffix}", i + 1
    return Path(folder) / name
