"""``mcjepa segment-eval``: linear semantic segmentation on frozen pyramid features (DESIGN.md 3.2).

A plain function (``segment_eval``) that opens the dataset, loads the backbone (a checkpoint
or a random init of the same architecture), trains the linear probe (or loads one), scores
the evaluation split (mIoU over the whole split, pixel accuracy, per-class IoU) and writes
the probe, a JSON report and a few image / ground truth / prediction PNGs.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from mcjepa_cli.data.segmentation import (
    DATASETS,
    IGNORE_INDEX,
    PROTOCOLS,
    SegSplits,
    build_seg_splits,
    item_names,
    scaled_protocol_scale,
)
from mcjepa_cli.engine.device import resolve_device, resolve_precision
from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.linear_probe import (
    FeatureCache,
    LinearSegHead,
    ProbeConfig,
    TrainSummary,
    predict_image,
    select_levels,
    train_probe,
)
from mcjepa_cli.eval.seg_metrics import ConfusionMeter
from mcjepa_cli.io.atomic import atomic_torch_save, atomic_write_text
from mcjepa_cli.io.guard import Inputs, check_writable
from mcjepa_cli.io.images import voc_palette, write_png
from mcjepa_cli.io.json_out import is_stdout, write_json_text

PROBE_FORMAT = "mcjepa-seg-probe"
PROBE_VERSION = 1
PRESETS = ("protocol", "cpu")
DEFAULT_LEVELS = (4, 8, 16, 32)  # the four ConvNeXt stages, as VICRegL's LinearHead reads them
PROTOCOL_WARMUP = 1500  # mmseg warmup_iters in VICRegL's configs
PROTOCOL_BATCH = 16  # 8 GPUs x 2 images
PAPER_MIOU = {"voc": 67.1, "cityscapes": 65.5, "ade20k": 30.8}  # MC-JEPA Table 1, frozen linear

# The CPU preset: small crops, few steps, a feature cache; minutes on a laptop, not the paper.
# 100x fewer steps than the protocol, hence a 10x larger learning rate.
CPU_PRESET: dict[str, dict[str, Any]] = {
    "synthetic": {"steps": 400, "batch_size": 8, "lr": 1e-3, "crop": (128, 128),
                  "cache_crops": 4, "train_images": 128, "val_images": 128},
    "voc": {"steps": 1000, "batch_size": 8, "lr": 1e-3, "crop": (256, 256), "cache_crops": 2,
            "train_images": 500, "val_images": None},
    "cityscapes": {"steps": 1000, "batch_size": 8, "lr": 1e-3, "crop": (256, 512),
                   "cache_crops": 2, "train_images": 500, "val_images": None},
    "ade20k": {"steps": 1000, "batch_size": 8, "lr": 1e-3, "crop": (256, 256), "cache_crops": 2,
               "train_images": 500, "val_images": None},
}
PROTOCOL_LR = 1e-4
PROTOCOL_IMAGES: dict[str, tuple[int | None, int | None]] = {
    "synthetic": (1024, 256),  # generated images (train, val)
}
AUTO_CACHE_CROPS = {"synthetic": 4}  # frozen backbone on CPU; real datasets: 2

LogFn = Callable[[str], None]


@dataclass
class SegmentEvalResult:
    """What ``segment_eval`` measured and wrote.

    ``miou``, ``pixel_acc`` and the per-class IoUs are fractions in [0, 1]; a class whose
    union is empty over the whole split has IoU None and does not enter the mean.
    ``train_eval_overlap`` counts the scored images the probe was trained on: 0 unless
    ``allow_train_eval_overlap`` let a split without held-out images through, and then the
    scores are no benchmark result (``held_out`` False, no ``paper_miou`` in the JSON).
    """

    dataset: str
    split: str
    miou: float
    pixel_acc: float
    per_class_iou: dict[str, float | None]
    num_images: int
    backbone: str
    output_dir: str
    probe_path: str
    json_path: str
    example_paths: list[str]
    config: dict[str, Any]
    train: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    train_eval_overlap: int = 0

    @property
    def held_out(self) -> bool:
        """True when no scored image was seen by the probe in training."""
        return self.train_eval_overlap == 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no NaN: missing values are null)."""
        d = asdict(self)
        for k in ("miou", "pixel_acc"):
            if isinstance(d[k], float) and math.isnan(d[k]):
                d[k] = None
        d["held_out"] = self.held_out
        # a score on training images is not comparable with the paper's held-out figure
        d["paper_miou"] = PAPER_MIOU.get(self.dataset) if self.held_out else None
        return d


