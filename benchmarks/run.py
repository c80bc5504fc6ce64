"""Throughput and memory benchmarks of mcjepa: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

Runs the figures in order (or ``--only NAME``), prints a rich table of every comparison with
its target, and writes all measurements, options and the machine description to a JSON file
(atomically). docs/benchmarks.md describes every figure and its shapes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    SCHEMA, BenchContext, environment, load_average, now_iso, to_jsonable,
)

FIGURES = ("flow_inference", "pretrain_step", "cost_volume", "data", "memory", "video")
DEFAULT_OUTPUT = "benchmarks/results/benchmarks-{device}.json"


EPILOG = """\
modes:
  full (default, or --full)  the sizes of docs/benchmarks.md: flow at 448x1024 vs RAFT,
                             ConvNeXt-T and quickstart training steps, cost volume at the
                             paper's pyramid shapes; 3 timed repeats after 1 warm-up; peak
                             memory in a fresh process per figure. About 10-20 minutes on
                             2 CPU cores; a minute or two on a GPU.
  quick (--quick)            smoke test: tiny models and sizes, 1 repeat, no warm-up,
                             memory measured in this process. Seconds; its figures are
                             not meaningful.

A shared CPU: run under `nice` and pass --threads 1 (OpenMP threads that wait for a
descheduled sibling make every figure noisy); ratios are timed side by side (interleaved
repeats), so load hits both sides of a comparison alike. The load average is recorded.

examples:
  python -m benchmarks --quick
  python -m benchmarks --device cpu --threads 1
  python -m benchmarks --only flow_inference,video --repeats 5
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="quick mode: tiny sizes and models, one repeat, memory measured in-process "
                           "(smoke test)")
    mode.add_argument("--full", action="store_false", dest="quick",
                      help="full mode (the default): the documented sizes, 3 repeats after 1 warm-up, "
                           "memory in a fresh process per figure")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only this figure (repeatable or comma-separated): {', '.join(FIGURES)}")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 3; 1 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per case first (default 1; 0 with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this run (default: torch's)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast dtype: auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction,
                   default=True, help="channels-last memory format for every model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile our model and the bare step")
    p.add_argument("--memory", choices=("subprocess", "inline"), default=None,
                   help="peak-memory probes in a fresh process each (default) or in this one (--quick default)")
    p.add_argument("--output", default=None, help=f"JSON result file (default {DEFAULT_OUTPUT})")
    return p


def _figures(only: list[str]) -> list[str]:
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise SystemExit(f"error: --only {unknown[0]}: expected one of {', '.join(FIGURES)}")
    return [f for f in FIGURES if f in names] if names else list(FIGURES)


def make_context(args: argparse.Namespace) -> BenchContext:
    from mcjepa_cli.engine.device import resolve_device, resolve_precision
    from mcjepa_cli.errors import UserError

    try:
        device = resolve_device(args.device)
        autocast = resolve_precision(args.precision, device)
    except UserError as e:
        raise SystemExit(f"error: {e.culprit}: {e.expected}") from None
    return BenchContext(
        device=device, quick=args.quick,
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3),
        warmup=args.warmup if args.warmup is not None else (0 if args.quick else 1),
        channels_last=args.channels_last, compile=args.compile, autocast=autocast,
        memory=args.memory or ("inline" if args.quick else "subprocess"))


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _fmt_ratio(r: dict[str, Any]) -> tuple[str, str, str]:
    value = r.get("value")
    target = r.get("target")
    op = "<=" if r.get("better", "lower") == "lower" else ">="
    met = r.get("met")
    return (f"{value:.3f}" if value is not None else "-",
            f"{op} {target:g}" if target is not None else "",
            "" if met is None else ("yes" if met else "NO"))


