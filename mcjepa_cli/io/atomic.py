"""Atomic file writes: a temporary file in the destination folder, flushed, fsynced, renamed.

A crash or a kill during a write leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Writers that need a file name (imageio, torch.save, PNG encoders choosing the format by
    extension) write to the yielded path. ``suffix`` defaults to ``path``'s own suffix so
    extension-sniffing writers pick the right format.
    """
    path = Path(path)
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix,
        dir=path.parent,
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask  # mkstemp creates 0600; results get the usual permissions
    os.chmod(tmp, mode)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)  # some writers (safetensors) recreate the file as 0600
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def make_folder(folder: Path) -> None:
    """``mkdir -p`` whose failure names the folder and says why in words (OSError kept)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir -p through a file ("afile.txt/sub")
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       folder)
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder: cannot write "
                                 "inside it", str(blocker)) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(file)`` on a temporary binary file, then rename it onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer(f)
        f.flush()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
