"""Start-up cost of the CLI: ``python benchmarks/startup.py``.

CPU seconds (user + system, the least of 3 fresh interpreters) of ``import mcjepa_cli.main``,
``mcjepa --version``, ``--help`` and ``pretrain --help``, against a budget of 1 CPU-second
each and as a ratio to ``import torch`` (what the lazy command imports avoid). Exit code 1 when
one is over budget. tests/test_cli_speed.py checks the behaviour behind it (no torch, numpy,
timm or torchvision loaded at start-up or by any ``--help``).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

BUDGET_S = 1.0
TRIES = 3
CASES = {
    "import mcjepa_cli.main": ("-c", "import mcjepa_cli.main"),
    "mcjepa --version": ("-m", "mcjepa_cli", "--version"),
    "mcjepa --help": ("-m", "mcjepa_cli", "--help"),
    "mcjepa pretrain --help": ("-m", "mcjepa_cli", "pretrain", "--help"),
}


def least_cpu_s(*args: str) -> float:
    best = float("inf")
    for _ in range(TRIES):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "120"}, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            raise SystemExit(f"python {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
        best = min(best, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return best


def main() -> int:
    torch_s = least_cpu_s("-c", "import torch")
    print(f"{'invocation':<26}{'CPU-s':>8}{'/ import torch':>16}  budget {BUDGET_S} CPU-s")
    over = 0
    for name, args in CASES.items():
        spent = least_cpu_s(*args)
        over += spent >= BUDGET_S
        verdict = "ok" if spent < BUDGET_S else "OVER"
        print(f"{name:<26}{spent:>8.2f}{spent / torch_s:>16.3f}  {verdict}")
    print(f"{'import torch (reference)':<26}{torch_s:>8.2f}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
