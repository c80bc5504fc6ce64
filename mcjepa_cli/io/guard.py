"""Outputs never land on inputs: the checks a command runs before it writes anything (issue 25).

A command lists what it reads in an ``Inputs`` (files, and folders such as the evaluated
dataset into which no output may go) and passes every output path through
``Inputs.check_output``; ``check_writable`` then tells, before any work, whether the output
can be created at all. Paths are compared after ``~``, ``..`` and symbolic links are resolved,
so ``--json data/../data/gt.flo`` or a symlinked folder is caught as well.

Every refusal is a ``UserError`` naming the option and the path as given: one line on the
command line, exit code 2, and nothing written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mcjepa_cli.errors import UserError


def real_path(path: str | Path) -> Path:
    """``path`` with ``~``, ``..`` and symbolic links resolved (it need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


@dataclass
class Inputs:
    """What a command reads: files, and folders that no output may be written into.

    Attributes:
        files: resolved path -> what it is, in words ("the checkpoint").
        folders: resolved path -> what it is ("the dataset folder").
    """

    files: dict[Path, str] = field(default_factory=dict)
    folders: dict[Path, str] = field(default_factory=dict)

    def add_file(self, path: str | Path | None, what: str) -> None:
        """Record an input file (None is ignored)."""
        if path is not None:
            self.files.setdefault(real_path(path), what)

    def add_folder(self, path: str | Path | None, what: str) -> None:
        """Record a folder that no output may be, or lie inside (None is ignored)."""
        if path is not None:
            self.folders.setdefault(real_path(path), what)

    def check_output(self, flag: str, output: str | Path, *, given: str | Path | None = None
                     ) -> None:
        """Refuse ``output`` if it is an input file, or is or lies inside an input folder.

        Args:
            flag: the option that names the output (``--json``), shown in the error.
            output: the path that would be written (a file, or a folder to write into).
            given: the path as the user gave it, when ``output`` is a file inside it (one
                prediction file of ``--save-predictions DIR``); default ``output``.

        Raises:
            UserError: ``<flag> <given>: ...`` naming the input it would replace.
        """
        shown = output if given is None else given
        culprit = f"{flag} {shown}"
        out = real_path(output)
        where = "" if given is None else f"its file {output} "
        for folder, what in self.folders.items():
            if out == folder or folder in out.parents:
                relation = "is" if out == folder else "lies inside"
                raise UserError(culprit, f"{where}{relation} {what} {folder}, which this "
                                "command reads; refusing to write there (nothing was written): "
                                "choose a path outside it")
        what = self.files.get(out)
        if what is not None:
            would = f"{where}would replace" if given is not None else "is"
            raise UserError(culprit, f"{would} {what} {out}, which this command reads; "
                            "refusing to overwrite it (nothing was written): choose another path")


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat`` of ``path``, None where it does not exist (or a path component is a file)."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_writable(flag: str, output: str | Path, *, folder: bool = False) -> None:
    """Tell now, without writing anything, whether ``output`` can be created later.

    Checks that ``output`` (a file, or with ``folder`` a folder to write into) is not an
    existing folder (file) and that its nearest existing parent is a folder this process may
    write into on a writable file system. A full disk cannot be foreseen: the atomic writers
    report it when it happens (``mcjepa_cli.io.atomic``).

    Raises:
        UserError: ``<flag> <output>: ...`` saying what is in the way.
    """
    path = Path(output).expanduser()
    culprit = f"{flag} {output}"
    try:
        st = _stat(path)
        if st is not None and not folder and os.path.isdir(path):
            raise UserError(culprit, "is an existing folder; expected a file name")
        if st is not None and folder and not os.path.isdir(path):
            raise UserError(culprit, "is an existing file; expected a folder")
        start = path if folder else path.parent
        for parent in (start, *start.parents):
            if _stat(parent) is not None:
                break
        else:  # pragma: no cover - the root folder always exists
            return
        if not os.path.isdir(parent):
            raise UserError(culprit, f"{parent} is a file, not a folder: cannot write inside it")
        if not os.access(parent, os.W_OK | os.X_OK):
            read_only = hasattr(os, "statvfs") and bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
            reason = "read-only file system" if read_only else "permission denied"
            raise UserError(culprit, f"cannot write in {parent} ({reason})")
    except PermissionError as e:  # a parent that may not even be looked into
        raise UserError(culprit, f"cannot write in {e.filename or path} (permission denied)"
                        ) from None


__all__ = ["Inputs", "check_writable", "real_path"]
