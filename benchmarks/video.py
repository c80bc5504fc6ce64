"""Figure 6: seconds per frame of flow on a clip, reusing each frame's pyramid vs from scratch.

Reuse: ``model.prepare_frame`` once per frame, then ``model.flow_between`` for each
consecutive pair. Scratch: ``model.estimate_flow`` on every pair (the encoder sees each inner
frame twice). Clip: the first frames of ``shared/data/video/bedroom.mp4`` (960x540), or
frames of the synthetic world at 544x960 where the shared data is absent. Model: recipe
``mcjepa_convnext_tiny``, random weights, batch 1, inference mode.

Two figures from the same timed runs: the clip (total time over the number of flows, which
includes encoding the first frame once more), and the steady state that the target judges:
the seconds of one new frame (``prepare_frame`` + ``flow_between``) against one pair from
scratch (``estimate_flow``), i.e. the per-frame cost of a long video. The clip ratio is
bounded below by T / (2 (T - 1)) (0.57 for 8 frames) even with a free flow head; the steady
state by 0.5.
"""

from __future__ import annotations

import statistics
import time
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

    # per-call step times (seconds), one list per call; the last ``ctx.repeats`` are the timed ones
    reuse_steps: list[list[float]] = []
    scratch_pairs: list[list[float]] = []

    def reuse() -> None:
        steps = []
        with torch.inference_mode(), ctx.autocast_ctx():
            prev = model.prepare_frame(clip[0])
            for frame in clip[1:]:
                ctx.sync()
                t0 = time.perf_counter()
                cur = model.prepare_frame(frame)
                model.flow_between(prev, cur)
                ctx.sync()
                steps.append(time.perf_counter() - t0)
                prev = cur
        reuse_steps.append(steps)

    def scratch() -> None:
        pairs = []
        with torch.inference_mode(), ctx.autocast_ctx():
            for a, b in zip(clip[:-1], clip[1:]):
                ctx.sync()
                t0 = time.perf_counter()
                model.estimate_flow(a, b)
                ctx.sync()
                pairs.append(time.perf_counter() - t0)
        scratch_pairs.append(pairs)

    times, _ = time_cases(ctx, [Case("reuse", reuse), Case("scratch", scratch)])
    per_frame = {k: [x / (t - 1) for x in v] for k, v in times.items()}
    # steady state per timed repeat: median seconds of one new frame / of one pair from scratch
    steady = {"reuse": [statistics.median(x) for x in reuse_steps[-ctx.repeats:]],
              "scratch": [statistics.median(x) for x in scratch_pairs[-ctx.repeats:]]}
    return {
        "name": NAME, "title": TITLE,
        "setup": {"clip": source, "frames": t, "size": [h, w], "batch": 1, "flows": t - 1,
                  "recipe": recipe.name, "channels_last": ctx.channels_last,
                  "precision": str(ctx.autocast) if ctx.autocast else "fp32"},
        "entries": [{"label": f"clip: reuse, s per flow ({t} frames)", "key": "reuse",
                     **summarize(per_frame["reuse"])},
                    {"label": f"clip: scratch, s per flow ({t} frames)", "key": "scratch",
                     **summarize(per_frame["scratch"])},
                    {"label": "steady: one new frame (prepare_frame + flow_between)",
                     "key": "steady_reuse", **summarize(steady["reuse"])},
                    {"label": "steady: one pair from scratch (estimate_flow)",
                     "key": "steady_scratch", **summarize(steady["scratch"])}],
        "ratios": [ratio(steady["reuse"], steady["scratch"], TARGET,
                         "s/frame, steady state: reuse / scratch"),
                   ratio(per_frame["reuse"], per_frame["scratch"], None,
                         f"s/frame, {t}-frame clip: reuse / scratch")],
    }
