"""Training augmentations with explicit randomness: VICReg's asymmetric two-view pipeline for the
content branch (Bardes et al. 2022, DESIGN.md 1.4) and crop/flip/swap for flow frame pairs.

Every random draw comes from a ``torch.Generator`` passed in by the caller (the datasets seed
one per sample from (seed, key)), never from the global RNG, so a resumed run reproduces the
exact crops and colours of an uninterrupted one. The image operations themselves are
torchvision.transforms.v2's functional kernels on float tensors in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mcjepa_cli.data.sources import AugmentConfig
from mcjepa_cli.errors import UserError

__all__ = [
    "AugmentConfig",
    "FlowAugmentConfig",
    "PairAugment",
    "TwoViewAugment",
    "ViewParams",
    "make_generator",
    "sample_seed",
]

# VICReg blurs with PIL's GaussianBlur, sigma ~ U(0.1, 2.0), on 224-px crops. We scale the sigma
# range with the crop side so a small (quickstart) crop is blurred as much, relative to its
# size, as the paper's.
BLUR_SIGMA_224 = (0.1, 2.0)
REFERENCE_CROP = 224
SOLARIZE_THRESHOLD = 128 / 255  # PIL ImageOps.solarize's default threshold (128 of 255)
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (e.g. ``(seed, key)``) with NumPy's SeedSequence.

    Negative parts are mapped to their 64-bit two's complement, so any int is accepted.
    """
    entropy = [int(p) & 0xFFFF_FFFF_FFFF_FFFF for p in parts]
    lo, hi = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31 ^ int(lo)) & 0x7FFF_FFFF_FFFF_FFFF


def make_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``sample_seed(*parts)``."""
    return torch.Generator().manual_seed(sample_seed(*parts))


def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * _rand(gen)


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high)."""
    return int(torch.randint(low, high, (1,), generator=gen))


