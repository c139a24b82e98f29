"""Guards around a file roicurate is about to replace (used by ``roicurate.safeio``; imports nothing of roicurate but
``common``):

* ``refuse_symlink(path)``: a symbolic link is refused with one line. Replacing it atomically would turn it into a
  regular file (the link gone); writing through it would change a file in another folder, outside the lock roicurate
  holds and outside the folder the user named (often a shared, read-only-by-convention copy).
* ``open_writers(path)`` / ``refuse_open_writers(path)``: other processes that hold ``path`` open for writing (Linux:
  ``/proc/PID/fd`` links to the file and ``/proc/PID/fdinfo`` flags with O_WRONLY or O_RDWR). Such a process keeps
  writing to the inode roicurate replaces, so its later writes would be lost; with HDF5 file locking off
  (``HDF5_USE_FILE_LOCKING=FALSE``) nothing else tells. Processes of other users are seen only by root.
* ``move_no_replace(tmp, path)``: the name change behind ``safeio.create_new``, never leaving a second link.
* ``FailSoftFile``: a raw file for a library that writes through a Python file object (h5py's ``fileobj`` driver).
  The first failing write or truncate (ENOSPC, EIO) is remembered and the later ones skipped, so the library itself
  never sees an I/O error and closes its file cleanly (HDF5 left half-flushed raises ``Can't decrement id ref
  count`` on close, at garbage collection, or crashes at exit); ``writing_copy`` then raises one ``CopyWriteError``.
"""
import contextlib
import ctypes
import errno
import gc
import io
import os
import sys
import time
from pathlib import Path

from roicurate.common import RoicurateError


class CopyWriteError(OSError):
    """Writing the updated temp copy of ``filename`` failed (``errno``, ``strerror`` of the first failure)."""


def errno_name(e):
    """``ENOSPC`` for an OSError with errno 28, "" without an errno."""
    return errno.errorcode.get(e.errno, "") if isinstance(getattr(e, "errno", None), int) else ""


def refuse_symlink(path):
    path = Path(path)
    if path.is_symlink():
        raise RoicurateError(f"{path}: is a symbolic link (to {os.readlink(path)}); roicurate replaces files "
                             f"atomically and would turn it into a regular file: replace the link by a copy of its "
                             f"target, or curate the target's folder; nothing written")


def open_writers(path):
    """[(pid, command name)] of other processes holding ``path`` open for writing ([] where /proc is missing)."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    found = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    for pid in pids:
        if _writes(pid, target):
            found.append((int(pid), _command(pid)))
    return found


def _writes(pid, target):
    """Whether process ``pid`` has a descriptor open for writing on the file ``target`` (an os.stat result)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:                       # gone, or another user's process (not root)
        return False
    for fd in fds:
        try:
            st = os.stat(f"{fd_dir}/{fd}")            # follows the magic link: the open file itself
            if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            return True
    return False


def _command(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def refuse_open_writers(path):
    writers = open_writers(path)
    if writers:
        who = ", ".join(f"{name} (pid {pid})" for pid, name in writers[:3])
        raise RoicurateError(f"{path}: open for writing by {who}; its later writes would go to the file roicurate "
                             f"replaces and be lost: close it there first; nothing written")


RENAME_NOREPLACE = 1                      # linux/fs.h


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def move_no_replace(tmp, path):
    """Give the file ``tmp`` the name ``path``, failing with FileExistsError if ``path`` exists, and leave no second
    name behind: ``renameat2(RENAME_NOREPLACE)`` (Linux >= 3.15, most local filesystems), else ``os.link`` and an
    unlink of ``tmp``, retried; if that unlink keeps failing the new name is taken back and the error raised, so a
    stray second link never comes with success."""
    fn = _renameat2()
    if fn is not None:
        AT_FDCWD = -100
        if fn(AT_FDCWD, os.fsencode(tmp), AT_FDCWD, os.fsencode(path), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(path))
    os.link(tmp, path)
    for attempt in range(5):
        try:
            os.unlink(tmp)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if attempt == 4:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise OSError(e.errno, f"{e.strerror}: cannot remove the temp file's second name, so {Path(path).name} "
                              f"was not created", str(tmp)) from None
            time.sleep(0.05 * (attempt + 1))


class FailSoftFile(io.RawIOBase):
    """Read/write access to an existing file through ``os.pread`` / ``os.pwrite`` that never raises on a write:
    see the module docstring. ``error``: the first OSError, or None."""

    def __init__(self, path):
        super().__init__()
        self.fd = os.open(path, os.O_RDWR)
        self.pos, self.error = 0, None

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=os.SEEK_SET):
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos}.get(whence)
        self.pos = (os.fstat(self.fd).st_size if base is None else base) + offset
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buffer):
        try:
            data = os.pread(self.fd, len(buffer), self.pos)
        except OSError as e:
            self.error = self.error or e
            raise
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def write(self, data):
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):
            try:
                done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self.error = e
        self.pos += len(view)
        return len(view)

    def truncate(self, size=None):
        size = self.pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                self.error = e
        return size

    def close(self):
        if not self.closed:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        super().close()


@contextlib.contextmanager
def writing_copy(tmp, path):
    """Yield a ``FailSoftFile`` on the temp copy ``tmp`` of ``path``; the caller opens, changes and closes its library
    file on it inside the block. A failed write (or any error after one) becomes one ``CopyWriteError`` naming
    ``path``; the library's late complaints while its objects are collected are silenced. The caller's transaction
    removes ``tmp``."""
    raw = FailSoftFile(tmp)
    try:
        try:
            yield raw
        except Exception:
            if raw.error is None:
                raise
            _collect_quietly()            # a secondary error caused by the failed write: the write is the reason
    finally:
        raw.close()
    if raw.error is not None:
        e = raw.error
        raise CopyWriteError(e.errno, e.strerror or str(e), str(path))


def _collect_quietly():
    """Collect what the library left open after a failure, without its ``Exception ignored in`` lines on stderr."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
