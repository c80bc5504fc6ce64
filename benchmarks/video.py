"""Figure 6: seconds per frame of flow on a clip, reusing each frame's pyramid vs from scratch.

Reuse: ``model.prepare_frame`` once per frame, then ``model.flow_between`` for each
consecutive pair. Scratch: ``model.estimate_flow`` on every pair (the encoder sees each inner
frame twice). Clip: the first frames of ``shared/data/video/bedroom.mp4`` (960x540), or
frames of the synthetic world at 544x960 where the shared data is absent. Model: recipe
``mcjepa_convnext_tiny``, random weights, batch 1, inference mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, BenchContext, Case, ratio, summarize, time_cases
from benchmarks.setups import bench_recipe, our_model

NAME = "video"
TITLE = "Video flow: per-frame feature reuse vs each pair from scratch"
TARGET = 0.6  # reuse / scratch, at most
FRAMES = 8
QUICK_FRAMES = 3
QUICK_SIZE = (64, 96)
VIDEO = REPO.parent / "shared" / "data" / "video" / "bedroom.mp4"


def load_clip(ctx: BenchContext) -> tuple[torch.Tensor, str]:
    """(T, 3, H, W) float frames in [0, 1] on the device, and where they came from."""
    n = QUICK_FRAMES if ctx.quick else FRAMES
    if VIDEO.is_file():
        from mcjepa_cli.io.video import read_video_frames

        size = QUICK_SIZE if ctx.quick else None
        frames, _ = read_video_frames(Path(VIDEO), max_frames=n, size=size)
        source = f"{VIDEO.name}, first {n} frames"
        frames = frames.float() / 255.0
    else:
        from mcjepa_cli.data.synthetic import SyntheticWorld

        h, w = QUICK_SIZE if ctx.quick else (544, 960)
        frames = SyntheticWorld(seed=0).clip(0, n, h, w).frames
        source = f"synthetic world clip, {n} frames"
    frames = frames.to(ctx.device).contiguous(memory_format=ctx.memory_format())
    return frames, source


def run(ctx: BenchContext) -> dict[str, Any]:
    frames, source = load_clip(ctx)
    t, _, h, w = frames.shape
    recipe = bench_recipe("mcjepa_convnext_tiny", ctx)
    model = our_model(recipe, ctx, train=False)
    clip = [frames[i : i + 1] for i in range(t)]

    def reuse() -> None:
        with torch.inference_mode(), ctx.autocast_ctx():
            prev = model.prepare_frame(clip[0])
            for frame in clip[1:]:
                cur = model.prepare_frame(frame)
                model.flow_between(prev, cur)
                prev = cur

    def scratch() -> None:
        with torch.inference_mode(), ctx.autocast_ctx():
            for a, b in zip(clip[:-1], clip[1:]):
                model.estimate_flow(a, b)

    times, _ = time_cases(ctx, [Case("reuse", reuse), Case("scratch", scratch)])
    per_frame = {k: [x / (t - 1) for x in v] for k, v in times.items()}
    return {
        "name": NAME, "title": TITLE,
        "setup": {"clip": source, "frames": t, "size": [h, w], "flows": t - 1,
                  "recipe": recipe.name, "channels_last": ctx.channels_last,
                  "precision": str(ctx.autocast) if ctx.autocast else "fp32"},
        "entries": [{"label": "reuse (prepare_frame + flow_between)", "key": "reuse",
                     **summarize(per_frame["reuse"])},
                    {"label": "scratch (estimate_flow per pair)", "key": "scratch",
                     **summarize(per_frame["scratch"])}],
        "ratios": [ratio(per_frame["reuse"], per_frame["scratch"], TARGET,
                         "s/frame: reuse / scratch")],
    }
