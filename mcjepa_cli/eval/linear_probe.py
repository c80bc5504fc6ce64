"""Linear segmentation probe on a frozen pyramid backbone (VICRegL's protocol, DESIGN.md 3.2).

The chosen pyramid levels are bilinearly resized to the finest chosen level, concatenated,
batch-normalised and classified by one 1x1 convolution (VICRegL's ``LinearHead`` in
mmsegmentation). Training: AdamW, linear warm-up then poly decay, cross-entropy on random
resized crops and flips (ignore 255). Evaluation: sliding-window logits averaged over
overlapping windows, resized to the label's resolution, argmax.

CPU speed: with a frozen backbone the features of a fixed set of augmented crops per image
are computed once (``FeatureCache``, fp16) and the probe trains on them, so the backbone is
not the bottleneck. When it fits the memory budget the cache holds the head's input itself
(levels already resized and concatenated), so that a step is only BatchNorm, a 1x1 conv and
the loss. ``cache_crops=0`` draws a fresh augmentation every step instead (the exact protocol,
the default on GPUs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mcjepa_cli.data.segmentation import (
    IGNORE_INDEX,
    augment_pair,
    eval_size,
    pad_image,
    resize_pair,
)
from mcjepa_cli.engine.schedules import warmup_poly
from mcjepa_cli.errors import RunFailed, UserError

LogFn = Callable[[str], None]


class LinearSegHead(nn.Module):
    """Resize-concat of pyramid levels -> BatchNorm -> 1x1 conv to the classes.

    Args:
        in_channels: channels of the levels it reads, finest first.
        num_classes: number of output classes.
    """

    def __init__(self, *, in_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.num_classes = int(num_classes)
        total = sum(self.in_channels)
        self.bn = nn.BatchNorm2d(total)
        self.classifier = nn.Conv2d(total, self.num_classes, kernel_size=1)
        nn.init.normal_(self.classifier.weight, std=0.01)  # mmseg's cls_seg initialisation
        nn.init.zeros_(self.classifier.bias)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, h, w) of already concatenated features (B, sum(C_l), h, w)."""
        return self.classifier(self.bn(x.float()))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (B, num_classes, h0, w0) at the resolution of ``feats[0]`` (the finest level)."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} levels, got {len(feats)}")
        return self.classify(resize_concat(feats))