def render(results: dict[str, Any]) -> None:
    """Print one rich table per figure plus the summary of every target."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    env = results["environment"]
    opts = results["options"]
    git = env.get("git") or {}
    console.print(f"[bold]mcjepa benchmarks[/bold] {results['created']}  {env['device_name']} "
                  f"({env['device']}, {env['cpu_count']} CPUs), {env['torch_threads']} threads, "
                  f"torch {env['versions']['torch']}, torchvision {env['versions']['torchvision']}, "
                  f"timm {env['versions']['timm']}, git {git.get('commit', '?')}"
                  f"{' (dirty)' if git.get('dirty') else ''}")
    console.print(f"load average {env['load_average']} at start, {env.get('load_average_end')} at end; "
                  f"repeats {opts['repeats']} after {opts['warmup']} warm-up; {opts['precision']}; "
                  f"memory probes: {opts['memory']}"
                  f"{'; wall %.0f s' % results['wall_s'] if 'wall_s' in results else ' (stopped early)'}"
                  f"{'  [QUICK: not meaningful]' if opts['quick'] else ''}")
    summary = Table(title="Targets", show_lines=False)
    for col in ("figure", "comparison", "ratio", "target", "met"):
        summary.add_column(col, justify="right" if col in ("ratio", "target") else "left")
    for name, fig in results["figures"].items():
        if "error" in fig:
            summary.add_row(name, f"[red]failed: {fig['error'].splitlines()[-1][:80]}[/red]", "", "", "")
            continue
        detail = Table(title=fig["title"], caption=_caption(fig))
        detail.add_column("case")
        detail.add_column("median", justify="right")
        detail.add_column("min", justify="right")
        detail.add_column("extra", justify="right")
        for e in fig.get("entries", []):
            extra = []
            if e.get("gflops"):
                extra.append(f"{e['gflops']:.0f} GFLOP")
            if e.get("samples_per_s") is not None:
                extra.append(f"{e['samples_per_s']:.1f} {e['unit']}/s (step uses "
                             f"{e['step_consumes_per_s']:.1f})")
            detail.add_row(e["label"], _fmt_s(e["median_s"]), _fmt_s(e["min_s"]), ", ".join(extra))
        for row in fig.get("rows", []):
            _row_lines(detail, name, row)
        console.print(detail)
        for r in fig.get("ratios", []):
            summary.add_row(name, r["name"], *_fmt_ratio(r))
    console.print(summary)


def _caption(fig: dict[str, Any]) -> str:
    """The figure's setup (batch sizes, resolutions, options) on one or two lines."""
    parts = [f"{k}={v}" for k, v in fig.get("setup", {}).items()
             if isinstance(v, (int, float, str, list, dict)) and len(str(v)) < 120]
    load = fig.get("load_average", {}).get("start")
    return "; ".join(parts) + (f"; load {load[0]:.1f}" if load else "")


def _row_lines(table, name: str, row: dict[str, Any]) -> None:
    if name == "pretrain_step":
        mem = row.get("memory", {})
        for side in ("ours", "bare"):
            m = mem.get(side, {})
            table.add_row(f"{row['recipe']} {side}: {row['shape']}", _fmt_s(row[side]["median_s"]),
                          _fmt_s(row[side]["min_s"]),
                          f"peak {m.get('peak_mb', 0):.0f} MiB (+{m.get('increase_mb', 0):.0f})" if m else "")
    elif name == "cost_volume":
        for impl in ("ours", "shift", "naive"):
            m = row.get("memory", {}).get(impl)
            table.add_row(f"stride {row['stride']} {tuple(row['shape'])} {impl}",
                          _fmt_s(row[impl]["median_s"]), _fmt_s(row[impl]["min_s"]),
                          f"+{m['increase_mb']:.0f} MiB" if m else "")
    elif name == "memory":
        table.add_row(f"{row['recipe']}: {row['shape']}", "", "",
                      f"peak {row['peak_mb']:.0f} MiB (+{row['increase_mb']:.0f} over setup)")


def run(args: argparse.Namespace, output: Path | None = None) -> dict[str, Any]:
    """Run the selected figures and return the full result document.

    With ``output``, the document is also written (atomically) after every figure, so a long
    run that is stopped keeps the figures it finished.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = make_context(args)
    names = _figures(args.only)
    started = time.time()
    results: dict[str, Any] = {
        "schema": SCHEMA, "created": now_iso(), "command": " ".join(sys.argv),
        "environment": environment(ctx.device),
        "options": {"device": str(ctx.device), "quick": ctx.quick, "repeats": ctx.repeats,
                    "warmup": ctx.warmup, "channels_last": ctx.channels_last, "compile": ctx.compile,
                    "precision": str(ctx.autocast) if ctx.autocast else "fp32",
                    "memory": ctx.memory, "only": names},
        "figures": {},
    }
    for name in names:
        t0 = time.time()
        load = load_average()
        print(f"[benchmarks] {name} (load {load}) ...", file=sys.stderr, flush=True)
        try:
            fig = importlib.import_module(f"benchmarks.{name}").run(ctx)
        except Exception as e:  # one failed figure must not lose the others' numbers
            if os.environ.get("MCJEPA_BENCH_RAISE"):
                raise
            fig = {"name": name, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}
        fig["wall_s"] = time.time() - t0
        fig["load_average"] = {"start": load, "end": load_average()}
        results["figures"][name] = fig
        if output is not None:
            _write(output, to_jsonable(results))
    results["wall_s"] = time.time() - started
    results["environment"]["load_average_end"] = load_average()
    return to_jsonable(results)


def _write(path: Path, results: dict[str, Any]) -> None:
    from mcjepa_cli.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output or DEFAULT_OUTPUT.format(device=str(make_context(args).device).replace(":", "")))
    results = run(args, out)
    _write(out, results)
    render(results)
    print(f"results: {out}", file=sys.stderr)
    failed = [n for n, f in results["figures"].items() if "error" in f]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