def parse_size(text: str | int | tuple[int, int] | None, option: str) -> tuple[int, int] | None:
    """``512`` -> (512, 512); ``512x1024`` -> (512, 1024) (height x width)."""
    if text is None:
        return None
    if isinstance(text, tuple):
        return text
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"{option} {text}", "expected N or HxW with positive integers") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise UserError(f"{option} {text}", "expected N or HxW with positive integers")
    return vals[0], vals[1]


def parse_levels(text: str | None) -> tuple[int, ...] | None:
    """``4,8,16,32`` -> strides; ``all`` -> None (every level); None -> the default."""
    if text is None:
        return DEFAULT_LEVELS
    if text.strip().lower() == "all":
        return None
    try:
        vals = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UserError(f"--levels {text}", "expected strides like 4,8,16,32 or 'all'") from None
    if not vals:
        raise UserError(f"--levels {text}", "expected strides like 4,8,16,32 or 'all'")
    return vals


def load_backbone(
    checkpoint: str | None, backbone: str, arch: str, device: torch.device, seed: int,
) -> tuple[nn.Module, str]:
    """The model whose features are probed, and a description of it.

    Raises:
        UserError: neither or both of a checkpoint and ``--backbone random``; a missing or
            foreign checkpoint.
    """
    from mcjepa_cli.engine.checkpoint import build_random_model, load_model, resolve_checkpoint

    if backbone == "random":
        if checkpoint:
            raise UserError("--checkpoint", "pass either --checkpoint PATH or --backbone random, "
                                            "not both")
        return build_random_model(arch, device=device, seed=seed), f"random {arch} (seed {seed})"
    if backbone != "checkpoint":
        raise UserError(f"--backbone {backbone}", "expected checkpoint or random")
    if not checkpoint:
        raise UserError("--checkpoint", "missing: pass --checkpoint PATH (a .pt file, a run "
                                        "directory or 'latest') or --backbone random")
    path = resolve_checkpoint(checkpoint)
    model, _ = load_model(str(path), device)
    return model, str(path)


