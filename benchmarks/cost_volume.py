"""Figure 3: the cost volume, forward+backward, at the pyramid shapes of the paper's model.

Shapes: ConvNeXt-T recipe at 448x1024, flow strides 64..4, features projected to the
recipe's channels, batch 2 (one pair in both directions, as in training), radius 4.
Implementations: ``cost_volume`` (tiled batched matmul, ours), ``cost_volume_shift`` (the
pad-and-shift loop it replaced) and ``cost_volume_naive`` (``F.unfold``, the reference).
Outputs and gradients are checked against the reference before timing.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import BenchContext, Case, peak_memory, ratio, run_probe, summarize, time_cases
from mcjepa_cli.models.layers import cost_volume, cost_volume_naive, cost_volume_shift

NAME = "cost_volume"
TITLE = "Cost volume (radius 4) forward+backward vs unfold reference"
IMPLS = {"ours": cost_volume, "shift": cost_volume_shift, "naive": cost_volume_naive}
SIZE = (448, 1024)
QUICK_SIZE = (64, 128)
BATCH = 2
MEMORY_LEVELS = 2  # peak memory at the finest levels (where it matters; one process each)


def level_shapes(ctx: BenchContext) -> list[tuple[int, int, int, int, int]]:
    """(stride, B, C, h, w) of every flow level, coarsest first."""
    from benchmarks.setups import bench_recipe  # (keeps memory probes' imports light)

    recipe = bench_recipe("mcjepa_convnext_tiny", ctx)
    h, w = QUICK_SIZE if ctx.quick else SIZE
    c = recipe.model.flow_head.proj_channels
    return [(s, BATCH, c, h // s, w // s) for s in recipe.model.flow_head.strides]


def _inputs(shape: tuple[int, int, int, int], ctx: BenchContext, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(*shape, generator=g).to(ctx.device).requires_grad_()
    f2 = torch.randn(*shape, generator=g).to(ctx.device).requires_grad_()
    grad = torch.randn(shape[0], 81, *shape[2:], generator=g).to(ctx.device)
    return f1, f2, grad


def _fwd_bwd(impl: str, f1: torch.Tensor, f2: torch.Tensor, grad: torch.Tensor) -> None:
    f1.grad = f2.grad = None
    out = IMPLS[impl](f1, f2, 4)
    out.backward(grad)


def cost_volume_memory(ctx: BenchContext, impl: str, shape: list[int]) -> dict[str, Any]:
    """Peak memory of one forward+backward of ``impl`` (inputs allocated beforehand; one call
    on a tiny input first, so that lazily initialised kernels are not counted)."""
    _fwd_bwd(impl, *_inputs((1, shape[1], 8, 8), ctx))
    f1, f2, grad = _inputs(tuple(shape), ctx)
    mem = peak_memory(ctx, lambda: _fwd_bwd(impl, f1, f2, grad))
    return {"impl": impl, "shape": shape, "peak_memory": mem}


def _max_error(shape: tuple[int, int, int, int], ctx: BenchContext) -> dict[str, float]:
    """Largest |difference| to the unfold reference: output and both gradients."""
    f1, f2, grad = _inputs(shape, ctx, seed=1)
    _fwd_bwd("naive", f1, f2, grad)
    ref = (cost_volume_naive(f1, f2, 4).detach(), f1.grad.clone(), f2.grad.clone())
    errors = {}
    for impl in ("ours", "shift"):
        _fwd_bwd(impl, f1, f2, grad)
        out = IMPLS[impl](f1, f2, 4).detach()
        errors[impl] = max(float((a - b).abs().max()) for a, b in zip((out, f1.grad, f2.grad), ref))
    return errors


def run(ctx: BenchContext) -> dict[str, Any]:
    levels = level_shapes(ctx)
    rows = []
    totals: dict[str, list[float]] = {k: [0.0] * ctx.repeats for k in IMPLS}
    for stride, b, c, h, w in levels:
        shape = (b, c, h, w)
        f1, f2, grad = _inputs(shape, ctx)
        cases = [Case(k, lambda k=k: _fwd_bwd(k, f1, f2, grad)) for k in IMPLS]
        times, _ = time_cases(ctx, cases)
        for k in IMPLS:
            totals[k] = [t + x for t, x in zip(totals[k], times[k])]
        rows.append({"stride": stride, "shape": list(shape),
                     "max_abs_error": _max_error(shape, ctx),
                     **{k: summarize(times[k]) for k in IMPLS},
                     "ratio_ours_naive": ratio(times["ours"], times["naive"], None, f"stride {stride}"),
                     "ratio_ours_shift": ratio(times["ours"], times["shift"], None, f"stride {stride}")})
        del f1, f2, grad
    n_mem = 1 if ctx.quick else MEMORY_LEVELS
    for row in rows[-n_mem:]:
        row["memory"] = {k: run_probe(ctx, NAME, "cost_volume_memory",
                                      {"impl": k, "shape": row["shape"]})["peak_memory"]
                         for k in IMPLS}
    finest = rows[-1]
    mem_ratio = finest["memory"]["ours"]["increase_mb"] / max(finest["memory"]["naive"]["increase_mb"], 1e-9)
    ratios = [
        ratio(totals["ours"], totals["naive"], 1.0, "time, all levels: ours / naive"),
        {"name": f"peak memory at stride {finest['stride']}: ours / naive", "value": mem_ratio,
         "target": 0.25, "better": "lower", "met": bool(mem_ratio <= 0.25)},
        ratio(totals["ours"], totals["shift"], None, "time, all levels: ours / pad-and-shift loop"),
    ]
    return {
        "name": NAME, "title": TITLE,
        "setup": {"image_size": list(QUICK_SIZE if ctx.quick else SIZE), "batch": BATCH, "radius": 4,
                  "what": "forward + backward with a random output gradient",
                  "memory": "increase over the inputs, one fresh process per implementation and level"},
        "rows": rows,
        "totals": {k: summarize(v) for k, v in totals.items()},
        "ratios": ratios,
    }
