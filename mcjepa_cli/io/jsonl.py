"""Reading ``metrics.jsonl``: one JSON object per line, each with a whole-number ``step``.

The trainer (keeping the records up to a resumed step) and ``mcjepa report`` (plotting them)
read the file through :func:`step_records`, so they agree on which lines are records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def step_records(path: Path) -> Iterator[tuple[bool, str | None, dict[str, Any] | None]]:
    """Every non-blank line of ``path`` as ``(is_last_line, text, record)``.

    ``record`` is None (and ``text`` None where it is not UTF-8) for a line that is not a JSON
    object with a whole-number ``step``: a damaged line, or the last line half-written by a kill.
    """
    lines = path.read_bytes().split(b"\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield last, None, None
            continue
        try:
            rec = json.loads(text)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or isinstance(rec.get("step"), bool) \
                or not isinstance(rec.get("step"), int):
            rec = None
        yield last, text, rec