def _subset(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    return Subset(ds, list(range(n)))


def _colourise(label: np.ndarray) -> np.ndarray:
    return voc_palette()[np.clip(label, 0, 255).astype(np.uint8)]  # (H, W, 3)


def write_example(path: Path, image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor) -> None:
    """Image | ground truth | prediction side by side (VOC colours, ignore = VOC's cream)."""
    img = image.permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    panels = [img, gap, _colourise(label.numpy()), gap, _colourise(pred.numpy())]
    write_png(path, np.concatenate(panels, axis=1))


def _probe_payload(
    head: LinearSegHead, model: nn.Module, cfg: ProbeConfig, splits: SegSplits, backbone: str,
    arch: str | None, train: TrainSummary, train_names: list[str],
) -> dict[str, Any]:
    strides = [int(model.feature_strides[i]) for i in cfg.levels]
    payload: dict[str, Any] = {
        "format": PROBE_FORMAT,
        "version": PROBE_VERSION,
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "in_channels": list(head.in_channels),
        "num_classes": head.num_classes,
        "class_names": list(splits.class_names),
        "dataset": splits.name,
        "level_strides": strides,
        "backbone": backbone,
        "arch": arch,
        "finetuned": cfg.finetune,
        "config": _config_dict(cfg, strides),
        "train": asdict(train),
        "train_names": list(train_names),  # ids of its training images: --probe checks overlap
    }
    if cfg.finetune:
        enc = getattr(model, "encoder", model)
        payload["backbone_state"] = {k: v.detach().cpu() for k, v in enc.state_dict().items()}
    return payload


def _check_outputs(splits: SegSplits, checkpoint: Path | None, probe: str | Path | None,
                   out_dir: Path, json_path: str | Path | None) -> None:
    """Refuse, before anything is written, outputs that are inputs or lie in the dataset."""
    read = Inputs()
    read.add_folder(splits.root, "the dataset folder")
    read.add_file(checkpoint, "the checkpoint")
    read.add_file(probe, "the --probe file")
    read.check_output("--output", out_dir)
    for name in ("probe.pt", "results.json") if probe is None else ("results.json",):
        read.check_output("--output", out_dir / name, given=out_dir)
    check_writable("--output", out_dir, folder=True)
    if json_path is not None and not is_stdout(json_path):
        read.check_output("--json", json_path)
        check_writable("--json", json_path)


def load_probe(path: str | Path, model: nn.Module, num_classes: int) -> tuple[LinearSegHead, dict]:
    """Load a probe written by ``segment_eval`` (``weights_only=True``) onto ``model``.

    A fine-tuned probe also loads its backbone weights into ``model``.

    Raises:
        UserError: missing, unreadable or foreign file; class count or channels that do not
            match the dataset or the backbone.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(p, "probe file not found (expected a probe.pt written by segment-eval)")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError,
            KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
        raise UserError(p, f"not a readable probe file ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT:
        raise UserError(p, "not a segment-eval probe (expected a probe.pt written by segment-eval)")
    if int(data["num_classes"]) != num_classes:
        raise UserError(p, f"probe has {data['num_classes']} classes, the dataset has "
                           f"{num_classes}")
    levels = select_levels(model, data["level_strides"])
    channels = [int(model.feature_channels[i]) for i in levels]
    if channels != [int(c) for c in data["in_channels"]]:
        raise UserError(p, f"probe reads channels {data['in_channels']}, the backbone's levels "
                           f"{data['level_strides']} have {channels}")
    head = LinearSegHead(in_channels=channels, num_classes=num_classes)
    head.load_state_dict(data["head"])
    if data.get("finetuned"):
        enc = getattr(model, "encoder", model)
        try:
            enc.load_state_dict(data["backbone_state"])
        except (RuntimeError, KeyError) as e:
            raise UserError(p, f"fine-tuned backbone weights do not fit this backbone "
                               f"({e.__class__.__name__})") from None
    return head.eval(), data


OVERLAP_FLAG = "--allow-train-eval-overlap"


def check_held_out(
    splits: SegSplits, trained_on: list[str], scored: list[str], allow: bool,
    probe: str | Path | None = None,
) -> int:
    """How many ``scored`` images are in ``trained_on``; refuse any unless ``allow``.

    Args:
        splits: the dataset (for its missing split files and names).
        trained_on: ids of the images the probe is (or was) trained on.
        scored: ids of the images to score.
        allow: ``--allow-train-eval-overlap``: score them anyway (the result is labelled).
        probe: the ``--probe`` file, when the probe was trained earlier.

    Raises:
        UserError: some scored images are training images and ``allow`` is False; the
            culprit is the missing split file that merged the splits, the ``--probe`` file
            or ``--split``.
    """
    seen = set(trained_on)
    overlap = sum(1 for n in scored if n in seen)
    if overlap == 0 or allow:
        return overlap
    same = (f"{overlap} of the {len(scored)} {splits.name} {splits.split} images to score "
            f"{'are' if overlap > 1 else 'is'}")
    if splits.missing_split_files:
        # the training list first: without it the probe learns from every annotated image
        first, *others = sorted(splits.missing_split_files, key=lambda f: f.stem != "train")
        nor = f" (nor {', '.join(f.name for f in others)})" if others else ""
        raise UserError(first, f"split file not found{nor}, so the training and evaluation "
                               f"splits cannot be separated: {same} also among the training "
                               f"images; add the split files (ImageSets/Segmentation/train.txt and "
                               f"{splits.split}.txt) or pass {OVERLAP_FLAG} to score on "
                               f"training images anyway (not a held-out result)")
    if probe is not None:
        raise UserError(f"--probe {probe}", f"{same} among the images this probe was trained "
                                            f"on; score another split or pass {OVERLAP_FLAG} "
                                            f"(not a held-out result)")
    raise UserError(f"--split {splits.split}", f"{same} also among the probe's training images; "
                                               f"score a held-out split (--split val) or pass "
                                               f"{OVERLAP_FLAG} (not a held-out result)")


def _config_dict(cfg: ProbeConfig, strides: list[int]) -> dict[str, Any]:
    d = asdict(cfg)
    d["levels"] = strides  # strides are meaningful to a reader, indices are not
    d["crop"] = list(cfg.crop)
    d["slide_stride"] = list(cfg.slide_stride)
    d["scale"] = list(cfg.scale) if cfg.scale is not None else None
    d["ratio_range"] = list(cfg.ratio_range)
    return d


def _auto_cache(
    dataset: str, requested: int | None, preset_value: int | None, finetune: bool,
    device: torch.device, model: nn.Module, levels: list[int], crop: tuple[int, int],
    n_train: int, cache_gb: float, notes: list[str],
) -> int:
    if requested is not None:
        if requested < 0:
            raise UserError(f"--cache-crops {requested}", "expected an integer >= 0")
        if finetune and requested > 0:
            raise UserError(f"--cache-crops {requested}",
                            "features cannot be cached with --finetune (pass --cache-crops 0)")
        return requested
    if finetune or device.type != "cpu":
        return 0  # fresh augmentation every step: the exact protocol
    want = preset_value if preset_value is not None else AUTO_CACHE_CROPS.get(dataset, 2)
    per = FeatureCache.nbytes(model, levels, crop, max(n_train, 1))
    fits = int(cache_gb * 1e9 // max(per, 1))
    k = min(want, fits)
    if k < want:
        notes.append(f"feature cache limited to {k} crops per image by --cache-gb {cache_gb:g}"
                     + (" (fresh crops every step instead)" if k == 0 else ""))
    return k


def segment_eval(
    dataset: str,
    *,
    root: str | Path | None = None,
    split: str = "val",
    checkpoint: str | None = None,
    backbone: str = "checkpoint",
    arch: str = "convnext_atto",
    preset: str = "protocol",
    steps: int | None = None,
    batch_size: int | None = None,
    crop_size: str | tuple[int, int] | None = None,
    slide_stride: str | tuple[int, int] | None = None,
    levels: str | None = None,
    lr: float | None = None,
    weight_decay: float = 0.05,
    warmup_steps: int | None = None,
    cache_crops: int | None = None,
    cache_gb: float = 8.0,
    finetune: bool = False,
    probe: str | Path | None = None,
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    examples: int = 4,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 0,
    seed: int = 0,
    train_images: int | None = None,
    val_images: int | None = None,
    synthetic_size: tuple[int, int] = (128, 160),
    model: nn.Module | None = None,
    log: LogFn | None = None,
    allow_train_eval_overlap: bool = False,
) -> SegmentEvalResult:
    """Train (or load) a linear segmentation probe on frozen features and score a split.

    Args:
        dataset: ``voc``, ``cityscapes``, ``ade20k`` or ``synthetic``.
        root: the dataset's folder (``VOC2012/``, the Cityscapes root, ``ADEChallengeData2016/``);
            None = ``$MCJEPA_DATA/<Name>``. Ignored for ``synthetic``.
        split: evaluation split (``val``).
        checkpoint: checkpoint file, run directory or ``latest`` (with ``backbone="checkpoint"``).
        backbone: ``checkpoint`` or ``random`` (same architecture, random initialisation).
        arch: timm ConvNeXt name for ``backbone="random"``.
        preset: ``protocol`` (VICRegL's values) or ``cpu`` (a small run for a laptop).
        steps: training steps (default: preset / protocol).
        batch_size: crops per step (protocol: 16).
        crop_size: training crop and sliding window, ``N`` or ``HxW`` (protocol: 512).
        slide_stride: sliding-window stride (default: 2/3 of the crop, 341 for 512).
        levels: pyramid strides read by the head, ``4,8,16,32`` (default) or ``all``.
        lr: AdamW learning rate (protocol 1e-4; cpu preset 1e-3).
        weight_decay: AdamW weight decay (0.05).
        warmup_steps: linear warm-up steps (default min(1500, 3.75% of steps)).
        cache_crops: augmented crops per image whose features are cached (default: 0 on GPU
            or with ``finetune``, else 4 synthetic / 2 real within ``cache_gb``).
        cache_gb: largest feature cache, in GB.
        finetune: also train the backbone.
        probe: a saved probe to evaluate instead of training one.
        output: output folder (default ``runs/segment-eval/<dataset>-<time>``).
        json_path: also write the JSON report here.
        examples: image / ground truth / prediction PNGs to write.
        device: ``auto``, ``cpu``, ``cuda``, ...
        precision: autocast for the backbone: ``auto`` (bf16 on CUDA), ``bf16``, ``fp16``, ``fp32``.
        workers: data-loading processes.
        seed: seed of the random backbone, the augmentations and the head.
        train_images: use only the first N training images (synthetic: how many to generate).
        val_images: score only the first N evaluation images (synthetic: how many to generate).
        synthetic_size: synthetic image size (H, W).
        model: an already built backbone (tests, notebooks); overrides checkpoint/backbone.
        log: progress printer (None = silent).
        allow_train_eval_overlap: score images the probe is (or, with ``probe``, was) trained
            on, e.g. a VOC folder without ``ImageSets/Segmentation/``; the result then says so
            (``train_eval_overlap``, ``held_out``) and carries no paper figure. Without it such
            a split is refused.

    Returns:
        The scores and the paths written.

    Raises:
        UserError: bad option values or input files (exit code 2 on the command line); an
            output (``output``, ``json_path``) that is an input or lies inside the dataset's
            folder, or cannot be written there; scored images that are training images of the
            probe (a missing VOC split file, ``--split train``, a ``probe`` trained on them)
            without ``allow_train_eval_overlap``.
    """
    t_start = time.perf_counter()
    say: LogFn = log or (lambda s: None)
    key = dataset.lower()
    if key not in DATASETS:
        raise UserError(f"--dataset {dataset}", f"expected one of {', '.join(DATASETS)}")
    if preset not in PRESETS:
        raise UserError(f"--preset {preset}", f"expected one of {', '.join(PRESETS)}")
    for name, value in (("--steps", steps), ("--batch-size", batch_size),
                        ("--train-images", train_images), ("--val-images", val_images)):
        if value is not None and value < 1:
            raise UserError(f"{name} {value}", "expected an integer >= 1")
    if warmup_steps is not None and warmup_steps < 0:
        raise UserError(f"--warmup-steps {warmup_steps}", "expected an integer >= 0")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"--lr {lr}", "expected a positive number")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise UserError(f"--weight-decay {weight_decay}", "expected a number >= 0")
    if probe is not None and finetune:
        raise UserError("--finetune", "cannot be combined with --probe (the probe is loaded, "
                                      "not trained)")
    if examples < 0 or workers < 0:
        raise UserError("--examples/--workers", "expected integers >= 0")
    protocol = PROTOCOLS[key]
    pre = CPU_PRESET[key] if preset == "cpu" else {}
    crop = parse_size(crop_size, "--crop-size") or pre.get("crop") or protocol.crop
    stride = parse_size(slide_stride, "--slide-stride") or (
        max(1, int(crop[0] * 2 / 3)), max(1, int(crop[1] * 2 / 3)))
    level_strides = parse_levels(levels)
    n_steps = steps or pre.get("steps") or protocol.steps
    n_batch = batch_size or pre.get("batch_size") or PROTOCOL_BATCH
    lr = lr or pre.get("lr") or PROTOCOL_LR
    warmup = warmup_steps if warmup_steps is not None else min(PROTOCOL_WARMUP,
                                                              round(n_steps * 0.0375))
    default_imgs = PROTOCOL_IMAGES.get(key, (None, None))
    n_train = train_images or pre.get("train_images") or default_imgs[0]
    n_val = val_images or pre.get("val_images") or default_imgs[1]

    # Data first: a wrong --root fails before any model is loaded.
    splits = build_seg_splits(key, root, split, synthetic_train=n_train or 1024,
                              synthetic_val=n_val or 256, synthetic_size=synthetic_size,
                              seed=seed)
    notes = list(splits.notes)
    train_set = _subset(splits.train, n_train)
    val_set = _subset(splits.val, n_val)
    if len(val_set) == 0:
        raise UserError(f"{splits.name} {split} split", "no evaluation images found")
    val_names = item_names(val_set)
    overlap = 0
    if probe is None:  # before any output: a split that is not held out stops here
        train_names = item_names(train_set)
        overlap = check_held_out(splits, train_names, val_names, allow_train_eval_overlap)
    for n in notes:
        say(f"note: {n}")

    dev = resolve_device(device)
    autocast_dtype = resolve_precision(precision, dev)
    ckpt_file: Path | None = None
    if model is not None:
        model = model.to(dev).eval()
        backbone_desc = f"given model ({model.__class__.__name__})"
    else:
        if backbone == "checkpoint" and checkpoint:
            from mcjepa_cli.engine.checkpoint import resolve_checkpoint

            ckpt_file = resolve_checkpoint(checkpoint)  # says which run 'latest' is, once
            checkpoint = str(ckpt_file)
        model, backbone_desc = load_backbone(checkpoint, backbone, arch, dev, seed)
    say(f"backbone: {backbone_desc}")

    train_info: dict[str, Any] | None = None
    if probe is not None:
        head, data = load_probe(probe, model, splits.num_classes)
        level_idx = select_levels(model, data["level_strides"])
        if levels is not None and tuple(data["level_strides"]) != tuple(
                int(model.feature_strides[i]) for i in select_levels(model, level_strides)):
            raise UserError(f"--levels {levels}", f"the probe reads levels {data['level_strides']}")
        if data.get("backbone") and data.get("backbone") != backbone_desc:
            notes.append(f"probe was trained on {data['backbone']}, evaluated on {backbone_desc}")
        if isinstance(data.get("train_names"), list) and data.get("dataset") == splits.name:
            overlap = check_held_out(splits, [str(n) for n in data["train_names"]], val_names,
                                     allow_train_eval_overlap, probe)
        elif data.get("dataset") == splits.name:
            notes.append("the probe does not list its training images (written by an older "
                         "mcjepa): whether they overlap the scored images is not checked")
        probe_path = Path(probe)
        train_info = data.get("train")
    else:
        level_idx = select_levels(model, level_strides)
    channels = [int(model.feature_channels[i]) for i in level_idx]
    cache_k = 0
    if probe is None:
        cache_k = _auto_cache(key, cache_crops, pre.get("cache_crops"), finetune, dev, model,
                              level_idx, crop, len(train_set), cache_gb, notes)
    cfg = ProbeConfig(
        levels=level_idx, crop=crop, slide_stride=stride,
        scale=scaled_protocol_scale(protocol, crop), steps=n_steps, batch_size=n_batch, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup, cache_crops=cache_k, cache_gb=cache_gb,
        finetune=finetune, workers=workers, seed=seed,
    )
    strides = [int(model.feature_strides[i]) for i in level_idx]
    out_dir = Path(output) if output else Path("runs") / "segment-eval" / (
        f"{key}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    _check_outputs(splits, ckpt_file, probe, out_dir, json_path)
    out_dir.mkdir(parents=True, exist_ok=True)

    if probe is None:
        say(f"probe: levels {strides} ({sum(channels)} channels) -> {splits.num_classes} classes; "
            f"{n_steps} steps x {n_batch} crops {crop[0]}x{crop[1]}; "
            f"{len(train_set)} training images; cache {cache_k} crops/image"
            + ("; fine-tuning the backbone" if finetune else ""))
        torch.manual_seed(seed)
        head = LinearSegHead(in_channels=channels, num_classes=splits.num_classes)
        summary = train_probe(model, head, train_set, cfg, dev, autocast_dtype, say,
                              log_every=max(1, min(100, n_steps // 10)))
        train_info = asdict(summary)
        probe_path = out_dir / "probe.pt"
        payload = _probe_payload(head, model, cfg, splits, backbone_desc,
                                 arch if backbone == "random" else None, summary, train_names)
        atomic_torch_save(probe_path, payload)
        say(f"probe saved: {probe_path}")
    head = head.to(dev).eval()
    model.eval()
    if overlap:
        notes.append(f"NOT HELD OUT: {overlap} of the {len(val_set)} scored images are training "
                     f"images of the probe ({OVERLAP_FLAG}); a fit check, not a benchmark "
                     f"result, and not comparable with the paper's figures")
        say(f"note: {notes[-1]}")

    meter = ConfusionMeter(splits.num_classes, IGNORE_INDEX)
    n_ex = min(examples, len(val_set))
    ex_at = set(np.linspace(0, len(val_set) - 1, n_ex).round().astype(int).tolist()) if n_ex \
        else set()
    example_paths: list[str] = []
    t_eval = time.perf_counter()
    for i in range(len(val_set)):
        image, label, name = val_set[i]
        pred = predict_image(model, head, image, cfg, dev, autocast_dtype)
        meter.update(pred, label)
        if i in ex_at:
            p = out_dir / "examples" / f"{name}.png"
            write_example(p, image, label, pred)
            example_paths.append(str(p))
        if (i + 1) % max(1, len(val_set) // 10) == 0 or i + 1 == len(val_set):
            say(f"evaluated {i + 1}/{len(val_set)} images ({time.perf_counter() - t_eval:.0f} s)")
    scores = meter.scores()
    per_class = {name: (None if math.isnan(v) else float(v))
                 for name, v in zip(splits.class_names, scores.iou, strict=True)}
    result = SegmentEvalResult(
        dataset=key, split=splits.split, miou=scores.miou, pixel_acc=scores.pixel_acc,
        per_class_iou=per_class, num_images=len(val_set), backbone=backbone_desc,
        output_dir=str(out_dir), probe_path=str(probe_path),
        json_path=str(json_path) if json_path is not None else str(out_dir / "results.json"),
        example_paths=example_paths,
        config={**_config_dict(cfg, strides), "preset": preset, "train_images": len(train_set)},
        train=train_info,
        notes=notes, seconds=time.perf_counter() - t_start, train_eval_overlap=overlap,
    )
    text = json.dumps(result.to_json(), indent=2) + "\n"
    atomic_write_text(out_dir / "results.json", text)
    if json_path is not None:
        write_json_text(json_path, text)
    return result
