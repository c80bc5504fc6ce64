"""The plain function behind ``mcjepa visualize``: flow, occlusion, feature PCA, photometric
error and propagated-mask panels for a video, a frame folder, two images or a flow file.

Two passes: the first runs the model once per frame (``prepare_frame`` per frame, then
``flow_between`` per pair) and keeps what the panels need; the second fixes clip-wide scales
(flow magnitude, PCA colours) and renders every frame, so colours mean the same thing in every
frame of the output (DESIGN.md section 6).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.guard import Inputs, check_writable
from mcjepa_cli.io.images import IMAGE_EXTENSIONS, read_image, read_label_png, voc_palette
from mcjepa_cli.viz import panels as P
from mcjepa_cli.viz.writer import OUTPUT_EXTENSIONS, open_frame_writer, output_kind

PANEL_CHOICES = ("frame", "flow", "occlusion", "pca", "error", "mask")
DEFAULT_SHOW = ("frame", "flow")
FLOW_PERCENTILE = 99.0  # default --max-flow: this percentile of the clip's flow magnitudes
ERROR_RANGE = 0.25  # photometric error (mean |RGB difference| in [0, 1]) at the top of the ramp
FOLDER_FPS = 10.0  # frame rate for inputs that carry none (frame folders, image pairs)
PCA_SAMPLES = 40_000  # feature vectors (over the whole clip) used to fit the PCA
MAGNITUDE_SAMPLES = 50_000  # flow magnitudes kept per frame to estimate the clip's percentile


@dataclass
class Clip:
    """Frames to visualise.

    Attributes:
        frames: (T, 3, H, W) uint8 RGB.
        fps: frame rate of the source (None for folders and image pairs).
        stem: name used for the default output file.
        numbers: the source frame number of each kept frame (after ``stride``).
    """

    frames: torch.Tensor
    fps: float | None
    stem: str
    numbers: list[int] = field(default_factory=list)


@dataclass
class VisualizeResult:
    """What ``visualize`` wrote.

    Attributes:
        output: the file written.
        num_frames: frames in the output (N input frames give N - 1), or rows of a .png grid.
        frame_size: (H, W) of the frames as stored (mp4: padded to even sides).
        panel_size: (H, W) of one panel (the working resolution of the clip).
        panels: panel names, left to right.
        fps: frame rate written (.mp4, .gif).
        max_flow: flow magnitude (px) at the colour wheel's rim.
        flow_frames: flow fields rendered (N - 1, or the number of flow files).
        model_seconds_per_frame: model time per flow frame (features, flows, occlusion, error);
            None when no model ran.
        seconds: total wall time.
        checkpoint: the checkpoint used, if any.
    """

    output: Path
    num_frames: int
    frame_size: tuple[int, int]
    panel_size: tuple[int, int]
    panels: tuple[str, ...]
    fps: float
    max_flow: float
    flow_frames: int
    model_seconds_per_frame: float | None
    seconds: float
    checkpoint: str | None = None


# ----------------------------------------------------------------------------- inputs


def load_clip(
    inputs: Sequence[str | Path],
    *,
    max_frames: int | None = None,
    stride: int = 1,
    size: int | None = None,
) -> Clip:
    """Read a video file, a folder of frames, or two image files as one clip.

    Args:
        inputs: one video file or folder, or two image files.
        max_frames: keep at most this many frames (after ``stride``).
        stride: keep every ``stride``-th frame.
        size: resize so the short side has this many pixels (aspect kept).

    Raises:
        UserError: missing or unreadable inputs, frames of different sizes, wrong arity.
    """
    from mcjepa_cli.io.video import read_video_frames

    paths = [Path(p) for p in inputs]
    if not 1 <= len(paths) <= 2:
        raise UserError(
            "INPUT", f"expected a video, a folder of frames or two images, got {len(paths)} paths"
        )
    for p in paths:
        if not p.exists():
            raise UserError(p, "file or folder not found")
    if len(paths) == 2:
        for p in paths:
            if p.is_dir() or p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(
                    p, f"with two inputs both must be images ({', '.join(IMAGE_EXTENSIONS)})"
                )
        first, second = read_image(paths[0]), read_image(paths[1])
        if first.shape != second.shape:
            raise UserError(
                paths[1],
                f"is {second.shape[1]}x{second.shape[2]} (HxW) but {paths[0].name} is "
                f"{first.shape[1]}x{first.shape[2]}; the two images must have one size",
            )
        source: Path | list[Path] = paths
        stem = paths[0].stem
    else:
        source = paths[0]
        if source.is_file() and source.suffix.lower() in IMAGE_EXTENSIONS:
            raise UserError(
                source, "one image is not a clip: give two images, a folder of frames or a video"
            )
        stem = source.name if source.is_dir() else source.stem
    # fps comes back divided by the stride (None for folders and image pairs)
    frames, fps = read_video_frames(source, max_frames=max_frames, stride=stride, size=size)
    numbers = [i * stride for i in range(frames.shape[0])]
    return Clip(frames=torch.as_tensor(frames), fps=fps, stem=stem, numbers=numbers)


def parse_show(show: str | Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    """Panel names from ``--show`` ("frame,flow,pca" or a list); duplicates dropped, order kept."""
    if show is None:
        return tuple(default)
    items = (
        show.split(",") if isinstance(show, str) else [s for part in show for s in part.split(",")]
    )
    names: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in PANEL_CHOICES:
            raise UserError(
                f"--show {raw.strip()}",
                f"unknown panel; expected a comma-separated list of {', '.join(PANEL_CHOICES)}",
            )
        if name not in names:
            names.append(name)
    if not names:
        raise UserError("--show", f"no panel given; expected some of {', '.join(PANEL_CHOICES)}")
    return tuple(names)


# ----------------------------------------------------------------------------- analysis


def photometric_error(
    img1: torch.Tensor, img2: torch.Tensor, flow: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel error of frame 1 against frame 2 warped back by the flow.

    Args:
        img1, img2: (3, H, W) float in [0, 1].
        flow: (2, H, W) flow from frame 1 to frame 2 in pixels.

    Returns:
        ``(error, inside)``: (H, W) mean absolute RGB difference, and the (H, W) bool mask of
        pixels whose sample ``p + flow(p)`` lies inside frame 2.
    """
    from mcjepa_cli.models.layers import warp

    warped, inside = warp(img2[None].float(), flow[None].float(), return_mask=True)
    err = (img1.float() - warped[0]).abs().mean(dim=0)  # (H, W)
    return err, inside[0, 0] > 0.5