def _to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 in [0, 1]; float input is passed through as float32."""
    if img.dtype == torch.uint8:
        return img.float().div_(255.0)
    return img.float()


def _pair(value: list[float] | tuple[float, ...] | float, key: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    vals = tuple(float(v) for v in value)
    if len(vals) != 2:
        raise UserError(key, f"expected two values [view1, view2] or [min, max], got {list(value)}")
    return vals  # type: ignore[return-value]


def _check_prob(p: float, key: str) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise UserError(key, f"expected a probability in [0, 1], got {p}")
    return float(p)


@dataclass
class ViewParams:
    """The random choices of one augmented view (all drawn before any pixel is touched)."""

    crop: tuple[int, int, int, int]  # top, left, height, width of the RandomResizedCrop box
    flip: bool
    jitter: tuple[list[int], float, float, float, float] | None  # op order, b, c, s, h factors
    grayscale: bool
    blur_sigma: float | None  # None = no blur
    solarize: bool


class TwoViewAugment:
    """VICReg's asymmetric two-view augmentation on one image (DESIGN.md 1.4).

    View 1: RandomResizedCrop(crop, scale, bicubic) -> h-flip 0.5 -> ColorJitter(0.4, 0.4, 0.2,
    0.1) p=0.8 -> grayscale p=0.2 -> Gaussian blur p=1.0 -> solarize p=0.0. View 2 is the same
    with blur p=0.1 and solarize p=0.2. The probabilities come from ``AugmentConfig``.

    Args:
        crop_size: side of the square output views in pixels.
        cfg: augmentation parameters; VICReg's values when None.
        key: recipe key quoted in error messages for bad values.
    """

    def __init__(
        self, crop_size: int, cfg: AugmentConfig | None = None, key: str = "data.augment"
    ) -> None:
        cfg = cfg or AugmentConfig()
        if int(crop_size) < 1:
            raise UserError("data.image_size", f"expected a positive crop size, got {crop_size}")
        self.crop_size = int(crop_size)
        lo, hi = _pair(cfg.crop_scale, f"{key}.crop_scale")
        if not 0.0 < lo <= hi <= 1.0:
            raise UserError(f"{key}.crop_scale", f"expected 0 < min <= max <= 1, got {[lo, hi]}")
        self.crop_scale = (lo, hi)
        self.flip = _check_prob(cfg.flip, f"{key}.flip")
        jitter = [float(v) for v in cfg.jitter]
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise UserError(
                f"{key}.jitter",
                "expected [brightness, contrast, saturation, hue] >= 0 "
                f"with hue <= 0.5, got {list(cfg.jitter)}",
            )
        self.jitter = jitter
        self.jitter_prob = _check_prob(cfg.jitter_prob, f"{key}.jitter_prob")
        self.grayscale_prob = _check_prob(cfg.grayscale_prob, f"{key}.grayscale_prob")
        self.blur_prob = tuple(
            _check_prob(p, f"{key}.blur_prob") for p in _pair(cfg.blur_prob, f"{key}.blur_prob")
        )
        self.solarize_prob = tuple(
            _check_prob(p, f"{key}.solarize_prob")
            for p in _pair(cfg.solarize_prob, f"{key}.solarize_prob")
        )
        scale = self.crop_size / REFERENCE_CROP
        self.blur_sigma = (BLUR_SIGMA_224[0] * scale, BLUR_SIGMA_224[1] * scale)
        k = 2 * math.ceil(3 * self.blur_sigma[1]) + 1  # covers +-3 sigma; odd
        largest = self.crop_size if self.crop_size % 2 else self.crop_size - 1
        self.blur_kernel = max(1, min(k, largest))  # 13 px at 224, 5 px at 64

    # ------------------------------------------------------------------ parameter draws
    def sample_crop(
        self, height: int, width: int, gen: torch.Generator
    ) -> tuple[int, int, int, int]:
        """RandomResizedCrop's box: 10 tries of (area, log-ratio), else a centred crop."""
        area = height * width
        log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
        for _ in range(10):
            target = area * _uniform(gen, *self.crop_scale)
            ratio = math.exp(_uniform(gen, log_lo, log_hi))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                return _randint(gen, 0, height - h + 1), _randint(gen, 0, width - w + 1), h, w
        in_ratio = width / height
        if in_ratio < CROP_RATIO[0]:
            w, h = width, int(round(width / CROP_RATIO[0]))
        elif in_ratio > CROP_RATIO[1]:
            h, w = height, int(round(height * CROP_RATIO[1]))
        else:
            h, w = height, width
        h, w = max(1, min(h, height)), max(1, min(w, width))
        return (height - h) // 2, (width - w) // 2, h, w

    def sample_params(self, view: int, height: int, width: int, gen: torch.Generator) -> ViewParams:
        """Draw the random choices of view ``view`` (0 or 1) for an image of ``height x width``."""
        crop = self.sample_crop(height, width, gen)
        flip = _rand(gen) < self.flip
        jitter = None
        if _rand(gen) < self.jitter_prob:
            b, c, s, h = self.jitter
            order = torch.randperm(4, generator=gen).tolist()
            jitter = (
                order,
                _uniform(gen, max(0.0, 1 - b), 1 + b),
                _uniform(gen, max(0.0, 1 - c), 1 + c),
                _uniform(gen, max(0.0, 1 - s), 1 + s),
                _uniform(gen, -h, h),
            )
        grayscale = _rand(gen) < self.grayscale_prob
        blur_sigma = _uniform(gen, *self.blur_sigma) if _rand(gen) < self.blur_prob[view] else None
        solarize = _rand(gen) < self.solarize_prob[view]
        return ViewParams(crop, flip, jitter, grayscale, blur_sigma, solarize)

    # ------------------------------------------------------------------ pixel operations
    def apply(self, img: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Apply drawn parameters to a uint8 or [0, 1] float image (3, H, W) -> (3, crop, crop)."""
        top, left, h, w = p.crop
        region = _to_float(
            img[:, top : top + h, left : left + w]
        )  # crop before converting: cheaper
        out = TF.resize(
            region,
            [self.crop_size, self.crop_size],
            interpolation=InterpolationMode.BICUBIC,
            antialias=True,
        )
        out = out.clamp(0.0, 1.0)  # bicubic overshoots
        if p.flip:
            out = TF.horizontal_flip(out)
        if p.jitter is not None:
            order, b, c, s, hue = p.jitter
            for op in order:
                if op == 0:
                    out = TF.adjust_brightness(out, b)
                elif op == 1:
                    out = TF.adjust_contrast(out, c)
                elif op == 2:
                    out = TF.adjust_saturation(out, s)
                else:
                    out = TF.adjust_hue(out, hue)
        if p.grayscale:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        if p.blur_sigma is not None:
            out = TF.gaussian_blur(
                out, [self.blur_kernel, self.blur_kernel], [p.blur_sigma, p.blur_sigma]
            )
        if p.solarize:
            out = TF.solarize(out, SOLARIZE_THRESHOLD)
        return out.clamp(0.0, 1.0).contiguous()

    def __call__(
        self, img: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views (3, crop, crop) float in [0, 1] of a uint8 or float [0, 1] (3, H, W) image."""
        _, height, width = img.shape
        p1 = self.sample_params(0, height, width, gen)
        p2 = self.sample_params(1, height, width, gen)
        return self.apply(img, p1), self.apply(img, p2)


@dataclass
class FlowAugmentConfig:
    """Frame-pair augmentation for the flow branch: the same geometry on both frames."""

    # random rescale factor range [min, max] (log-uniform) applied before cropping; [1, 1] keeps
    # the native resolution. Frames smaller than the crop are always enlarged to cover it.
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    hflip: float = 0.5  # probability of a horizontal flip (both frames)
    vflip: float = 0.0  # probability of a vertical flip (both frames)
    swap: float = 0.0  # probability of swapping the temporal order (image2 <-> image1)


class PairAugment:
    """Random crop (after an optional rescale / enlarge-to-fit), flips and temporal swap of a
    frame pair, with one set of random choices for both frames.

    Args:
        height: output crop height.
        width: output crop width.
        cfg: flip/swap/scale options; defaults when None.
        key: recipe key quoted in error messages.
    """

    def __init__(
        self,
        height: int,
        width: int,
        cfg: FlowAugmentConfig | None = None,
        key: str = "data.flow_augment",
    ) -> None:
        if int(height) < 1 or int(width) < 1:
            raise UserError(
                "data.flow_size", f"expected a positive [height, width], got {[height, width]}"
            )
        self.height, self.width = int(height), int(width)
        cfg = cfg or FlowAugmentConfig()
        lo, hi = _pair(cfg.scale, f"{key}.scale")
        if not 0.0 < lo <= hi:
            raise UserError(f"{key}.scale", f"expected 0 < min <= max, got {[lo, hi]}")
        self.scale = (lo, hi)
        self.hflip = _check_prob(cfg.hflip, f"{key}.hflip")
        self.vflip = _check_prob(cfg.vflip, f"{key}.vflip")
        self.swap = _check_prob(cfg.swap, f"{key}.swap")

    def __call__(
        self, image1: torch.Tensor, image2: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the augmented pair, float (3, height, width) in [0, 1] each."""
        if image1.shape != image2.shape:
            raise ValueError(
                f"frames of a pair differ in shape: {tuple(image1.shape)} vs {tuple(image2.shape)}"
            )
        img = torch.stack([image1, image2])  # (2, 3, H, W), uint8 or float
        _, _, H, W = img.shape
        s = math.exp(_uniform(gen, math.log(self.scale[0]), math.log(self.scale[1])))
        s = max(s, self.height / H, self.width / W)  # never smaller than the crop
        if abs(s - 1.0) > 1e-9:
            size = [max(self.height, round(H * s)), max(self.width, round(W * s))]
            img = TF.resize(
                _to_float(img), size, interpolation=InterpolationMode.BILINEAR, antialias=True
            )
            H, W = size
        top = _randint(gen, 0, H - self.height + 1)
        left = _randint(gen, 0, W - self.width + 1)
        img = _to_float(
            img[:, :, top : top + self.height, left : left + self.width]
        )  # (2, 3, h, w)
        img = img.clamp(0.0, 1.0)
        if _rand(gen) < self.hflip:
            img = img.flip(-1)
        if _rand(gen) < self.vflip:
            img = img.flip(-2)
        if _rand(gen) < self.swap:
            img = img.flip(0)
        img = img.contiguous()
        return img[0], img[1]
