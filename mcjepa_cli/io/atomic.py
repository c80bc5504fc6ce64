"""Atomic file writes: a temporary file in the destination folder, flushed, fsynced, renamed.

A crash or a kill during a write leaves either the old file or the new one, never half of one.
A failed write (permission denied, read-only file system, disk full) raises an ``OSError`` that
names the destination, not the temporary file, and removes the temporary file; the command
line turns it into one line, ``error: <destination>: cannot write (<reason>)`` (exit code 2).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Writers that need a file name (imageio, torch.save, PNG encoders choosing the format by
    extension) write to the yielded path. ``suffix`` defaults to ``path``'s own suffix so
    extension-sniffing writers pick the right format.

    Raises:
        IsADirectoryError: ``path`` is an existing folder (checked before anything is written).
        OSError: the temporary file cannot be created, written or renamed; ``filename`` is
            ``path`` and the previous file at ``path``, if any, is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file name", str(path))
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix,
            dir=path.parent,
        )
    except OSError as e:
        raise _naming(e, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp creates 0600; results get the usual permissions
        os.chmod(tmp_path, mode)
        yield tmp_path
        os.chmod(tmp_path, mode)  # some writers (safetensors) recreate the file as 0600
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())  # a disk-full error may only surface here (NFS, quotas)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as e:
        # a write error of the temporary file (ENOSPC carries no file name at all) is the
        # destination's error; an OSError that names another file (an input) passes unchanged
        if e.filename is None or str(e.filename) == str(tmp_path):
            raise _naming(e, path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _naming(e: OSError, path: Path) -> OSError:
    """The same error (same class and errno) naming ``path``: ``cannot write (<reason>)``."""
    reason = e.strerror or str(e) or type(e).__name__
    reason = " ".join(reason.strip().split("\n", 1)[0].split())  # one line (imageio's are long)
    try:
        return type(e)(e.errno, f"cannot write ({reason})", str(path))
    except TypeError:  # a library's OSError subclass with its own constructor
        return OSError(e.errno, f"cannot write ({reason})", str(path))


def make_folder(folder: Path) -> None:
    """``mkdir -p`` whose failure names the folder and says why in words (OSError kept)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir -p through a file ("afile.txt/sub")
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       folder)
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder: cannot write "
                                 "inside it", str(blocker)) from None


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte of ``data`` is on ``fd``.

    The one low-level write behind ``atomic_write_bytes`` (and so behind every writer that
    encodes in memory first: JSON, ``.flo``, KITTI PNG, PFM, timm exports, visualize's PNG and
    GIF); tests simulate a full disk by replacing it.
    """
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_into(tmp: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` as the whole content of ``tmp`` (a path yielded by ``atomic_path``)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write_into(tmp, data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(file)`` on an in-memory binary file, then write it to ``path`` atomically."""
    buf = io.BytesIO()
    writer(buf)
    atomic_write_bytes(path, buf.getbuffer())


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically.

    Serialised in memory first: ``torch.save`` to a file name reports a full disk as a
    ``RuntimeError`` from its C++ zip writer ("file write failed"), not as an ``OSError``.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


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
