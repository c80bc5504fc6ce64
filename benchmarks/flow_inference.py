"""Figure 1: flow inference at Sintel size (448x1024), batch 1, ours vs torchvision RAFT.

Ours: the model of recipe ``mcjepa_convnext_tiny`` (ConvNeXt-T pyramid + PWC head),
``estimate_flow``. Theirs: ``raft_small`` with 12 flow updates and ``raft_large`` with 32 (its
Sintel setting), ``weights=None``. All random weights, the same two frames, inference mode.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import BenchContext, Case, ratio, summarize, time_cases
from benchmarks.setups import bench_recipe, our_model, parameter_count, random_images

NAME = "flow_inference"
TITLE = "Flow inference, batch 1: ours vs RAFT"
SIZE = (448, 1024)
QUICK_SIZE = (128, 128)  # RAFT needs >= 128 px (its correlation pyramid)
RAFT = {"raft_small": 12, "raft_large": 32}  # flow updates
QUICK_RAFT = {"raft_small": 1, "raft_large": 1}
TARGETS = {"raft_small": 1.0, "raft_large": 0.25}  # ours / theirs, at most


def _raft(name: str, ctx: BenchContext) -> torch.nn.Module:
    from torchvision.models import optical_flow

    torch.manual_seed(0)
    net = getattr(optical_flow, name)(weights=None)
    return net.to(ctx.device, memory_format=ctx.memory_format()).eval()


def run(ctx: BenchContext) -> dict[str, Any]:
    h, w = QUICK_SIZE if ctx.quick else SIZE
    updates = QUICK_RAFT if ctx.quick else RAFT
    recipe = bench_recipe("mcjepa_convnext_tiny", ctx)
    ours = our_model(recipe, ctx, train=False)
    estimate = torch.compile(ours.estimate_flow) if ctx.compile else ours.estimate_flow
    img1 = random_images(1, h, w, ctx, 11)
    img2 = random_images(1, h, w, ctx, 12)
    # RAFT's transforms map images to [-1, 1]; ours normalises [0, 1] images internally
    r1, r2 = img1 * 2 - 1, img2 * 2 - 1
    rafts = {name: _raft(name, ctx) for name in updates}

    def ours_call() -> None:
        with torch.inference_mode(), ctx.autocast_ctx():
            estimate(img1, img2)

    def raft_call(name: str):
        net, n = rafts[name], updates[name]

        def call() -> None:
            with torch.inference_mode(), ctx.autocast_ctx():
                net(r1, r2, num_flow_updates=n)
        return call

    cases = [Case("ours", ours_call)] + [Case(name, raft_call(name)) for name in updates]
    times, flops = time_cases(ctx, cases, flops=not ctx.quick)  # FLOPs: one extra warm-up
    labels = {"ours": f"ours ({recipe.model.encoder.arch} + PWC head)",
              **{k: f"{k} ({v} updates)" for k, v in updates.items()}}
    entries = []
    for c in cases:
        net = ours if c.label == "ours" else rafts[c.label]
        entries.append({"label": labels[c.label], "key": c.label, **summarize(times[c.label]),
                        "gflops": None if flops[c.label] is None else flops[c.label] / 1e9,
                        "params": parameter_count(net)})
    ratios = [ratio(times["ours"], times[k], TARGETS[k], f"ours / {labels[k]}") for k in updates]
    for r, k in zip(ratios, updates):
        if flops["ours"] and flops[k]:
            r["flops_ratio"] = flops["ours"] / flops[k]
    return {
        "name": NAME, "title": TITLE,
        "setup": {"size": [h, w], "batch": 1, "recipe": recipe.name, "updates": updates,
                  "channels_last": ctx.channels_last, "compile": ctx.compile,
                  "precision": str(ctx.autocast) if ctx.autocast else "fp32",
                  "weights": "random (weights=None)"},
        "entries": entries,
        "ratios": ratios,
    }
