"""Shared machinery of the benchmark suite: interleaved timing, peak memory probes, environment.

Timing: every case is warmed up, then the cases of a figure are run in turn, repeat after
repeat, the order reversed on every other repeat (A B, B A, ...), so a change in machine load
hits all of them alike. A figure reports each case's median and, for a comparison, both the
ratio of medians and the median of the per-repeat ratios (the latter is the robust one on a
shared machine).

Memory: peak memory of one operation is measured in a fresh Python process per case
(``python -m benchmarks.probe``), because a process's peak RSS (``ru_maxrss``) never goes
down: on CPU the peak resident set (VmHWM, else ``ru_maxrss``) minus the resident set just
before the operation; on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "mcjepa-benchmarks/1"
PROBE_MARK = "BENCHMARK-PROBE-RESULT "


@dataclass
class BenchContext:
    """Options shared by every figure.

    Attributes:
        device: where models run.
        quick: tiny sizes, one repeat (smoke test); figures say which sizes they used.
        repeats: timed repeats per case (the median is reported).
        warmup: untimed runs per case before timing.
        channels_last: run models and inputs in channels-last memory format.
        compile: wrap our model in ``torch.compile`` (inference and training step).
        autocast: autocast dtype (bf16 on CUDA by default), None for fp32.
        memory: ``subprocess`` (a fresh process per memory figure) or ``inline``.
        cache: results shared between figures (e.g. the quickstart step rate).
    """

    device: torch.device
    quick: bool = False
    repeats: int = 3
    warmup: int = 1
    channels_last: bool = True
    compile: bool = False
    autocast: torch.dtype | None = None
    memory: str = "subprocess"
    cache: dict[str, Any] = field(default_factory=dict)

    def sync(self) -> None:
        """Wait for queued device work (a no-op on CPU); called only around timed regions."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast_ctx(self):
        """Autocast context for the configured precision (disabled for fp32)."""
        return torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                              enabled=self.autocast is not None)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def probe_options(self) -> dict[str, Any]:
        """The options a memory probe needs to rebuild this context in a fresh process."""
        return {"device": str(self.device), "quick": self.quick, "channels_last": self.channels_last,
                "compile": self.compile,
                "autocast": None if self.autocast is None else str(self.autocast).split(".")[-1]}


def context_from_options(opts: dict[str, Any]) -> BenchContext:
    """Inverse of ``BenchContext.probe_options`` (used inside probe processes)."""
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(opts.get("autocast") or "")
    return BenchContext(device=torch.device(opts["device"]), quick=bool(opts["quick"]), repeats=1,
                        warmup=0, channels_last=bool(opts["channels_last"]),
                        compile=bool(opts["compile"]), autocast=dtype, memory="inline")


# ---------------------------------------------------------------------------------------
# timing


@dataclass
class Case:
    """One timed operation."""

    label: str
    run: Callable[[], Any]


def time_cases(ctx: BenchContext, cases: list[Case],
               flops: bool = False) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """Wall-clock seconds of each case over ``ctx.repeats`` interleaved repeats.

    Each call is bracketed by device synchronisations (CUDA); nothing inside is synchronised.
    With ``flops``, the first warm-up call of each case runs under PyTorch's FLOP counter
    (at least one warm-up call is then made).

    Returns:
        (seconds per case, FLOPs per case (None when not counted)).
    """
    counted: dict[str, float | None] = {c.label: None for c in cases}
    for case in cases:
        for i in range(max(ctx.warmup, 1 if flops else 0)):
            if flops and i == 0:
                counted[case.label] = count_flops(case.run)
            else:
                case.run()
    ctx.sync()
    times: dict[str, list[float]] = {c.label: [] for c in cases}
    for rep in range(ctx.repeats):
        order = cases if rep % 2 == 0 else list(reversed(cases))
        for case in order:
            ctx.sync()
            t0 = time.perf_counter()
            case.run()
            ctx.sync()
            times[case.label].append(time.perf_counter() - t0)
    return times, counted