class FeaturePCA:
    """The first three principal components of a clip's features, fitted once, as RGB.

    Colours are comparable across frames: one PCA and one colour range (1st..99th percentile
    of each component over the fitting sample) hold for the whole clip.
    """

    def __init__(self, max_samples: int = PCA_SAMPLES, seed: int = 0) -> None:
        self.max_samples = max_samples
        self.seed = seed
        self.pca: Any = None
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def fit(self, feats: Sequence[torch.Tensor]) -> FeaturePCA:
        """Fit on cell vectors sampled evenly from every (C, h, w) map of ``feats``."""
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(self.seed)
        per_frame = max(1, self.max_samples // max(len(feats), 1))
        rows = []
        for f in feats:
            x = f.float().flatten(1).T.numpy()  # (h*w, C)
            if x.shape[0] > per_frame:
                x = x[rng.choice(x.shape[0], per_frame, replace=False)]
            rows.append(x)
        data = np.concatenate(rows, 0).astype(np.float64)
        n_comp = min(3, data.shape[1], data.shape[0])
        self.pca = PCA(n_components=n_comp, random_state=self.seed).fit(data)
        proj = self.pca.transform(data)  # (N, n_comp)
        self.lo = np.percentile(proj, 1.0, axis=0)
        self.hi = np.percentile(proj, 99.0, axis=0)
        return self

    def transform(self, feat: torch.Tensor) -> torch.Tensor:
        """(C, h, w) features -> (3, h, w) float colours in [0, 1]."""
        if self.pca is None or self.lo is None or self.hi is None:
            raise RuntimeError("FeaturePCA.transform called before fit")
        c, h, w = feat.shape
        proj = self.pca.transform(feat.float().flatten(1).T.numpy().astype(np.float64))
        span = np.where(self.hi - self.lo > 1e-12, self.hi - self.lo, 1.0)
        rgb = np.clip((proj - self.lo) / span, 0.0, 1.0)  # (h*w, n_comp)
        if rgb.shape[1] < 3:  # fewer than three channels: grey for the missing components
            rgb = np.concatenate([rgb, np.full((rgb.shape[0], 3 - rgb.shape[1]), 0.5)], 1)
        return torch.from_numpy(rgb.T.reshape(3, h, w).astype(np.float32))


def _cell_crop(
    pad: tuple[int, int, int, int], size: tuple[int, int], stride: int, cells: tuple[int, int]
) -> tuple[slice, slice, tuple[int, int, int, int]]:
    """The cells of a padded map that cover the unpadded image, and the padding left in them."""
    left, _, top, _ = pad
    h, w = size
    r0, c0 = top // stride, left // stride
    r1 = min(cells[0], math.ceil((top + h) / stride))
    c1 = min(cells[1], math.ceil((left + w) / stride))
    new_top, new_left = top - r0 * stride, left - c0 * stride
    new_pad = (
        new_left,
        (c1 - c0) * stride - w - new_left,
        new_top,
        (r1 - r0) * stride - h - new_top,
    )
    return slice(r0, r1), slice(c0, c1), new_pad


@dataclass
class _Analysis:
    """What the first pass keeps for the second (CPU tensors)."""

    flows: list[torch.Tensor] = field(default_factory=list)  # (2, H, W), float16 or float32
    valids: list[torch.Tensor | None] = field(default_factory=list)  # (H, W) bool or None
    max_mags: list[float] = field(default_factory=list)  # per flow frame, known pixels
    mags: list[torch.Tensor] = field(default_factory=list)  # sampled magnitudes per frame
    occluded: list[torch.Tensor] = field(default_factory=list)  # (H, W) bool
    errors: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    feats: list[torch.Tensor] = field(default_factory=list)  # (C, h, w) float16, cropped cells
    feat_pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # padding left inside the cropped cells
    model_seconds: float = 0.0


def _sample(values: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    if values.numel() <= n:
        return values
    return values[torch.randperm(values.numel(), generator=gen)[:n]]


def _analyse_with_model(
    model: Any,
    clip: Clip,
    dev: torch.device,
    show: Sequence[str],
    need_feats: bool,
    feature_stride: int,
    progress: Any,
) -> _Analysis:
    """First pass: features once per frame, forward (and backward) flow per consecutive pair."""
    from mcjepa_cli.losses.occlusion import occlusion_mask

    out = _Analysis()
    gen = torch.Generator().manual_seed(0)
    level = None
    if need_feats:
        strides = tuple(model.feature_strides)
        if feature_stride not in strides:
            raise UserError(
                f"--feature-stride {feature_stride}",
                f"expected one of the model's strides {', '.join(map(str, strides))}",
            )
        level = strides.index(feature_stride)
    n = clip.frames.shape[0]
    task = progress.add_task("flow", total=n - 1)
    prev, prev_img = None, None
    t0 = time.perf_counter()
    with torch.inference_mode():
        for t in range(n):
            img = clip.frames[t : t + 1].to(dev).float().div_(255.0)  # (1, 3, H, W)
            cur = model.prepare_frame(img)  # the pyramid, computed once for this frame
            if level is not None:
                fmap = cur.pyramid[level][0]  # (C, h', w') of the padded frame
                rows, cols, out.feat_pad = _cell_crop(
                    tuple(cur.pad), tuple(cur.size), feature_stride, tuple(fmap.shape[-2:])
                )
                out.feats.append(fmap[:, rows, cols].to("cpu", torch.float16))
            if prev is not None:
                fw = model.flow_between(prev, cur).float()  # (1, 2, H, W)
                mag = fw[0].norm(dim=0).flatten().cpu()
                out.max_mags.append(float(mag.max()))
                out.mags.append(_sample(mag, MAGNITUDE_SAMPLES, gen))
                if "occlusion" in show:
                    bw = model.flow_between(cur, prev).float()  # (1, 2, H, W)
                    out.occluded.append(occlusion_mask(fw, bw)[0, 0].bool().cpu())
                if "error" in show:
                    err, inside = photometric_error(prev_img[0], img[0], fw[0])
                    out.errors.append((err.to("cpu", torch.float16), inside.cpu()))
                out.flows.append(fw[0].to("cpu", torch.float16))  # float16 halves the memory
                out.valids.append(None)
                progress.advance(task)
            prev, prev_img = cur, img
    out.model_seconds = time.perf_counter() - t0
    return out


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H', W') with the short side ``size`` and the aspect ratio kept (as ``io.video`` does)."""
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_known_flow(
    flow: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a (2, H, W) flow with unknown pixels to ``size``, averaging known pixels only.

    Values are scaled by the axis ratios; a pixel of the result is known when more than half
    of the weight behind it came from known pixels.
    """
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow, valid
    weight = valid.float()[None, None]  # (1, 1, H, W)
    known = torch.where(valid, flow, torch.zeros_like(flow))[None]  # (1, 2, H, W)
    kw = {"size": tuple(size), "mode": "bilinear", "antialias": True, "align_corners": False}
    num = F.interpolate(known, **kw)[0]  # (2, H', W')
    den = F.interpolate(weight, **kw)[0]  # (1, H', W')
    scale = torch.tensor([size[1] / w, size[0] / h]).view(2, 1, 1)
    return num / den.clamp_min(1e-6) * scale, den[0] > 0.5


def _analyse_flow_files(
    flow_files: Sequence[Path], clip: Clip | None, show: Sequence[str], size: int | None
) -> _Analysis:
    """First pass for ``--flow``: read (and resize) the files and, given frames, the error.

    ``clip`` arrives at its decoded size, which must be the flow's; with ``size`` both the
    frames (in place) and the flows are resized.
    """
    from mcjepa_cli.io.flow_io import read_flow
    from mcjepa_cli.io.video import resize_frame

    out = _Analysis()
    gen = torch.Generator().manual_seed(0)
    first_shape: tuple[int, ...] | None = None
    for i, path in enumerate(flow_files):
        flow_np, valid_np = read_flow(path)
        flow = torch.from_numpy(np.ascontiguousarray(flow_np, dtype=np.float32)).permute(2, 0, 1)
        valid = torch.from_numpy(np.asarray(valid_np, dtype=bool)) & torch.isfinite(flow).all(0)
        if clip is not None and i == 0 and tuple(flow.shape[1:]) != tuple(clip.frames.shape[2:]):
            raise UserError(
                path,
                f"flow is {flow.shape[1]}x{flow.shape[2]} (HxW) but the frames are "
                f"{clip.frames.shape[2]}x{clip.frames.shape[3]}; they must match",
            )
        if first_shape is None:
            first_shape = tuple(flow.shape)
            if size is not None and clip is not None:
                target = short_side_size(flow.shape[1], flow.shape[2], size)
                clip.frames = torch.stack([resize_frame(f, target) for f in clip.frames])
        elif tuple(flow.shape) != first_shape:
            raise UserError(
                path,
                f"flow size {tuple(flow.shape[1:])} differs from "
                f"{flow_files[0]}'s {tuple(first_shape[1:])}",
            )
        if size is not None:
            flow, valid = resize_known_flow(
                flow, valid, short_side_size(flow.shape[1], flow.shape[2], size)
            )
        mag = P.known_flow_magnitudes(flow, valid)
        out.max_mags.append(float(mag.max()) if mag.numel() else 0.0)
        out.mags.append(_sample(mag, MAGNITUDE_SAMPLES, gen))
        if "error" in show and clip is not None:
            f0 = clip.frames[i].float() / 255.0
            f1 = clip.frames[i + 1].float() / 255.0
            safe = torch.where(valid, flow, torch.zeros_like(flow))
            err, inside = photometric_error(f0, f1, safe)
            out.errors.append((err, inside & valid))
        out.flows.append(flow)
        out.valids.append(valid)
    return out


def read_first_mask(mask_path: Path, size: tuple[int, int]) -> torch.Tensor:
    """The first frame's label map (palette PNG, read as indices) at the clip's ``size``.

    A map of another size is resized (nearest) when its aspect ratio matches; void (255)
    becomes background (0).

    Raises:
        UserError: unreadable file, a colour image, or a different aspect ratio.
    """
    from mcjepa_cli.eval.propagation import resize_labels

    labels = torch.from_numpy(read_label_png(mask_path).astype(np.int64))  # (h0, w0)
    h, w = size
    lh, lw = labels.shape
    if (lh, lw) != (h, w):
        if abs(lh / lw - h / w) > 0.02 * (h / w):
            raise UserError(
                mask_path,
                f"mask is {lh}x{lw} (HxW) but the frames are {h}x{w}: "
                "expected the first frame's annotation (same aspect ratio)",
            )
        labels = resize_labels(labels, (h, w))
    return torch.where(labels == 255, torch.zeros_like(labels), labels)


def _propagate_mask(
    labels: torch.Tensor, an: _Analysis, dev: torch.device, progress: Any
) -> list[torch.Tensor]:
    """Propagate an (H, W) first-frame label map through the clip (DAVIS protocol, DINO-style).

    Runs on the stored feature cells (which may extend past the image by the encoder's
    padding); the label map is placed in that extended frame, propagated, and cropped back.
    """
    from mcjepa_cli.eval.propagation import labels_to_onehot, propagate_sequence, resize_labels

    h, w = labels.shape
    ids = torch.unique(labels)  # sorted, 0 (background) first when present
    if int(ids[0]) != 0:
        ids = torch.cat([torch.zeros(1, dtype=ids.dtype), ids])
    dense = torch.searchsorted(ids, labels)  # consecutive indices: one channel per object
    left, right, top, bottom = an.feat_pad
    ext = F.pad(dense[None, None].float(), (left, right, top, bottom), value=0.0)[0, 0].long()
    cells = tuple(an.feats[0].shape[-2:])
    first = labels_to_onehot(resize_labels(ext, cells), num_classes=len(ids)).to(dev)  # (K, h', w')
    task = progress.add_task("masks", total=len(an.feats))
    maps = propagate_sequence(
        lambda i: an.feats[i].to(dev).float(),
        first,
        num_frames=len(an.feats),
        output_size=tuple(ext.shape),
        on_frame=lambda _t, _m: progress.advance(task),
    )
    # frame 0 shows the annotation as given, not its round trip through the feature cells
    return [labels] + [ids[m[top : top + h, left : left + w].cpu()] for m in maps[1:]]


# ----------------------------------------------------------------------------- main


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description:>7}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def visualize(
    inputs: Sequence[str | Path] = (),
    *,
    checkpoint: str | None = None,
    output: str | Path | None = None,
    flow_files: Sequence[str | Path] = (),
    show: str | Sequence[str] | None = None,
    mask: str | Path | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    size: int | None = None,
    fps: float | None = None,
    max_flow: float | None = None,
    feature_stride: int = 8,
    grid_rows: int = 4,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    model: Any | None = None,
) -> VisualizeResult:
    """Render flow, occlusion, feature-PCA, photometric-error and mask panels for a clip.

    Args:
        inputs: a video file, a folder of frames, or two image files (may be empty with
            ``flow_files``).
        checkpoint: checkpoint file, run directory or ``latest`` (default ``latest``); unused
            with ``flow_files`` or ``model``.
        output: .mp4, .gif or .png (a grid of sampled frames); default
            ``<input stem>_viz.mp4`` in the current folder (``.png`` for a single frame).
        flow_files: flow files (.flo, KITTI .png, .pfm) to colour instead of running a model.
        show: panels, comma-separated or a list, from ``PANEL_CHOICES``; default frame and flow
            (flow alone for flow files without frames).
        mask: first-frame label PNG (palette) to propagate through the clip and overlay.
        max_frames: at most this many input frames (after ``stride``).
        stride: keep every ``stride``-th input frame.
        size: resize frames so the short side has this many pixels.
        fps: output frame rate; default the input's divided by ``stride`` (10 for folders).
        max_flow: flow magnitude (px) at the wheel's rim; default the clip's 99th percentile.
        feature_stride: pyramid level (by stride) for the PCA panel and mask propagation.
        grid_rows: frames sampled into a .png grid.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        overwrite: replace an existing output file.
        progress: draw a progress bar on stderr.
        model: an already loaded model (``prepare_frame``/``flow_between``/``feature_strides``);
            skips ``checkpoint``.

    Returns:
        A ``VisualizeResult`` describing the file written.

    Raises:
        UserError: bad inputs or options (exit code 2 on the command line); an output that is
            one of the inputs or lies inside an input frame folder (even with ``overwrite``),
            or that cannot be written there.
    """
    t_start = time.perf_counter()
    inputs = [Path(p) for p in (inputs or ())]
    flow_paths = [Path(p) for p in (flow_files or ())]
    if stride < 1:
        raise UserError(f"--stride {stride}", "expected an integer >= 1")
    if max_frames is not None and max_frames < 2:
        raise UserError(
            f"--max-frames {max_frames}", "expected at least 2 (N frames give N-1 flow frames)"
        )
    if size is not None and size < 8:
        raise UserError(f"--size {size}", "expected a short side of at least 8 pixels")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UserError(f"--fps {fps}", "expected a positive frame rate")
    if max_flow is not None and not (math.isfinite(max_flow) and max_flow > 0):
        raise UserError(f"--max-flow {max_flow}", "expected a positive magnitude in pixels")
    if grid_rows < 1:
        raise UserError(f"--grid {grid_rows}", "expected at least 1 frame in the grid")
    read = Inputs()  # what this command reads: the output may be none of it, nor inside it
    for p in inputs:
        if p.is_dir():
            read.add_folder(p, "the input frame folder")
        else:
            read.add_file(p, "an input file")
    for p in flow_paths:
        read.add_file(p, "a --flow file")
    read.add_file(mask, "the --mask file")
    if output is not None:
        try:
            output_kind(output)
        except ValueError:
            raise UserError(
                output, f"cannot write this format; expected {', '.join(OUTPUT_EXTENSIONS)}"
            ) from None
        read.check_output("--output", output)  # even with --overwrite
        check_writable("--output", output)  # a folder, a path through a file, read-only
        if Path(output).exists() and not overwrite:
            raise UserError(output, "already exists; pass --overwrite to replace it")
    if not inputs and not flow_paths:
        raise UserError("INPUT", "give a video, a folder of frames or two images (or --flow FILE)")

    uses_model = not flow_paths
    default_show = DEFAULT_SHOW if inputs else ("flow",)
    panels = parse_show(show, default_show)
    if mask is not None and "mask" not in panels:
        panels = (*panels, "mask")
    if "mask" in panels and mask is None:
        raise UserError("--show mask", "needs --mask FIRST_FRAME.png (the first frame's label PNG)")
    if not uses_model:
        for name in ("occlusion", "pca", "mask"):
            if name in panels:
                raise UserError(
                    f"--show {name}",
                    "needs a model (backward flow or features); "
                    "it cannot be drawn from --flow files",
                )
    if not inputs:
        for name in ("frame", "error"):
            if name in panels:
                raise UserError(
                    f"--show {name}", "needs the frames: give INPUT (two images or a clip)"
                )
    if mask is not None and not Path(mask).is_file():
        raise UserError(mask, "mask file not found")

    # with --flow the frames are resized together with the flows (after checking their sizes)
    clip_size = size if uses_model else None
    clip = (
        load_clip(inputs, max_frames=max_frames, stride=stride, size=clip_size) if inputs else None
    )
    if clip is not None and clip.frames.shape[0] < 2:
        where = inputs[0] if len(inputs) == 1 else inputs
        raise UserError(
            where,
            f"clip has {clip.frames.shape[0]} frame(s); at least 2 are needed "
            "(N frames give N-1 flow frames)",
        )
    if not uses_model and clip is not None and clip.frames.shape[0] != len(flow_paths) + 1:
        raise UserError(
            "--flow",
            f"{len(flow_paths)} flow file(s) need {len(flow_paths) + 1} frames, "
            f"the input has {clip.frames.shape[0]}",
        )
    n_out = clip.frames.shape[0] - 1 if clip is not None else len(flow_paths)
    first_mask = read_first_mask(Path(mask), tuple(clip.frames.shape[2:])) if mask else None
    stem = clip.stem if clip is not None else flow_paths[0].stem
    if output is None:
        output = Path.cwd() / f"{stem}_viz{'.mp4' if n_out > 1 else '.png'}"
        read.check_output("--output", output)
        if output.exists() and not overwrite:
            raise UserError(
                output, "already exists; pass --overwrite to replace it, or choose --output"
            )
    output = Path(output)
    ckpt_used: str | None = None
    if uses_model and model is None:
        from mcjepa_cli.engine.checkpoint import resolve_checkpoint

        ckpt_used = str(resolve_checkpoint(checkpoint or "latest"))
        read.add_file(ckpt_used, "the checkpoint")
        read.check_output("--output", output)
    check_writable("--output", output)  # before any work: an unwritable place fails now
    out_fps = (
        fps if fps is not None else (clip.fps if clip is not None and clip.fps else FOLDER_FPS)
    )

    need_feats = "pca" in panels or "mask" in panels
    with _progress(progress) as bar:
        if uses_model:
            from mcjepa_cli.engine.device import resolve_device

            dev = resolve_device(device)
            if model is None:
                from mcjepa_cli.engine.checkpoint import load_model

                assert ckpt_used is not None
                model, _ = load_model(ckpt_used, dev)
            else:
                model = model.to(dev) if hasattr(model, "to") else model
            if hasattr(model, "eval"):
                model.eval()
            an = _analyse_with_model(model, clip, dev, panels, need_feats, feature_stride, bar)
        else:
            an = _analyse_flow_files(flow_paths, clip, panels, size)

        # ---- clip-wide scales
        if max_flow is None:
            mags = torch.cat(an.mags) if an.mags else torch.zeros(0)
            max_flow = float(np.percentile(mags.numpy(), FLOW_PERCENTILE)) if mags.numel() else 0.0
            if not (math.isfinite(max_flow) and max_flow > 1e-6):
                max_flow = 1.0  # a still clip: any scale shows white
        pca = FeaturePCA().fit(an.feats) if "pca" in panels else None
        masks = _propagate_mask(first_mask, an, dev, bar) if first_mask is not None else None

        # ---- render
        task = bar.add_task("writing", total=n_out)
        panel_size = tuple(an.flows[0].shape[-2:])
        palette = voc_palette()
        with open_frame_writer(
            output, fps=out_fps, num_frames=n_out, grid_rows=grid_rows
        ) as writer:
            for t in range(n_out):
                row = []
                for name in panels:
                    row.append(
                        _render_panel(
                            name, t, clip, an, max_flow, pca, masks, palette, feature_stride
                        )
                    )
                writer.append(P.compose(row))
                bar.advance(task)
        frame_size = writer.written_size
    return VisualizeResult(
        output=output,
        num_frames=writer.stored_frames,
        frame_size=tuple(frame_size),
        panel_size=panel_size,
        panels=panels,
        fps=float(out_fps),
        max_flow=float(max_flow),
        flow_frames=n_out,
        model_seconds_per_frame=an.model_seconds / n_out if uses_model else None,
        seconds=time.perf_counter() - t_start,
        checkpoint=ckpt_used,
    )


