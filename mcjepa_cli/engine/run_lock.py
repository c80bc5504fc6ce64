"""One writer per run directory.

``pretrain`` holds an advisory lock on ``<run>/.mcjepa-run.lock`` for the run's whole life: a
second ``pretrain`` on the same folder (a fresh run, ``--resume`` or ``--overwrite``) is refused
with the holder's pid. The lock is the kernel's (``flock``): it goes away with the process on
any exit, a kill included, so the lock of a dead process is never in the way; the pid written in
the file is only what the refusal quotes. The file stays when the run ends and marks the folder
as a run directory (what ``--overwrite`` and ``--resume --output`` may write into).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from mcjepa_cli.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second writer
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".mcjepa-run.lock"


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` is an mcjepa run directory: a run started there (its lock file) or,
    for runs older than the lock, it holds ``checkpoints/last.pt``."""
    return (folder / LOCK_NAME).is_file() or (folder / "checkpoints" / "last.pt").is_file()


def user_files(folder: Path) -> list[Path]:
    """The entries of ``folder`` other than the run lock (what makes a folder non-empty)."""
    return [p for p in folder.iterdir() if p.name != LOCK_NAME] if folder.is_dir() else []


class RunLock:
    """The run directory's lock; ``acquire()`` refuses with one line when another process
    holds it. Released by ``release()`` or by the process ending, however it ends."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None
        self.previous_holder = ""  # what the file said when taken over (a dead process's pid)

    def acquire(self) -> None:
        try:  # a resumed run's new --output folder
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(self.path.parent, f"cannot create the run directory ({e.strerror or e})") from None
        if fcntl is None:
            return
        if self.path.is_dir() or self.path.is_symlink():
            raise UserError(self.path, "expected the run's lock file, found a folder or a link: "
                            "remove it")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(self.path, f"cannot create the run lock ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise UserError(self.path, f"cannot lock the run directory ({e.strerror or e})") from None
            raise UserError(self.path.parent, f"another mcjepa pretrain ({holder or 'pid unknown'}) "
                            "is writing to this run directory; wait for it to end or choose "
                            "another --output") from None
        self.previous_holder = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:  # an empty file: the run ended normally (a killed holder leaves its pid)
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
