"""``--json FILE`` outputs, where ``-`` means standard output (as most command-line tools read it).

With ``--json -`` the command's JSON is the only thing on stdout, so it can be piped into ``jq``
or another program; its tables, progress and log lines go to stderr instead
(:func:`human_output_to_stderr`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from mcjepa_cli.io.atomic import atomic_write_text

STDOUT = "-"
_json_stream: list[TextIO] = []  # the real stdout while human output is sent to stderr


def is_stdout(path: str | Path | None) -> bool:
    return path is not None and str(path) == STDOUT


@contextlib.contextmanager
def human_output_to_stderr(json_path: str | Path | None) -> Iterator[None]:
    """Inside this block, send everything printed to stderr when ``json_path`` is ``-``."""
    if not is_stdout(json_path):
        yield
        return
    _json_stream.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stream.pop()


def write_json_text(path: str | Path, text: str) -> None:
    """Write JSON ``text`` to ``path`` atomically, or to standard output for ``-``."""
    if is_stdout(path):
        stream = _json_stream[-1] if _json_stream else sys.stdout
        stream.write(text)
        stream.flush()
    else:
        atomic_write_text(path, text)
