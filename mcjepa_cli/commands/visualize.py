"""``mcjepa visualize``: flow, occlusion, feature and propagated-mask videos from any clip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# mcjepa_cli.viz.run.PANEL_CHOICES, spelt out so that `mcjepa --help` does not import torch
# with viz.run (tests/test_cli_speed.py keeps the two equal)
PANEL_CHOICES = ("frame", "flow", "occlusion", "pca", "error", "mask")


def visualize_command(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="INPUT",
            help="A video (mp4, webm, avi, mov, gif), a folder of frames, or two image files. "
            "Optional with --flow.",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="Checkpoint file, run directory, or 'latest' (the newest run under runs/) "
            "(default: latest). Not used with --flow.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file; the extension picks the format: .mp4 (H.264), .gif, or .png (a "
            "grid of sampled frames) (default: <input stem>_viz.mp4 here, .png for one frame).",
        ),
    ] = None,
    flow: Annotated[
        list[Path] | None,
        typer.Option(
            "--flow",
            help="Colour an existing flow file (.flo, KITTI .png, .pfm) without a model "
            "(repeatable: one file per frame pair; INPUT, if given, supplies the frames).",
        ),
    ] = None,
    show: Annotated[
        str | None,
        typer.Option(
            "--show",
            help=f"Comma-separated panels, left to right: {','.join(PANEL_CHOICES)} "
            "(default: frame,flow; flow alone for --flow without INPUT).",
        ),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            "--mask",
            help="First frame's label PNG (palette, DAVIS-style) to propagate through the clip "
            "and overlay (adds the mask panel).",
        ),
    ] = None,
    max_frames: Annotated[
        int | None,
        typer.Option("--max-frames", help="Use at most this many input frames (after --stride)."),
    ] = None,
    stride: Annotated[int, typer.Option("--stride", help="Use every N-th input frame.")] = 1,
    size: Annotated[
        int | None,
        typer.Option("--size", help="Resize frames so the short side has this many pixels."),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps",
            help="Output frame rate (default: the input's divided by --stride; 10 for folders "
            "and image pairs).",
        ),
    ] = None,
    max_flow: Annotated[
        float | None,
        typer.Option(
            "--max-flow",
            help="Flow magnitude (px) at the colour wheel's rim, one scale for the whole clip "
            "(default: the clip's 99th percentile).",
        ),
    ] = None,
    feature_stride: Annotated[
        int,
        typer.Option(
            "--feature-stride",
            help="Pyramid level (by stride: 2, 4, 8, 16, 32, 64) for the PCA panel and --mask.",
        ),
    ] = 8,
    grid: Annotated[int, typer.Option("--grid", help="Frames sampled into a .png grid.")] = 4,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")
    ] = "auto",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output file.")
    ] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="Do not draw the progress bar.")
    ] = False,
) -> None:
    """Render flow, occlusion, feature-PCA, error and mask panels for a video, frames or images."""
    from mcjepa_cli.viz.run import visualize

    result = visualize(
        list(inputs or []),
        checkpoint=checkpoint,
        output=output,
        flow_files=list(flow or []),
        show=show,
        mask=mask,
        max_frames=max_frames,
        stride=stride,
        size=size,
        fps=fps,
        max_flow=max_flow,
        feature_stride=feature_stride,
        grid_rows=grid,
        device=device,
        overwrite=overwrite,
        progress=not no_progress,
    )
    h, w = result.frame_size
    speed = (
        f", model {result.model_seconds_per_frame:.2f} s/frame"
        if result.model_seconds_per_frame is not None
        else ""
    )
    print(
        f"wrote {result.output} ({result.num_frames} frame(s), {w}x{h}, "
        f"panels {','.join(result.panels)}, flow rim {result.max_flow:.2f} px{speed})"
    )
