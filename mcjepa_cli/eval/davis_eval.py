"""DAVIS 2017 semi-supervised evaluation: label propagation on frozen features, official scoring.

``davis_eval`` either propagates the first-frame masks with a model's features (DINO protocol,
``mcjepa_cli.eval.propagation``) and writes the results as indexed PNGs in the official layout
``<output>/<sequence>/<frame>.png``, or scores an existing folder of such PNGs from any method;
scores follow the davis2017-evaluation toolkit (``mcjepa_cli.eval.davis_metrics``) and are
written as its two CSV files.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcjepa_cli.data.davis import VOID_LABEL, VideoSequence, davis_sequences, synthetic_sequences
from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.davis_metrics import (
    GLOBAL_COLUMNS,
    ObjectScore,
    evaluate_sequence,
    global_csv,
    global_results,
    per_sequence_csv,
)
from mcjepa_cli.eval.propagation import labels_to_onehot, propagate_sequence, resize_labels
from mcjepa_cli.io.atomic import atomic_write_text
from mcjepa_cli.io.guard import Inputs, check_writable
from mcjepa_cli.io.images import read_label_png, write_palette_png
from mcjepa_cli.io.json_out import is_stdout, write_json_text

DATASETS = ("davis", "synthetic")
DEFAULT_SIZE = {"davis": 480, "synthetic": None}  # None: the clips' rendered size


@dataclass
class DavisEvalResult:
    """What ``davis_eval`` measured and wrote.

    Attributes:
        results: the global numbers keyed by the toolkit's column names (``J&F-Mean``...).
        objects: per-object scores (``<sequence>_<id>``) in sequence order.
        output_dir: where the PNGs (when propagating) and CSV files are.
        files: ``global_csv``, ``per_sequence_csv`` (and ``json``) paths written.
        settings: the resolved options (level, stride, size, source...).
        seconds: wall time.
    """

    results: dict[str, float]
    objects: list[ObjectScore]
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_level(spec: str | int, strides: tuple[int, ...]) -> int:
    """Pyramid level index from ``--level``: an index (``2``), or a stride (``s8``, or ``8``
    when the number is not a valid index).

    Raises:
        UserError: a value that is neither an index nor one of the model's strides.
    """
    text = str(spec).strip().lower()
    expected = (
        f"expected a level index 0-{len(strides) - 1} or a stride "
        f"{', '.join(f's{s}' for s in strides)}"
    )
    if text.startswith("s"):
        text = text[1:]
        if text.startswith("tride"):
            text = text[5:].lstrip(":=")
        try:
            stride = int(text)
        except ValueError:
            raise UserError(f"--level {spec}", expected) from None
        if stride not in strides:
            raise UserError(f"--level {spec}", expected)
        return strides.index(stride)
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--level {spec}", expected) from None
    if 0 <= value < len(strides):
        return value
    if value in strides:
        return strides.index(value)
    raise UserError(f"--level {spec}", expected)


def input_size(height: int, width: int, short_side: int | None, stride: int) -> tuple[int, int]:
    """Network input size: short side ``short_side`` (None = native), aspect kept, both sides
    rounded to multiples of ``stride`` so that feature cells tile the image exactly."""
    if short_side is None:
        th, tw = float(height), float(width)
    else:
        scale = short_side / min(height, width)
        th, tw = height * scale, width * scale
    return (max(stride, math.floor(th / stride + 0.5) * stride),
            max(stride, math.floor(tw / stride + 0.5) * stride))


def _check_options(
    topk: int, n_last: int, radius: int, temperature: float, size: int | None
) -> None:
    if topk < 1:
        raise UserError(f"--topk {topk}", "expected an integer >= 1")
    if n_last < 0:
        raise UserError(f"--n-last {n_last}", "expected an integer >= 0")
    if radius < 0:
        raise UserError(f"--radius {radius}", "expected an integer >= 0 (feature cells)")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"--temperature {temperature}", "expected a finite number > 0")
    if size is not None and size < 8:
        raise UserError(f"--size {size}", "expected a short side of at least 8 pixels")


def _read_predictions(
    seq: VideoSequence, folder: Path, gt: np.ndarray, num_objects: int
) -> np.ndarray:
    """(T-2, H, W) predicted index maps of the scored frames (the toolkit reads no others)."""
    maps = []
    for i in range(1, len(seq) - 1):
        path = folder / seq.name / f"{seq.frame_ids[i]}.png"
        if not path.is_file():
            raise UserError(
                path,
                f"prediction for frame {seq.frame_ids[i]} of {seq.name} not found (expected an "
                "indexed PNG per frame: <predictions>/<sequence>/<frame>.png)",
            )
        pred = read_label_png(path)
        if pred.shape != gt.shape[1:]:
            raise UserError(
                path,
                f"prediction is {pred.shape[1]}x{pred.shape[0]}, the ground truth "
                f"{gt.shape[2]}x{gt.shape[1]} (width x height)",
            )
        top = int(pred.max(initial=0))
        if top > num_objects:
            raise UserError(
                path,
                f"object id {top} is beyond the {num_objects} object(s) of the ground truth of "
                f"{seq.name}",
            )
        maps.append(pred)
    return np.stack(maps)


class _FeatureExtractor:
    """Resize, pad and encode frames; return one pyramid level cropped to the frame's cells."""

    def __init__(self, model: Any, level: int, device: torch.device) -> None:
        self.model = model
        self.level = level
        self.stride = int(model.feature_strides[level])
        self.multiple = int(max(model.feature_strides))
        self.device = device

    @torch.no_grad()
    def __call__(self, frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = frame.to(self.device, torch.float32)[None]  # (1, 3, H, W) in [0, 1]
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)
        h, w = size
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:  # pad bottom/right only, so feature cell (i, j) covers pixels [s*i, s*(i+1))
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feat = self.model.features(x)[self.level]  # (1, C, H'/s, W'/s)
        return feat[0, :, : h // self.stride, : w // self.stride].float()  # (C, h/s, w/s)


def _load_model(
    checkpoint: str | None, backbone: str | None, arch: str | None, device: torch.device
) -> tuple[Any, str, str]:
    """(model, description, short tag for the default output folder)."""
    from mcjepa_cli.engine.checkpoint import build_random_model, load_model, resolve_checkpoint

    if backbone is not None:
        if backbone != "random":
            raise UserError(f"--backbone {backbone}", "expected 'random' (or --checkpoint PATH)")
        model = build_random_model(arch or "convnext_atto", device=device)
        return model, f"random {arch or 'convnext_atto'}", f"random-{arch or 'convnext_atto'}"
    assert checkpoint is not None
    if arch is not None:
        raise UserError(
            f"--arch {arch}",
            "applies to --backbone random only (a checkpoint knows its architecture)",
        )
    path = resolve_checkpoint(checkpoint)
    model, _ = load_model(str(path), device)
    tag = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return model, str(path), tag


def davis_eval(
    *,
    dataset: str = "davis",
    root: str | Path | None = None,
    subset: str = "val",
    resolution: str = "480p",
    sequences: list[str] | None = None,
    checkpoint: str | None = None,
    backbone: str | None = None,
    arch: str | None = None,
    predictions: str | Path | None = None,
    level: str | int = "s8",
    topk: int = 5,
    n_last: int = 7,
    radius: int = 12,
    temperature: float = 0.1,
    rescale: bool = True,
    size: int | None = -1,
    device: str = "auto",
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    num_sequences: int = 8,
    num_frames: int = 16,
    synthetic_size: tuple[int, int] = (128, 160),
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> DavisEvalResult:
    """Evaluate semi-supervised video object segmentation on DAVIS 2017 (or the synthetic set).

    Args:
        dataset: ``davis`` (files under ``root``) or ``synthetic`` (rendered, no files needed).
        root: the DAVIS folder holding ``JPEGImages/``, ``Annotations/``, ``ImageSets/``; None =
            ``$MCJEPA_DATA/DAVIS``.
        subset: ``ImageSets/2017/<subset>.txt``; also names the CSV files.
        resolution: ``480p`` or ``Full-Resolution``.
        sequences: evaluate only these sequences of the subset.
        checkpoint: an mcjepa checkpoint, run directory or ``latest``.
        backbone: ``random`` for a randomly initialised encoder of ``arch``.
        arch: timm ConvNeXt name for ``--backbone random`` (default ``convnext_atto``).
        predictions: score the indexed PNGs in this folder instead of propagating.
        level: pyramid level used for affinities: index or stride (``s8`` default).
        topk: neighbours kept per target cell over all context frames.
        n_last: previous predicted frames in the context, besides the first frame.
        radius: square neighbourhood half-size in feature cells.
        temperature: affinity temperature.
        rescale: min-max rescale each upsampled label channel before the argmax, as DINO's
            ``norm_mask`` does.
        size: input short side in pixels; -1 = the dataset's default (480 for DAVIS, the
            rendered size for synthetic); None = each video's native size.
        device: ``auto``, ``cpu``, ``cuda``...
        output: results folder; default ``davis-eval/<dataset>-<subset>-<model>``, or the
            predictions folder when scoring existing PNGs (as the official toolkit does).
        json_path: also write the global numbers as JSON here.
        num_sequences: synthetic set: number of clips.
        num_frames: synthetic set: frames per clip.
        synthetic_size: synthetic set: (height, width) of the rendered clips.
        seed: synthetic set: world seed.
        log: called with one progress line per sequence.

    Returns:
        A ``DavisEvalResult``.

    Raises:
        UserError: bad options, missing data, missing or inconsistent prediction files; an
            output (``output``, ``json_path``) that is an input or lies inside the dataset's
            folder, or cannot be written there.
    """
    start = time.perf_counter()
    say = log or (lambda _msg: None)
    if dataset not in DATASETS:
        raise UserError(f"--dataset {dataset}", f"expected one of {', '.join(DATASETS)}")
    if size == -1:
        size = DEFAULT_SIZE[dataset]
    _check_options(topk, n_last, radius, temperature, size)
    sources = [x is not None for x in (checkpoint, backbone, predictions)]
    if sum(sources) != 1:
        what = "none was given" if not any(sources) else "several were given"
        raise UserError(
            "--checkpoint/--backbone/--predictions",
            f"give exactly one of --checkpoint PATH, --backbone random, --predictions DIR ({what})",
        )

    pred_dir: Path | None = None
    if predictions is not None:
        pred_dir = Path(predictions).expanduser()
        if not pred_dir.is_dir():
            raise UserError(
                pred_dir, "predictions folder not found (expected <sequence>/<frame>.png inside)"
            )

    if dataset == "davis":
        data_root, seqs = davis_sequences(
            root, subset, resolution, sequences, need_images=pred_dir is None
        )
        source: str = str(data_root)
    else:
        if root is not None:
            raise UserError(f"--root {root}", "does not apply to --dataset synthetic")
        h, w = synthetic_size
        seqs = synthetic_sequences(num_sequences, num_frames, h, w, seed)
        if sequences:
            unknown = [s for s in sequences if s not in {q.name for q in seqs}]
            if unknown:
                raise UserError(f"--sequences {','.join(unknown)}", "not in the synthetic set")
            seqs = [q for q in seqs if q.name in sequences]
        source = f"synthetic world, seed {seed}: {len(seqs)} clips x {num_frames} frames, {h}x{w}"

    settings: dict[str, Any] = {"dataset": dataset, "subset": subset, "data": source}
    read = Inputs()  # what this command reads: no output may be any of it
    if dataset == "davis":
        read.add_folder(data_root, "the dataset folder")
    extractor: _FeatureExtractor | None = None
    if pred_dir is None:
        from mcjepa_cli.engine.device import resolve_device

        dev = resolve_device(device)
        if checkpoint is not None and backbone is None and arch is None:
            from mcjepa_cli.engine.checkpoint import resolve_checkpoint

            ckpt_file = resolve_checkpoint(checkpoint)  # says which run 'latest' is, once
            read.add_file(ckpt_file, "the checkpoint")
            checkpoint = str(ckpt_file)
        model, model_desc, tag = _load_model(checkpoint, backbone, arch, dev)
        lvl = resolve_level(level, tuple(model.feature_strides))
        extractor = _FeatureExtractor(model, lvl, dev)
        default_out = Path("davis-eval") / f"{dataset}-{subset}-{tag}"
        out_dir = Path(output) if output is not None else default_out
        settings.update(
            model=model_desc, level=lvl, stride=extractor.stride, topk=topk, n_last=n_last,
            radius=radius, temperature=temperature, rescale=rescale, size=size, device=str(dev),
        )
    else:
        out_dir = Path(output) if output is not None else pred_dir
        settings.update(predictions=str(pred_dir))
        for seq in seqs:
            for frame in seq.frame_ids:
                read.add_file(pred_dir / seq.name / f"{frame}.png", "a --predictions file")
    # before anything is written: the outputs are none of the inputs, nor in the dataset
    flag = "--output" if output is not None else (
        "--output (default: the --predictions folder)" if pred_dir is not None else "--output")
    read.check_output(flag, out_dir)
    files = {
        "global_csv": out_dir / f"global_results-{subset}.csv",
        "per_sequence_csv": out_dir / f"per-sequence_results-{subset}.csv",
    }
    written = list(files.values())
    if pred_dir is None:
        written += [out_dir / seq.name / f"{frame}.png" for seq in seqs for frame in seq.frame_ids]
    for path in written:
        read.check_output(flag, path, given=out_dir)
    check_writable(flag, out_dir, folder=True)
    if json_path is not None and not is_stdout(json_path):
        read.check_output("--json", json_path)
        check_writable("--json", json_path)
    out_dir.mkdir(parents=True, exist_ok=True)

    objects: list[ObjectScore] = []
    for n, seq in enumerate(seqs, 1):
        t0 = time.perf_counter()
        gt = seq.annotations()  # (T, H, W)
        if len(seq) < 3:
            raise UserError(
                seq.name,
                f"has {len(seq)} frames; at least 3 are needed (the first and last are not scored)",
            )
        if gt.shape[0] != len(seq):
            raise UserError(seq.name, f"{gt.shape[0]} annotations for {len(seq)} frames")
        gt = np.where(gt == VOID_LABEL, 0, gt)  # void counts as background (official toolkit)
        num_objects = int(gt[0].max(initial=0))
        if pred_dir is not None:
            pred = _read_predictions(seq, pred_dir, gt, num_objects)
        else:
            assert extractor is not None
            options = {"topk": topk, "n_last": n_last, "radius": radius,
                       "temperature": temperature, "rescale": rescale}
            pred = _propagate(seq, gt, num_objects, extractor, size, out_dir, options)
        scores = evaluate_sequence(seq.name, gt, pred, num_objects)
        objects.extend(scores)
        jf = float(np.mean([(s.j_stats[0] + s.f_stats[0]) / 2 for s in scores])) if scores else 0.0
        say(f"[{n}/{len(seqs)}] {seq.name}: {len(seq)} frames, {num_objects} object(s), "
            f"J&F {jf:.3f} ({time.perf_counter() - t0:.1f} s)")
    if not objects:
        raise UserError(subset, "no object to score (every first-frame annotation is empty)")

    results = global_results(objects)
    atomic_write_text(files["global_csv"], global_csv(results))
    atomic_write_text(files["per_sequence_csv"], per_sequence_csv(objects))
    if json_path is not None:
        files["json"] = Path(json_path)
        payload = {k: results[k] for k in GLOBAL_COLUMNS}
        write_json_text(files["json"], json.dumps(payload, indent=2) + "\n")
    return DavisEvalResult(results, objects, out_dir, files, settings, time.perf_counter() - start)


def _propagate(
    seq: VideoSequence,
    gt: np.ndarray,
    num_objects: int,
    extractor: _FeatureExtractor,
    size: int | None,
    out_dir: Path,
    options: dict[str, Any],
) -> np.ndarray:
    """Propagate ``seq``'s first mask, write ``<out_dir>/<seq>/<frame>.png``, return (T, H, W)."""
    H, W = gt.shape[1:]
    first = seq.frame(0)
    if tuple(first.shape[-2:]) != (H, W):
        raise UserError(
            seq.name, f"frames are {first.shape[-1]}x{first.shape[-2]} but annotations {W}x{H}"
        )
    net_size = input_size(H, W, size, extractor.stride)
    cells = (net_size[0] // extractor.stride, net_size[1] // extractor.stride)
    first_labels = resize_labels(torch.from_numpy(gt[0].astype(np.int64)), cells)
    first_mask = labels_to_onehot(first_labels, num_objects + 1).to(extractor.device)  # (K+1, h, w)
    pred = np.zeros(gt.shape, dtype=np.uint8)
    seq_dir = out_dir / seq.name

    def features(i: int) -> torch.Tensor:
        frame = first if i == 0 else seq.frame(i)
        if tuple(frame.shape[-2:]) != (H, W):
            raise UserError(
                f"{seq.name}/{seq.frame_ids[i]}",
                f"frame is {frame.shape[-1]}x{frame.shape[-2]}, the sequence {W}x{H}",
            )
        return extractor(frame, net_size)

    def write(t: int, labels: torch.Tensor) -> None:
        # Frame 0 is the given ground truth itself (as DINO writes it), the rest predictions.
        pred[t] = gt[0] if t == 0 else labels.cpu().numpy().astype(np.uint8)
        write_palette_png(seq_dir / f"{seq.frame_ids[t]}.png", pred[t])

    propagate_sequence(
        features, first_mask, len(seq), output_size=(H, W), on_frame=write, return_maps=False,
        **options,
    )
    return pred
