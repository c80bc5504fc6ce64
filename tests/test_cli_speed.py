"""`mcjepa --help`, `--version` and `COMMAND --help` load no torch at start-up (issue 23).

The command modules under ``mcjepa_cli/commands/`` are imported to register the commands, so
they must import only the light modules (Typer, ``mcjepa_cli.errors``) at module level; torch,
timm, torchvision and numpy are imported inside the command functions. The CPU time this saves
(about 4 CPU-seconds of ``import torch``) is measured by ``benchmarks/startup.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "torchvision", "timm", "numpy")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )


_PROBE = f"""
import contextlib, io, json, sys
import typer
import mcjepa_cli.main as m
heavy = {HEAVY!r}
seen = {{"import": [h for h in heavy if h in sys.modules]}}

def walk(cmd, path):
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {{}}).items()):
        yield from walk(sub, [*path, name])

for path in walk(typer.main.get_command(m.app), []):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = m.app([*path, "--help"], standalone_mode=False)
    seen[" ".join([*path, "--help"])] = [h for h in heavy if h in sys.modules] or code
print(json.dumps(seen))
"""


def test_no_heavy_module_at_start_up_or_for_any_help() -> None:
    """After `import mcjepa_cli.main`, and after every `COMMAND --help`, no torch, no numpy."""
    r = _run("-c", _PROBE)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen.pop("import") == [], "import mcjepa_cli.main imports a heavy module"
    assert {"--help", "pretrain --help", "datasets check --help"} <= seen.keys()
    loaded = {k: v for k, v in seen.items() if v != 0}  # 0: help printed, nothing heavy loaded
    assert not loaded, f"heavy modules loaded (or a non-zero exit code) by: {loaded}"


def test_visualize_panel_choices_match_the_renderer() -> None:
    """`visualize --help` lists the panels from its own copy of the renderer's tuple."""
    from mcjepa_cli.commands.visualize import PANEL_CHOICES
    from mcjepa_cli.viz.run import PANEL_CHOICES as RENDERED

    assert PANEL_CHOICES == RENDERED
