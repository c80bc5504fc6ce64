"""Figure 2: one pretraining step vs the bare timm ConvNeXt forward+backward on the same images.

Both sides count the expander and the AdamW step (DESIGN.md section 6); the ratio is our
overhead (split stem, stride-64 level, flow head in both directions, flow losses, VC terms)
over the encoder's floor. Peak memory of one step of each side is measured in a fresh process.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import BenchContext, Case, peak_memory, ratio, run_probe, summarize, time_cases
from benchmarks.setups import StepShape, bench_recipe, build_step, parameter_count

NAME = "pretrain_step"
TITLE = "Pretraining step vs bare encoder forward+backward"
TARGET = 1.5  # ours / bare, at most

# (recipe, step shape): the paper's model at a CPU-feasible size, and the quickstart as trained
CONFIGS = {
    "mcjepa_convnext_tiny": StepShape(pairs=2, flow_size=(256, 320), images=8, image_size=128),
    "quickstart": StepShape(pairs=8, flow_size=(128, 160), images=16, image_size=64),
}
# --quick shrinks every model to the same tiny one: one configuration is enough
QUICK_CONFIGS = {"quickstart": StepShape(pairs=1, flow_size=(64, 64), images=2, image_size=32)}


def shapes(ctx: BenchContext) -> dict[str, StepShape]:
    return QUICK_CONFIGS if ctx.quick else CONFIGS


def step_memory(ctx: BenchContext, recipe: str, side: str, shape: list) -> dict[str, Any]:
    """Peak memory of one step (setup excluded; the first step allocates AdamW's state)."""
    pairs, (h, w), images, size = shape
    st = StepShape(int(pairs), (int(h), int(w)), int(images), int(size))
    step = build_step(side, bench_recipe(recipe, ctx), st, ctx)
    mem = peak_memory(ctx, step)
    return {"recipe": recipe, "side": side, "shape": st.describe(), "peak_memory": mem}


def time_step(ctx: BenchContext, recipe_name: str, shape: StepShape) -> dict[str, Any]:
    """Interleaved timing of our step and the bare step for one recipe and shape (cached)."""
    key = f"{NAME}:{recipe_name}:{shape}"
    if key in ctx.cache:
        return ctx.cache[key]
    recipe = bench_recipe(recipe_name, ctx)
    ours = build_step("ours", recipe, shape, ctx)
    bare = build_step("bare", recipe, shape, ctx)
    times, _ = time_cases(ctx, [Case("ours", ours), Case("bare", bare)])
    out = {
        "recipe": recipe_name,
        "arch": recipe.model.encoder.arch,
        "shape": shape.describe(),
        "pairs": shape.pairs, "flow_size": list(shape.flow_size),
        "images": shape.images, "image_size": shape.image_size,
        "expander": list(recipe.model.expander.dims),
        "params": {"ours": parameter_count(ours.model),
                   "bare": parameter_count(bare.net) + parameter_count(bare.expander)},
        "ours": summarize(times["ours"]),
        "bare": summarize(times["bare"]),
        "ratio": ratio(times["ours"], times["bare"], TARGET, f"{recipe_name}: ours / bare"),
    }
    out["pairs_per_s"] = shape.pairs / out["ours"]["median_s"]
    out["images_per_s"] = shape.images / out["ours"]["median_s"]
    del ours, bare
    ctx.cache[key] = out
    return out


def run(ctx: BenchContext) -> dict[str, Any]:
    rows = []
    for recipe_name, shape in shapes(ctx).items():
        row = time_step(ctx, recipe_name, shape)
        shape_arg = [shape.pairs, list(shape.flow_size), shape.images, shape.image_size]
        row["memory"] = {side: run_probe(ctx, NAME, "step_memory",
                                         {"recipe": recipe_name, "side": side, "shape": shape_arg})["peak_memory"]
                         for side in ("ours", "bare")}
        rows.append(row)
    return {
        "name": NAME, "title": TITLE,
        "setup": {"what": "forward + backward + clip + AdamW; random images; flow on (both directions)",
                  "channels_last": ctx.channels_last, "compile": ctx.compile,
                  "precision": str(ctx.autocast) if ctx.autocast else "fp32"},
        "rows": rows,
        "ratios": [r["ratio"] for r in rows],
    }
