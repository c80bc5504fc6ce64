"""User-facing errors: one clear line, exit code 2, no traceback (DESIGN.md section 4)."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad usage or bad input. Printed as ``error: <culprit>: <expected>`` with exit code 2.

    Args:
        culprit: the file, key, option or value at fault (a path is shown as given).
        expected: what was expected instead, or what went wrong, in a few words.
    """

    exit_code = 2

    def __init__(self, culprit: str | Path, expected: str) -> None:
        # a culprit may come from user data (a YAML key, a file name): keep it on one line
        self.culprit = str(culprit).replace("\r", "\\r").replace("\n", "\\n")
        self.expected = " ".join(str(expected).split())  # always one line
        super().__init__(f"{self.culprit}: {self.expected}")

    def one_line(self) -> str:
        return f"error: {self}"


class RunFailed(Exception):
    """The run itself failed (exit code 1), e.g. too many non-finite steps in a row."""

    exit_code = 1

    def one_line(self) -> str:
        return "error: " + " ".join(str(self).split())