def resize_concat(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Levels (finest first) bilinearly resized to the first one's size and concatenated:
    (B, sum(C_l), h0, w0) float32 (mmseg's ``resize_concat`` input transform)."""
    size = feats[0].shape[-2:]
    resized = [feats[0].float()] + [
        F.interpolate(f.float(), size=size, mode="bilinear", align_corners=False)
        for f in feats[1:]
    ]
    return torch.cat(resized, dim=1)


def select_levels(model: nn.Module, strides: Sequence[int] | None) -> list[int]:
    """Indices of the pyramid levels with the given strides (None = every level).

    Raises:
        UserError: a stride the backbone does not produce.
    """
    available = [int(s) for s in model.feature_strides]
    if strides is None:
        return list(range(len(available)))
    out = []
    for s in strides:
        if int(s) not in available:
            raise UserError(f"--levels {','.join(str(x) for x in strides)}",
                            f"stride {s} is not a pyramid level; the backbone has strides "
                            f"{','.join(str(x) for x in available)}")
        out.append(available.index(int(s)))
    return sorted(set(out))


def pad_multiple(model: nn.Module) -> int:
    """Input sides must be multiples of this (the coarsest stride) for an exact pyramid."""
    return int(getattr(model, "pad_multiple", max(int(s) for s in model.feature_strides)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [0, 1] (float inputs are returned as they are)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def backbone_levels(
    model: nn.Module,
    images: torch.Tensor,
    levels: Sequence[int],
    autocast_dtype: torch.dtype | None = None,
) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Pyramid levels of (B, 3, H, W) images padded (bottom/right) to the coarsest stride.

    Returns:
        The selected levels (finest first) and the padded input size (H', W').
    """
    x = to_float(images)
    m = pad_multiple(model)
    h, w = x.shape[-2:]
    padded = (math.ceil(h / m) * m, math.ceil(w / m) * m)
    x = pad_image(x, padded)
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        feats = model.features(x)
    return [feats[i] for i in levels], padded


def upsample_logits(
    logits: torch.Tensor, padded: tuple[int, int], out: tuple[int, int],
) -> torch.Tensor:
    """Logits upsampled to the padded input size and cropped to ``out`` (B, C, H, W)."""
    logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
    return logits[..., : out[0], : out[1]]


def head_logits(
    head: LinearSegHead,
    feats: Sequence[torch.Tensor],
    padded: tuple[int, int],
    out: tuple[int, int],
) -> torch.Tensor:
    """Head logits of pyramid levels at the input resolution ``out`` (B, C, H, W)."""
    return upsample_logits(head(feats), padded, out)


@dataclass
class ProbeConfig:
    """Hyper-parameters of the linear probe (defaults: VICRegL's VOC config, see docs).

    Attributes:
        levels: pyramid level indices read by the head.
        crop: training crop and sliding-window size (H, W).
        slide_stride: sliding-window stride (H, W).
        scale: (long, short) rescale target of the train/test pipelines; None = native size.
        steps: optimisation steps.
        batch_size: crops per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps before the poly decay.
        poly_power: poly decay power.
        ratio_range: random rescale ratio range.
        cat_max_ratio: crops where one class covers more than this share are redrawn.
        cache_crops: augmented crops per training image whose features are cached (0 = none).
        cache_gb: refuse a feature cache larger than this many GB.
        finetune: also train the backbone (the paper's fine-tuned column).
        workers: data-loading worker processes.
        eval_batch: sliding windows per backbone call at evaluation.
        seed: random seed of augmentations and initialisation.
    """

    levels: list[int]
    crop: tuple[int, int] = (512, 512)
    slide_stride: tuple[int, int] = (341, 341)
    scale: tuple[int, int] | None = (2048, 512)
    steps: int = 40_000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 1500
    poly_power: float = 1.0
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    cache_crops: int = 0
    cache_gb: float = 8.0
    finetune: bool = False
    workers: int = 0
    eval_batch: int = 8
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# Training data: a deterministic stream of augmented crops.


class _ItemError:
    """A UserError raised inside a data-loading worker, carried back to the main process."""

    def __init__(self, error: UserError) -> None:
        self.culprit, self.expected = error.culprit, error.expected


class AugmentedCrops(Dataset):
    """Position p -> ``per_item`` augmented crops of image ``order[p]``, each with its own seed.

    The image is read (or rendered, for the synthetic world) once per position, however many
    crops are taken from it.

    Args:
        base: a segmentation dataset yielding (uint8 image, int64 label, name).
        order: image index of each position.
        cfg: probe configuration (crop, scale, ratio range, cat_max_ratio).
        seed: base seed; crop k of position p uses ``seed * 1_000_003 + p * per_item + k``.
        per_item: crops per position.
    """

    def __init__(
        self, base: Dataset, order: torch.Tensor, cfg: ProbeConfig, seed: int, per_item: int = 1,
    ) -> None:
        self.base, self.order, self.cfg, self.seed = base, order, cfg, seed
        self.per_item = int(per_item)

    def __len__(self) -> int:
        return int(self.order.numel())

    def __getitem__(self, p: int) -> tuple[torch.Tensor, torch.Tensor] | _ItemError:
        try:
            image, label, _ = self.base[int(self.order[p])]
        except UserError as e:
            return _ItemError(e)
        images, labels = [], []
        for k in range(self.per_item):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(p) * self.per_item + k)
            im, lb = augment_pair(image, label, self.cfg.crop, self.cfg.scale, gen,
                                  self.cfg.ratio_range, self.cfg.cat_max_ratio)
            images.append(im)
            labels.append(lb)
        return torch.stack(images), torch.stack(labels)  # (K, 3, h, w) uint8, (K, h, w) int64


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | _ItemError:
    for it in items:
        if isinstance(it, _ItemError):
            return it
    images = torch.cat([it[0] for it in items])  # (B * K, 3, h, w) uint8
    labels = torch.cat([it[1] for it in items])  # (B * K, h, w) int64
    return images, labels


def _epoch_order(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` image indices made of consecutive shuffled passes over ``n`` images."""
    passes = [torch.randperm(n, generator=generator) for _ in range(math.ceil(count / n))]
    return torch.cat(passes)[:count]


def _batches(crops: AugmentedCrops, batch_size: int, workers: int) -> Iterator[tuple]:
    loader = DataLoader(crops, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, drop_last=False,
                        persistent_workers=False)
    for batch in loader:
        if isinstance(batch, _ItemError):
            raise UserError(batch.culprit, batch.expected)
        yield batch


class FeatureCache:
    """Backbone features of augmented crops, stored in float16.

    Two layouts: ``concatenated`` keeps the head's input (levels already resized to the finest
    level and concatenated), so a training step is only BatchNorm + 1x1 conv; otherwise the
    levels are kept at their own resolution (about 4x smaller) and resized at every step.

    Args:
        feats: the concatenated features [(N, sum(C_l), h0, w0)], or one tensor per level
            (N, C_l, h_l, w_l).
        labels: (N, H, W) uint8 label crops (255 = ignore).
        padded: padded input size the features were computed at.
        concatenated: which layout ``feats`` has.
    """

    def __init__(
        self, feats: list[torch.Tensor], labels: torch.Tensor, padded: tuple[int, int],
        concatenated: bool,
    ) -> None:
        self.feats, self.labels, self.padded = feats, labels, padded
        self.concatenated = concatenated

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def nbytes(
        model: nn.Module, levels: Sequence[int], crop: tuple[int, int], n: int,
        concatenated: bool = False,
    ) -> int:
        """Bytes a cache of ``n`` crops takes in the given layout."""
        m = pad_multiple(model)
        ph, pw = math.ceil(crop[0] / m) * m, math.ceil(crop[1] / m) * m
        per = crop[0] * crop[1]  # uint8 label
        s0 = int(model.feature_strides[levels[0]])
        for i in levels:
            s = s0 if concatenated else int(model.feature_strides[i])
            per += 2 * int(model.feature_channels[i]) * math.ceil(ph / s) * math.ceil(pw / s)
        return per * n

    def batch(
        self, idx: torch.Tensor, device: torch.device,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """float32 features and int64 labels of the cached crops ``idx``."""
        feats = [f[idx].to(device, non_blocking=True).float() for f in self.feats]
        return feats, self.labels[idx].to(device).long()

    @classmethod
    @torch.no_grad()
    def build(
        cls, model: nn.Module, train_set: Dataset, cfg: ProbeConfig, device: torch.device,
        autocast_dtype: torch.dtype | None, log: LogFn, concatenated: bool = False,
    ) -> FeatureCache:
        """Compute the features of ``cfg.cache_crops`` augmented crops of every training image."""
        n_img = len(train_set)
        n = n_img * cfg.cache_crops
        # crop k of image i lands at i * cache_crops + k
        crops = AugmentedCrops(train_set, torch.arange(n_img), cfg, seed=cfg.seed,
                               per_item=cfg.cache_crops)
        feats: list[torch.Tensor] | None = None
        labels = torch.empty((n, *cfg.crop), dtype=torch.uint8)
        padded = cfg.crop
        start, t0 = 0, time.perf_counter()
        images_per_batch = max(1, cfg.eval_batch // cfg.cache_crops)
        for images, lab in _batches(crops, images_per_batch, cfg.workers):
            levels, padded = backbone_levels(model, images.to(device), cfg.levels, autocast_dtype)
            if concatenated:
                levels = [resize_concat(levels)]  # (b, sum(C_l), h0, w0)
            if feats is None:
                feats = [torch.empty((n, *f.shape[1:]), dtype=torch.float16) for f in levels]
            b = images.shape[0]
            for store, f in zip(feats, levels, strict=True):
                store[start : start + b] = f.to("cpu", torch.float16)
            labels[start : start + b] = lab.to(torch.uint8)  # 0..C-1 and 255 fit in uint8
            start += b
            if start == n or start % max(1, n // 5) < b:
                log(f"feature cache: {start}/{n} crops ({time.perf_counter() - t0:.0f} s)")
        assert feats is not None and start == n
        return cls(feats, labels, padded, concatenated)


# ----------------------------------------------------------------------------------------------
# Training loop.


@dataclass
class TrainSummary:
    """What the probe's training did."""

    steps: int
    final_loss: float
    seconds: float
    cache_crops: int
    cache_seconds: float


def train_probe(
    model: nn.Module,
    head: LinearSegHead,
    train_set: Dataset,
    cfg: ProbeConfig,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    log: LogFn = lambda s: None,
    log_every: int = 100,
) -> TrainSummary:
    """Train ``head`` (and the backbone when ``cfg.finetune``) on ``train_set``.

    The backbone stays in eval mode without gradients unless ``cfg.finetune``. With
    ``cfg.cache_crops > 0`` (frozen backbone only) the probe trains on cached features.

    Raises:
        UserError: an unreadable training file, or a cache larger than ``cfg.cache_gb``.
        RunFailed: the loss became non-finite.
    """
    if len(train_set) == 0:
        raise UserError("training split", "no training images found")
    torch.manual_seed(cfg.seed)
    head.to(device).train()
    params = list(head.parameters())
    if cfg.finetune:
        model.train()
        params += [p for p in model.parameters() if p.requires_grad]
    else:
        model.eval()
        model.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_poly(s, cfg.steps, cfg.warmup_steps, cfg.poly_power))
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    use_cache = cfg.cache_crops > 0 and not cfg.finetune
    cache, cache_seconds = None, 0.0
    if use_cache:
        n_crops = len(train_set) * cfg.cache_crops
        concat_need = FeatureCache.nbytes(model, cfg.levels, cfg.crop, n_crops, concatenated=True)
        need = FeatureCache.nbytes(model, cfg.levels, cfg.crop, n_crops)
        if need > cfg.cache_gb * 1e9:
            raise UserError(f"--cache-crops {cfg.cache_crops}",
                            f"the feature cache would take {need / 1e9:.1f} GB > --cache-gb "
                            f"{cfg.cache_gb:g}; lower --cache-crops or --train-images, or pass "
                            f"--cache-crops 0 (fresh crops every step)")
        t0 = time.perf_counter()
        cache = FeatureCache.build(model, train_set, cfg, device, autocast_dtype, log,
                                   concatenated=concat_need <= cfg.cache_gb * 1e9)
        cache_seconds = time.perf_counter() - t0
        order = _epoch_order(len(cache), cfg.steps * cfg.batch_size, gen)
        stream: Iterator = (order[i : i + cfg.batch_size]
                            for i in range(0, cfg.steps * cfg.batch_size, cfg.batch_size))
    else:
        order = _epoch_order(len(train_set), cfg.steps * cfg.batch_size, gen)
        crops = AugmentedCrops(train_set, order, cfg, seed=cfg.seed + 7)
        stream = _batches(crops, cfg.batch_size, cfg.workers)

    t0 = time.perf_counter()
    loss_avg, last = math.nan, math.nan
    for step in range(cfg.steps):
        batch = next(stream)
        if cache is not None:
            feats, labels = cache.batch(batch, device)  # labels (B, H, W)
            padded = cache.padded
        else:
            images, labels = batch
            images, labels = images.to(device), labels.to(device)
            with torch.set_grad_enabled(cfg.finetune):
                feats, padded = backbone_levels(model, images, cfg.levels, autocast_dtype)
        if not bool((labels != IGNORE_INDEX).any()):
            sched.step()
            continue  # nothing labelled in this batch (cross-entropy would be 0/0)
        with torch.autocast(device.type, dtype=autocast_dtype,
                            enabled=cfg.finetune and autocast_dtype is not None):
            coarse = head.classify(feats[0]) if cache is not None and cache.concatenated \
                else head(feats)  # (B, C, h0, w0)
            logits = upsample_logits(coarse, padded, tuple(labels.shape[-2:]))
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            raise RunFailed(f"linear probe: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = loss.detach().item()
        loss_avg = last if math.isnan(loss_avg) else 0.9 * loss_avg + 0.1 * last
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            el = time.perf_counter() - t0
            log(f"step {step + 1}/{cfg.steps}  loss {loss_avg:.4f}  lr {sched.get_last_lr()[0]:.2e}"
                f"  {(step + 1) / max(el, 1e-9):.1f} steps/s")
    model.eval()
    head.eval()
    return TrainSummary(cfg.steps, last, time.perf_counter() - t0,
                        cfg.cache_crops if use_cache else 0, cache_seconds)


# ----------------------------------------------------------------------------------------------
# Evaluation: sliding windows.


def window_boxes(
    h: int, w: int, crop: tuple[int, int], stride: tuple[int, int],
) -> list[tuple[int, int, int, int]]:
    """Windows (y1, y2, x1, x2) covering an h x w image (mmseg's slide inference grid)."""
    ch, cw = min(crop[0], h), min(crop[1], w)
    sh, sw = stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes


@torch.no_grad()
def slide_logits(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    num_classes: int,
    crop: tuple[int, int],
    stride: tuple[int, int],
    batch: int = 8,
) -> torch.Tensor:
    """Average of window logits over a (1, 3, H, W) image -> (1, num_classes, H, W).

    Args:
        predict: maps (B, 3, h, w) windows to (B, num_classes, h, w) logits.
        image: the image (any dtype ``predict`` accepts).
        num_classes: number of classes.
        crop: window size.
        stride: window stride.
        batch: windows per ``predict`` call.
    """
    _, _, h, w = image.shape
    boxes = window_boxes(h, w, crop, stride)
    total = torch.zeros((1, num_classes, h, w), device=image.device)
    count = torch.zeros((1, 1, h, w), device=image.device)
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        windows = torch.cat([image[..., y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
        logits = predict(windows).float()  # (b, C, ch, cw)
        for (y1, y2, x1, x2), lg in zip(chunk, logits, strict=True):
            total[0, :, y1:y2, x1:x2] += lg
            count[0, :, y1:y2, x1:x2] += 1
    return total / count


@torch.no_grad()
def predict_image(
    model: nn.Module,
    head: LinearSegHead,
    image: torch.Tensor,
    cfg: ProbeConfig,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Predicted class map (H, W) int64 of a uint8 (3, H, W) image: test rescale, sliding
    windows, logits resized back to the image's own size, argmax."""
    h, w = image.shape[-2:]
    resized, _ = resize_pair(image, None, eval_size(h, w, cfg.scale))
    x = resized[None].to(device)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        feats, padded = backbone_levels(model, windows, cfg.levels, autocast_dtype)
        return head_logits(head, feats, padded, tuple(windows.shape[-2:]))

    logits = slide_logits(predict, x, head.num_classes, cfg.crop, cfg.slide_stride, cfg.eval_batch)
    if tuple(logits.shape[-2:]) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits[0].argmax(0).cpu()