def summarize(times: list[float]) -> dict[str, Any]:
    """Median, min, max and every sample of a list of durations (seconds)."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": list(times), "repeats": len(times)}


def ratio(num: list[float], den: list[float], target: float | None = None,
          name: str = "", better: str = "lower") -> dict[str, Any]:
    """Compare two interleaved series: ratio of medians and median of per-repeat ratios.

    ``met`` judges the per-repeat median against ``target`` (``better`` = lower: at most).
    """
    med = statistics.median(num) / statistics.median(den)
    paired = statistics.median(a / b for a, b in zip(num, den))
    out: dict[str, Any] = {"name": name, "ratio_of_medians": med, "median_of_ratios": paired,
                           "value": paired, "target": target, "better": better}
    if target is not None:
        out["met"] = bool(paired <= target) if better == "lower" else bool(paired >= target)
    return out


# ---------------------------------------------------------------------------------------
# memory


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    kb = _proc_status_kb("VmRSS")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def peak_memory(ctx: BenchContext, fn: Callable[[], Any]) -> dict[str, Any]:
    """Peak memory while ``fn()`` runs once in this process.

    CPU: peak resident set over the call (VmHWM after a reset where Linux allows, else
    ``ru_maxrss``) in MiB, and its increase over the resident set just before the call.
    CUDA: ``max_memory_allocated`` over the call and its increase over the allocation before.
    """
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
        before = torch.cuda.memory_allocated(ctx.device)
        fn()
        torch.cuda.synchronize(ctx.device)
        peak = torch.cuda.max_memory_allocated(ctx.device)
        return {"kind": "cuda_max_allocated", "peak_mb": peak / 2**20,
                "increase_mb": (peak - before) / 2**20, "before_mb": before / 2**20}
    reset = _reset_peak_rss()
    before = current_rss_mb()
    fn()
    hwm = _proc_status_kb("VmHWM") if reset else None
    peak = hwm / 1024.0 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"kind": "cpu_peak_rss", "source": "VmHWM" if hwm is not None else "ru_maxrss",
            "peak_mb": peak, "increase_mb": max(0.0, peak - before), "before_mb": before}


def run_probe(ctx: BenchContext, module: str, func: str, kwargs: dict[str, Any],
              timeout_s: float = 3600.0) -> dict[str, Any]:
    """Run ``benchmarks.<module>.<func>(ctx, **kwargs)`` for its peak memory.

    In a fresh Python process (``ctx.memory == "subprocess"``) or, for quick smoke runs, in
    this one. The function returns a dict that includes a ``peak_memory`` result.
    """
    key = f"probe:{ctx.memory}:{module}.{func}:{json.dumps(kwargs, sort_keys=True)}"
    if key in ctx.cache:  # the same probe twice in one run (figures 2 and 5 share shapes): measure once
        return ctx.cache[key]
    if ctx.memory == "inline":
        import importlib

        mod = importlib.import_module(f"benchmarks.{module}")
        ctx.cache[key] = dict(getattr(mod, func)(ctx, **kwargs), process="inline")
        return ctx.cache[key]
    payload = json.dumps({"module": module, "func": func, "kwargs": kwargs,
                          "options": ctx.probe_options(), "threads": torch.get_num_threads()})
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.probe", payload], cwd=str(REPO),
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(PROBE_MARK):
            out = json.loads(line[len(PROBE_MARK):])
            out["process"] = "subprocess"
            ctx.cache[key] = out
            return out
    tail = (proc.stderr or proc.stdout)[-2000:]
    raise RuntimeError(f"memory probe {module}.{func}({kwargs}) failed (exit {proc.returncode}):\n{tail}")


# ---------------------------------------------------------------------------------------
# environment


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # not installed under that distribution name
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, device, threads and library versions, recorded with every result file."""
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "nice": os.nice(0) if hasattr(os, "nice") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "timm": _version("timm"),
            "numpy": _version("numpy"),
            "mcjepa": _version("mcjepa") or _version("mcjepa-cli"),
        },
        "mkldnn": torch.backends.mkldnn.is_available(),
        "git": _git_state(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["cuda"] = {"version": torch.version.cuda, "memory_gb": props.total_memory / 2**30,
                       "capability": f"{props.major}.{props.minor}",
                       "bf16": torch.cuda.is_bf16_supported()}
    return env


def _git_state() -> dict[str, Any] | None:
    """Commit of the measured working tree and whether it had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                 capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):  # not a checkout, or no git
        return None
    files = sorted(line[3:] for line in changed if line.strip())
    return {"commit": commit, "dirty": bool(files), "modified": files}


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the platform has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, devices and dtypes to plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def count_flops(fn: Callable[[], Any]) -> float | None:
    """Floating-point operations of one call (``torch.utils.flop_counter``), None if unsupported."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())
