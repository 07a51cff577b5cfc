"""A run directory: one run at a time, files that are whole or absent, clear disk errors.

- `RunLock`: an advisory `fcntl.flock` on `DIR/.lock`, which holds the owner's pid. The
  kernel drops the lock when its process dies, so a lock left by a killed run is taken
  over by the next one; a live owner makes a second run fail at once, naming the pid.
- `atomic_write`: the bytes go to a temporary file with a unique name (`.NAME.PID-RANDOM.tmp`)
  in the same directory, are fsynced and renamed over the target; on any failure the
  temporary is removed. Files follow the umask like any other file the run writes.
- A full disk is reported as `NoSpaceLeft`, "no space left on device", with the path.
"""

from __future__ import annotations

import errno
import os
import re
import secrets

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None

LOCK = ".lock"
# Temporaries of this module, and the fixed names earlier versions used.
_TEMPORARY = re.compile(
    r"^\..+\.(\d+)-[0-9a-f]+\.tmp$|^\.checkpoint-.*\.tmp$|.*\.tmp\.png$|.*\.(csv|json)\.tmp$"
)


class RunError(RuntimeError):
    """A run cannot go on; the message says why and what was kept. No traceback needed."""


class RunDirectoryBusy(RunError):
    """Another live process holds the run directory's lock."""


class NoSpaceLeft(RunError):
    """The disk filled up while writing a run file; the previous version of it is kept."""

    errno = errno.ENOSPC


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _os_error(exc: OSError, path: str, what: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceLeft(f"no space left on device while writing {path}; {what}")
    return exc


def atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to `path` so that `path` is either its old or its new self."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            error = _os_error(exc, path, "its previous version is left as it was")
            if error is not exc:
                raise error from exc
        raise


def remove_stale_temporaries(folder: str) -> list[str]:
    """Deletes temporaries that runs killed mid-write left in `folder` (call with the lock
    held: no live run writes there then); returns their names."""
    removed = []
    for name in os.listdir(folder):
        if _TEMPORARY.match(name) and os.path.isfile(os.path.join(folder, name)):
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


def check_writable(folder: str) -> None:
    """Creates and deletes a probe file, so a read-only directory is found before training."""
    probe = os.path.join(folder, f".write-probe.{os.getpid()}-{secrets.token_hex(4)}")
    try:
        _probe(probe)
    except OSError as exc:
        error = _os_error(exc, probe, "free some space before training")
        if error is not exc:
            raise error from exc
        raise ValueError(
            f"--out {folder}: the run directory is not writable ({exc.strerror})"
        ) from None


def _probe(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"probe")
    os.unlink(path)


class RunLock:
    """Holds `folder/.lock` for the life of a run (a context manager)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirectoryBusy(
                    f"{self.folder} is in use by another run (pid {owner}); wait for it to "
                    "finish or choose another --out"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # The file stays: removing it would let a third run lock a new inode while a
        # second one still waits on the old one.
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