def _render_panel(
    name: str,
    t: int,
    clip: Clip | None,
    an: _Analysis,
    max_flow: float,
    pca: FeaturePCA | None,
    masks: list[torch.Tensor] | None,
    palette: np.ndarray,
    feature_stride: int,
) -> tuple[torch.Tensor, list[str]]:
    """One (panel, captions) pair for output frame ``t``."""
    if name == "frame":
        number = clip.numbers[t] if clip.numbers else t
        return clip.frames[t], [f"frame {number}", f"{number}"]
    if name == "flow":
        flow = an.flows[t].float()
        img = P.add_flow_legend(P.flow_to_rgb(flow, max_flow, an.valids[t]))
        m = an.max_mags[t]
        return img, [
            f"flow  max {m:.1f} px  (rim = {max_flow:.1f} px)",
            f"max {m:.1f} px, rim {max_flow:.1f}",
            f"max {m:.1f}px",
        ]
    if name == "occlusion":
        occ = an.occluded[t]
        pct = 100.0 * float(occ.float().mean())
        return P.occlusion_panel(clip.frames[t], occ), [
            # the colour says what red means; a high share early in training means the forward
            # and backward flows do not agree yet, not that much of the scene is hidden
            f"red = occluded: fw/bw flows disagree ({pct:.1f}%)",
            f"red = occluded {pct:.1f}%",
            f"{pct:.0f}%",
        ]
    if name == "error":
        err, inside = an.errors[t]
        mean = float(err.float()[inside].mean()) if bool(inside.any()) else float("nan")
        return P.error_panel(err.float(), inside, ERROR_RANGE), [
            f"photometric error  mean {mean:.3f}  (0-{ERROR_RANGE:g})",
            f"error {mean:.3f}",
            f"{mean:.3f}",
        ]
    if name == "pca":
        cells = pca.transform(an.feats[t])  # (3, h', w')
        h, w = clip.frames.shape[2:]
        img = P.to_uint8_rgb(P.cells_to_pixels(cells, feature_stride, an.feat_pad, (h, w)))
        return img, [f"features: PCA of stride {feature_stride}", f"PCA s{feature_stride}", "PCA"]
    if name == "mask":
        caption = "mask (given)" if t == 0 else "mask (propagated)"
        return P.mask_overlay(clip.frames[t], masks[t].numpy(), palette), [caption, "mask"]
    raise ValueError(f"unknown panel {name!r}")
