"""`mcjepa --help`, `--version` and `COMMAND --help` are fast: no torch at start-up (issue 23).

The command modules under ``mcjepa_cli/commands/`` are imported to register the commands, so
they must import only the light modules (Typer, ``mcjepa_cli.errors``) at module level; torch,
timm, torchvision and numpy are imported inside the command functions. Importing torch alone
costs about 4 CPU-seconds, so a regression shows up here as several times the budget.

Costs are CPU seconds (user + system) of a fresh interpreter, not wall time: a busy machine
stretches wall time, not the work done. Each is the least of up to three tries (the first may
also write ``.pyc`` files).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

BUDGET_S = 1.0  # CPU seconds; about 0.1-0.4 today on a loaded 2-core machine
HEAVY = ("torch", "torchvision", "timm", "numpy")
TRIES = 3


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )


def _least_cpu_s(*args: str) -> float:
    """The least CPU time of up to ``TRIES`` runs of ``python ARGS`` (stops once in budget)."""
    best = float("inf")
    for _ in range(TRIES):
        before = _children_cpu_s()
        r = _run(*args)
        spent = _children_cpu_s() - before
        assert r.returncode == 0, f"python {' '.join(args)} exited {r.returncode}:\n{r.stderr}"
        best = min(best, spent)
        if best < BUDGET_S:
            break
    return best


@pytest.mark.parametrize(
    "args",
    [
        ("-c", "import mcjepa_cli.main"),
        ("-m", "mcjepa_cli", "--version"),
        ("-m", "mcjepa_cli", "--help"),
        ("-m", "mcjepa_cli", "pretrain", "--help"),
    ],
    ids=["import", "--version", "--help", "pretrain --help"],
)
def test_start_up_costs_under_a_cpu_second(args: tuple[str, ...]) -> None:
    spent = _least_cpu_s(*args)
    assert spent < BUDGET_S, (
        f"python {' '.join(args)} took {spent:.2f} CPU-s (budget {BUDGET_S}): a module imported "
        "at start-up imports torch or another heavy library; see "
        "`python -X importtime -c 'import mcjepa_cli.main'`"
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
