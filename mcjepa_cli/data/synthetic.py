"""Procedural synthetic world: textured layers under random affine motion, with exact ground truth.

Every clip is a depth-ordered stack of layers: one textured background and a few textured
foreground shapes (ellipses, rectangles, convex polygons, blobs). Each layer lives in its own
canonical texture coordinates; a per-frame affine map ``A_t`` (canonical -> image, camera
motion included) places it in frame ``t``. Frames are rendered by back-mapping every pixel
through ``A_t^-1`` and sampling the layer raster bilinearly, compositing far to near. Because
the motion is known in closed form, the forward flow of the top visible layer at pixel ``x``
is exactly ``A_{t+1}(A_t^-1(x)) - x`` (no finite differences), and occlusion, instance and
class maps follow from the same layer stack. A class is a family of texture, colour and outline
statistics together, so that no single cue decides it. See docs/synthetic-world.md.

Conventions: pixel centres sit at integer coordinates ``(x, y)`` with ``x`` in ``[0, W-1]``;
flow channel 0 is horizontal (x), channel 1 vertical (y), in pixels. Everything is
deterministic from ``(seed, stream, index)`` through a local ``numpy.random.Generator``; the
global torch / numpy RNG state is neither read nor changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mcjepa_cli.errors import UserError

# Texture families; a layer's class id is the index of its family in this list.
SYNTHETIC_CLASS_NAMES: list[str] = [
    "stripes",
    "checkerboard",
    "dots",
    "noise",
    "cells",
    "waves",
    "bricks",
    "blobs",
]
NUM_CLASSES: int = len(SYNTHETIC_CLASS_NAMES)

# Seed streams: (stream, seed, index) tuples never collide, so the splits and the dataset
# kinds below draw from disjoint seed spaces. ``SyntheticWorld(seed=s).clip(i)`` uses stream 0,
# i.e. it is item ``i`` of ``SyntheticFlowPairs(..., seed=s, split="train")``.
_STREAMS: dict[tuple[str, str], int] = {
    ("flow", "train"): 0,
    ("flow", "val"): 1,
    ("images", "train"): 10,
    ("images", "val"): 11,
    ("segmentation", "train"): 20,
    ("segmentation", "val"): 21,
    ("videos", "val"): 30,
}
SPLITS: tuple[str, ...] = ("train", "val")

_SHAPES = ("ellipse", "rectangle", "polygon", "blob")


@dataclass
class SyntheticConfig:
    """Knobs of the procedural world (nested in recipes as ``data.synthetic``).

    Sizes and motions are fractions of the image so that the world looks alike at any
    resolution; per-frame motion caps are chosen so that typical flow is a few pixels at
    128x160 with a tail up to ~10-15% of the image size, close to Sintel/Middlebury statistics
    at that resolution (DESIGN.md section 5).
    """

    # Fewest foreground layers per clip (0 allows background-only clips).
    min_layers: int = 2
    # Most foreground layers per clip (drawn uniformly in [min_layers, max_layers]).
    max_layers: int = 5
    # Smallest foreground object diameter, as a fraction of the shorter image side.
    min_object_size: float = 0.2
    # Largest foreground object diameter, as a fraction of the shorter image side.
    max_object_size: float = 0.8
    # Largest per-frame translation of a layer, as a fraction of the longer image side;
    # speeds above one pixel are log-uniform in [1 px, this], so small motions dominate.
    max_translation: float = 0.12
    # Probability that a motion (each layer's, the camera's) is sub-pixel: under 1 px/frame.
    subpixel_fraction: float = 0.15
    # Largest per-frame rotation of a layer, in degrees.
    max_rotation_deg: float = 6.0
    # Largest per-frame relative scale change of a layer (0.06 = +-6% per frame).
    max_scale_change: float = 0.06
    # Probability that a clip has camera motion: a global affine applied to every layer.
    camera_motion: float = 0.9
    # Largest per-frame camera translation, as a fraction of the longer image side.
    camera_max_translation: float = 0.06
    # Largest per-frame camera roll about the image centre, in degrees.
    camera_max_rotation_deg: float = 2.0
    # Largest per-frame camera zoom (relative scale change about the image centre).
    camera_max_zoom: float = 0.03
    # Largest relative lighting change between consecutive frames (per-channel gain, offset
    # and a smooth spatial illumination field); 0 keeps the brightness constant.
    lighting_change: float = 0.06
    # Largest standard deviation of the additive sensor noise (zero-mean, uniform density,
    # images in [0, 1]); each clip draws its own level uniformly in [0, noise_std].
    noise_std: float = 0.02
    # Probability that a clip is blurred (Gaussian, sigma drawn in [0.3, max_blur_sigma] px).
    blur_prob: float = 0.25
    # Largest Gaussian blur sigma, in pixels at the rendered resolution.
    max_blur_sigma: float = 1.2
    # Classes are families of texture, colour and shape together, as real classes are (no
    # single cue decides). Colour: standard deviation of a surface's hue about its class's own
    # hue, in turns of the colour wheel (class hues lie 1/8 turn apart, so neighbours overlap);
    # >= 1 draws hues uniformly at random (the world before class colours).
    class_hue_spread: float = 0.1
    # Shape: probability that a foreground object takes its class's own outline (class k:
    # ellipse, rectangle, polygon, blob for k mod 4), else any outline at random; 0 = random.
    class_shape_prob: float = 0.5

    def __post_init__(self) -> None:
        """Check every field; a bad value raises ``UserError`` naming ``data.synthetic.<field>``."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"data.synthetic.{f.name}", f"expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise UserError(
                    f"data.synthetic.{f.name}", f"expected a finite value >= 0, got {value!r}"
                )
        for name in ("min_layers", "max_layers"):
            if int(getattr(self, name)) != getattr(self, name):
                raise UserError(
                    f"data.synthetic.{name}", f"expected an integer, got {getattr(self, name)!r}"
                )
        if self.max_layers < self.min_layers or self.max_layers > 16:
            raise UserError(
                "data.synthetic.max_layers",
                f"expected an integer in [min_layers={self.min_layers}, 16], "
                f"got {self.max_layers!r}",
            )
        for name in ("subpixel_fraction", "camera_motion", "blur_prob", "class_shape_prob"):
            if getattr(self, name) > 1:
                raise UserError(
                    f"data.synthetic.{name}",
                    f"expected a probability in [0, 1], got {getattr(self, name)!r}",
                )
        if not 0 < self.min_object_size <= self.max_object_size <= 2:
            raise UserError(
                "data.synthetic.min_object_size",
                f"expected 0 < min_object_size <= max_object_size <= 2, got "
                f"{self.min_object_size!r} and {self.max_object_size!r}",
            )
        if self.max_scale_change >= 0.5:
            raise UserError(
                "data.synthetic.max_scale_change",
                f"expected a value in [0, 0.5), got {self.max_scale_change!r}",
            )
        if self.lighting_change >= 0.5:
            raise UserError(
                "data.synthetic.lighting_change",
                f"expected a value in [0, 0.5), got {self.lighting_change!r}",
            )


@dataclass
class SyntheticClip:
    """One rendered clip with exact ground truth.

    Attributes:
        frames: (T, 3, H, W) float32 RGB in [0, 1].
        flow: (T-1, 2, H, W) float32 forward flow in pixels, frame t -> t+1 (x then y).
        occlusion: (T-1, H, W) bool, True where the pixel's target leaves the image or is
            covered by a nearer layer in frame t+1.
        instances: (T, H, W) int64, 0 = background, k = k-th foreground layer (far to near),
            stable through the clip.
        classes: (T, H, W) int64 texture-family ids in [0, NUM_CLASSES).
        layer_classes: (K+1,) int64 class id of each layer (index 0 = background), so that
            ``classes == layer_classes[instances]``.
    """

    frames: Tensor
    flow: Tensor
    occlusion: Tensor
    instances: Tensor
    classes: Tensor
    layer_classes: Tensor


# ----------------------------------------------------------------------------------------------
# small helpers


@lru_cache(maxsize=64)
def _grid_xy(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Texel/pixel centre coordinates, (h, w) each; cached, never modified in place."""
    ys = torch.arange(h, dtype=torch.float32)
    xs = torch.arange(w, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx, yy


@lru_cache(maxsize=16)
def _pixels_h(h: int, w: int) -> Tensor:
    """Homogeneous pixel coordinates (3, h*w): rows x, y, 1."""
    xx, yy = _grid_xy(h, w)
    return torch.stack([xx.reshape(-1), yy.reshape(-1), torch.ones(h * w)])


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    if hi <= lo:
        return float(lo)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (3,) in [0, 1], uniform in hue, spread in saturation and value."""
    h = rng.uniform(0.0, 1.0)
    s = rng.uniform(0.0, 1.0) ** 0.7
    v = rng.uniform(0.15, 1.0)
    return _hsv_color(h, s, v)


def _hsv_color(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


class _Palette:
    """Colours of one surface: drawn around its class's own hue, or at random.

    Classes are families of texture, colour and shape statistics together, as in real data:
    class ``k``'s colours have hues normally distributed about ``k / NUM_CLASSES`` of the colour
    wheel with standard deviation ``spread`` (in turns), and the saturation / value spread of
    ``_random_color``. Neighbouring classes' hues overlap, so colour alone does not decide the
    class. ``spread >= 1`` draws every colour with ``_random_color`` (hue uniform: the world
    before class colours, bitwise).
    """

    def __init__(self, family: int, spread: float) -> None:
        self.family = family
        self.spread = spread

    def __call__(self, rng: np.random.Generator, n: int) -> Tensor:
        if self.spread >= 1.0:
            return torch.from_numpy(np.stack([_random_color(rng) for _ in range(n)]))
        out = []
        for _ in range(n):
            h = (self.family / NUM_CLASSES + self.spread * rng.standard_normal()) % 1.0
            s = rng.uniform(0.0, 1.0) ** 0.7
            v = rng.uniform(0.15, 1.0)
            out.append(_hsv_color(h, s, v))
        return torch.from_numpy(np.stack(out))


def _lerp(c0: Tensor, c1: Tensor, p: Tensor) -> Tensor:
    """Blend two colours (3,) by a weight map p (h, w) -> (3, h, w)."""
    return c0[:, None, None] + (c1 - c0)[:, None, None] * p[None]


def _randn(rng: np.random.Generator, *shape: int) -> Tensor:
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


def _noise(rng: np.random.Generator, *shape: int) -> Tensor:
    """Zero-mean, unit-std uniform noise (much cheaper than Gaussian sampling for images)."""
    u = rng.random(shape, dtype=np.float32)
    return torch.from_numpy(u).sub_(0.5).mul_(math.sqrt(12.0))


def _fbm(
    rng: np.random.Generator,
    channels: int,
    h: int,
    w: int,
    cell_max: float,
    cell_min: float,
    roughness: float = 0.7,
) -> Tensor:
    """Multi-scale value noise (fractal Brownian motion), (channels, h, w), about unit std.

    Octaves have cell sizes cell_max, cell_max/2, ... down to cell_min (texels), weighted by
    (cell / cell_max) ** roughness. Built as a pyramid: the running sum is upsampled
    (bicubically) from one octave's lattice to the next before that octave's noise is added,
    so the cost is dominated by the finest lattice instead of one full-size upsampling per
    octave; a final bicubic resize maps the finest lattice onto the (h, w) texels.
    """
    cell_min = max(cell_min, 1.0)
    cell_max = max(cell_max, cell_min)
    n_oct = min(6, 1 + int(math.floor(math.log2(cell_max / cell_min))))
    out: Tensor | None = None
    total = 0.0
    for o in range(n_oct):
        cell = cell_max / (2**o)
        gh = max(2, int(math.ceil((h - 1) / cell)) + 1)
        gw = max(2, int(math.ceil((w - 1) / cell)) + 1)
        amp = (cell / cell_max) ** roughness
        noise = _randn(rng, 1, channels, gh, gw) * amp
        if out is None:
            out = noise
        else:
            out = F.interpolate(out, size=(gh, gw), mode="bicubic", align_corners=True) + noise
        total += amp * amp
    assert out is not None
    if out.shape[-2:] != (h, w):
        out = F.interpolate(out, size=(h, w), mode="bicubic", align_corners=True)
    return out[0] / math.sqrt(total)


def _rotated(xx: Tensor, yy: Tensor, theta: float, cx: float, cy: float) -> tuple[Tensor, Tensor]:
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = xx - cx, yy - cy
    return dx * c + dy * s, -dx * s + dy * c


def _soft_step(s: Tensor, sharpness: float) -> Tensor:
    return torch.sigmoid(s * sharpness)


# ----------------------------------------------------------------------------------------------
# texture families: each returns an RGB raster (3, h, w) in roughly [0, 1]
# ``pmax`` is the largest pattern period in texels (a fraction of the image's shorter side).


def _tex_stripes(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    xx, yy = _grid_xy(h, w)
    period = _loguniform(rng, 4.0, pmax)
    a, _ = _rotated(xx, yy, rng.uniform(0, math.pi), 0.0, 0.0)
    s = torch.sin(a * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi))
    # sharpness <= period / 2 keeps the edges over a texel wide (no aliasing when resampled)
    p = _soft_step(s - rng.uniform(-0.6, 0.6), _loguniform(rng, 1.0, max(1.5, period / 2)))
    c = pal(rng, 2)
    return _lerp(c[0], c[1], p)


def _tex_checkerboard(rng: np.random.Generator, h: int, w: int, pmax: float,
                      pal: _Palette) -> Tensor:
    xx, yy = _grid_xy(h, w)
    period = _loguniform(rng, 4.0, pmax)
    aspect = rng.uniform(0.6, 1.6)
    a, b = _rotated(xx, yy, rng.uniform(0, math.pi), 0.0, 0.0)
    s = torch.sin(a * (math.pi / period) + rng.uniform(0, 6.3)) * torch.sin(
        b * (math.pi / (period * aspect)) + rng.uniform(0, 6.3)
    )
    p = _soft_step(s, _loguniform(rng, 1.5, max(2.0, period)))
    c = pal(rng, 2)
    return _lerp(c[0], c[1], p)


def _tex_dots(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    xx, yy = _grid_xy(h, w)
    spacing = _loguniform(rng, 4.0, max(5.0, pmax))
    radius = spacing * rng.uniform(0.15, 0.42)
    a, b = _rotated(xx, yy, rng.uniform(0, math.pi), rng.uniform(0, spacing), 0.0)
    hexagonal = rng.random() < 0.5
    row_h = spacing * (math.sqrt(3) / 2 if hexagonal else 1.0)
    rows = b / row_h
    ri = torch.round(rows)
    fb = (rows - ri) * row_h
    shift = torch.remainder(ri, 2) * 0.5 if hexagonal else 0.0
    cols = a / spacing - shift
    fa = (cols - torch.round(cols)) * spacing
    d = torch.sqrt(fa * fa + fb * fb)
    p = (radius - d + 0.5).clamp(0.0, 1.0)
    c = pal(rng, 2)
    return _lerp(c[0], c[1], p)


def _tex_noise(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    n = _fbm(rng, 1, h, w, _loguniform(rng, pmax / 2, 2 * pmax), 2.0, rng.uniform(0.3, 1.0))[0]
    if rng.random() < 0.3:  # ridged ("marble") variant
        n = 1.5 - 2.5 * n.abs()
    p = torch.sigmoid(n * rng.uniform(0.8, 3.0))
    c = pal(rng, 3)
    w0 = (1 - 2 * p).clamp(min=0)
    w2 = (2 * p - 1).clamp(min=0)
    w1 = 1 - w0 - w2
    # three-stop colour ramp (elementwise, no BLAS: results must not depend on thread count)
    return c[0][:, None, None] * w0 + c[1][:, None, None] * w1 + c[2][:, None, None] * w2


def _half_res_coords(h: int, w: int) -> tuple[Tensor, int, int]:
    """Texel coordinates (x, y) of a half-resolution grid, (hh*wh, 2), whose bilinear x2
    upsampling (align_corners=False) lands on the full (h, w) raster."""
    hh, wh = (h + 1) // 2, (w + 1) // 2
    xx, yy = _grid_xy(hh, wh)
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1) * 2.0 + 0.5, hh, wh


def _upsample2(x: Tensor, h: int, w: int) -> Tensor:
    """Bilinear x2 upsampling (align_corners=False, edges replicated) of (C, hh, wh), cropped
    to (C, h, w).

    Written out with elementwise ops: torch's bilinear upsampling kernel rounds differently
    with different intra-op thread counts, and clips must be bitwise reproducible.
    """
    p = F.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]  # (C, hh+2, wh+2)
    # rows: output 2i = 3/4 x[i] + 1/4 x[i-1], output 2i+1 = 3/4 x[i] + 1/4 x[i+1]
    mid = 0.75 * p[:, 1:-1]
    rows = torch.stack([mid + 0.25 * p[:, :-2], mid + 0.25 * p[:, 2:]], 2)
    rows = rows.reshape(x.shape[0], -1, p.shape[2])  # (C, 2*hh, wh+2)
    mid = 0.75 * rows[..., 1:-1]
    cols = torch.stack([mid + 0.25 * rows[..., :-2], mid + 0.25 * rows[..., 2:]], -1)
    cols = cols.reshape(x.shape[0], rows.shape[1], -1)  # (C, 2*hh, 2*wh)
    return cols[:, :h, :w]


def _tex_cells(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    # Voronoi cells, computed at half resolution (the fields are smooth or piecewise
    # constant; bilinear upsampling anti-aliases the cell boundaries)
    cell = _loguniform(rng, 6.0, max(7.0, 1.5 * pmax))
    n = int(np.clip(round(h * w / (cell * cell)), 2, 40))
    seeds = torch.from_numpy(
        (rng.random((n, 2)) * np.array([w, h]) - 0.5).astype(np.float32)
    )  # (n, 2) x, y
    pts, hh, wh = _half_res_coords(h, w)  # (hh*wh, 2)
    # squared distances (hh*wh, n), elementwise: matmul-based distances would depend on the
    # BLAS thread count, and every clip must be bitwise reproducible
    d = (pts[:, :1] - seeds[:, 0]) ** 2 + (pts[:, 1:] - seeds[:, 1]) ** 2
    # nearest and second-nearest seed (two min passes: much cheaper than topk here)
    d1, nearest = d.min(dim=1)
    d.scatter_(1, nearest[:, None], float("inf"))
    d1 = d1.clamp(min=0).sqrt()
    d2 = d.min(dim=1).values.clamp(min=0).sqrt()
    vals = torch.from_numpy(rng.random(n, dtype=np.float32))[nearest]
    fields = _upsample2(torch.stack([vals, d1, d2 - d1]).reshape(3, hh, wh), h, w)
    c = pal(rng, 3)
    rgb = _lerp(c[0], c[1], fields[0])
    if rng.random() < 0.5:  # pebble shading: darker away from the seed
        rgb = rgb * (1 - 0.4 * (fields[1] / cell).clamp(max=1.0))[None]
    border = rng.uniform(0.0, 2.0)
    edge = (border - 0.5 * fields[2] + 0.5).clamp(0.0, 1.0)
    return rgb + (c[2][:, None, None] - rgb) * edge[None]


def _tex_waves(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    xx, yy = _grid_xy(h, w)
    period = _loguniform(rng, 4.0, pmax)
    if rng.random() < 0.35:  # concentric rings about a point that may lie off the raster
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
        a = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    else:  # wavy lines
        a, b = _rotated(xx, yy, rng.uniform(0, math.pi), 0.0, 0.0)
        wavelength = period * _loguniform(rng, 2.0, 8.0)
        a = a + period * rng.uniform(0.3, 1.5) * torch.sin(
            b * (2 * math.pi / wavelength) + rng.uniform(0, 6.3)
        )
    s = torch.sin(a * (2 * math.pi / period) + rng.uniform(0, 6.3))
    p = _soft_step(s - rng.uniform(-0.4, 0.4), _loguniform(rng, 1.0, max(1.5, period / 2)))
    c = pal(rng, 2)
    return _lerp(c[0], c[1], p)


def _tex_bricks(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    xx, yy = _grid_xy(h, w)
    bh = _loguniform(rng, 4.0, max(5.0, pmax))
    bw = bh * rng.uniform(1.5, 3.0)
    mortar = rng.uniform(0.5, max(0.6, 0.2 * bh))
    theta = rng.uniform(-0.3, 0.3) if rng.random() < 0.7 else rng.uniform(0, math.pi)
    a, b = _rotated(xx, yy, theta, rng.uniform(0, bw), rng.uniform(0, bh))
    row = torch.floor(b / bh)
    a2 = a + torch.remainder(row, 2) * (bw / 2)
    col = torch.floor(a2 / bw)
    fu = a2 - col * bw
    fv = b - row * bh
    d = torch.minimum(torch.minimum(fu, bw - fu), torch.minimum(fv, bh - fv))
    edge = (mortar - d + 0.5).clamp(0.0, 1.0)
    table = torch.from_numpy(rng.random(61, dtype=np.float32))
    tid = torch.remainder(row * 7 + col * 13, 61).long()
    c = pal(rng, 3)
    rgb = _lerp(c[0], c[1], table[tid] * rng.uniform(0.2, 1.0))
    return rgb + (c[2][:, None, None] - rgb) * edge[None]


def _tex_blobs(rng: np.random.Generator, h: int, w: int, pmax: float, pal: _Palette) -> Tensor:
    # smooth colour blobs: a Gaussian-weighted mix of colours, computed at half resolution
    pts, hh, wh = _half_res_coords(h, w)  # (hh*wh, 2)
    n = int(rng.integers(3, 9))
    size = max(4.0, min(h, w))
    centers = torch.from_numpy((rng.random((n, 2)) * np.array([w, h])).astype(np.float32))
    sig = torch.from_numpy(
        np.exp(rng.uniform(math.log(0.08), math.log(0.4), n)).astype(np.float32) * size
    )
    # elementwise (no BLAS), so results do not depend on the thread count
    d2 = (pts[:, 0] - centers[:, :1]) ** 2 + (pts[:, 1] - centers[:, 1:]) ** 2  # (n, hh*wh)
    wts = torch.exp(-d2 / (2 * sig[:, None] ** 2))
    c = pal(rng, n + 1)
    base_w = rng.uniform(0.05, 0.5)
    mix = (c[1:, :, None] * wts[:, None]).sum(0)  # (3, hh*wh)
    rgb = (c[0][:, None] * base_w + mix) / (base_w + wts.sum(0, keepdim=True))
    return _upsample2(rgb.reshape(3, hh, wh), h, w)


_FAMILIES = (
    _tex_stripes,
    _tex_checkerboard,
    _tex_dots,
    _tex_noise,
    _tex_cells,
    _tex_waves,
    _tex_bricks,
    _tex_blobs,
)
assert len(_FAMILIES) == NUM_CLASSES


_TILE = 256


@lru_cache(maxsize=1)
def _detail_tiles() -> Tensor:
    """Two periodic detail fields shared by every layer, (2, 2*_TILE, 2*_TILE) float32.

    Channel 0 is fine grain (white noise blurred with sigma 1 texel), channel 1 smooth
    shading (sigma 16 texels); both zero-mean, unit-std and periodic (filtered in the
    Fourier domain), stored tiled 2x2 so that any crop up to _TILE wide is a view. They are
    fixed (a constant seed): part of the world's definition, like its texture families.
    """
    rng = np.random.default_rng(0x5EED)
    freq = np.fft.fftfreq(_TILE)
    fy, fx = np.meshgrid(freq, freq, indexing="ij")
    r2 = fx * fx + fy * fy
    fields = []
    for sigma in (1.0, 16.0):
        white = rng.standard_normal((_TILE, _TILE))
        # Gaussian blur = multiplying the spectrum by exp(-2 pi^2 sigma^2 f^2)
        f = np.real(np.fft.ifft2(np.fft.fft2(white) * np.exp(-2 * (math.pi * sigma) ** 2 * r2)))
        fields.append((f - f.mean()) / f.std())
    tiles = np.tile(np.stack(fields), (1, 2, 2)).astype(np.float32)
    return torch.from_numpy(tiles)


def _detail_crop(rng: np.random.Generator, h: int, w: int) -> Tensor:
    """A (2, h, w) crop of the detail tiles at a random offset (periodic wrap-around)."""
    oy, ox = (int(v) for v in rng.integers(0, _TILE, 2))
    tiles = _detail_tiles()
    if h <= _TILE and w <= _TILE:
        return tiles[:, oy : oy + h, ox : ox + w]
    rows = (torch.arange(h) + oy) % _TILE
    cols = (torch.arange(w) + ox) % _TILE
    return tiles[:, rows][:, :, cols]


def _texture(rng: np.random.Generator, family: int, h: int, w: int, size: float,
             hue_spread: float = 1.0) -> Tensor:
    """An RGB texture raster (3, h, w), about [0, 1], of one family, with shading and grain.

    ``size`` is the surface's characteristic size in texels (the image's shorter side for the
    background, about twice the diameter for an object); pattern periods reach 0.3 of it, so
    that even a small object shows several periods of its family's pattern. The grain
    (band-limited noise about two texels wide, so that resampling does not alias it) gives
    every surface some texture, as real surfaces have; the shading is a smooth
    multiplicative field. Both belong to the layer: they move with it and the flow stays
    exact.
    """
    pmax = max(5.0, 0.3 * size)
    rgb = _FAMILIES[family](rng, h, w, pmax, _Palette(family, hue_spread))
    detail = _detail_crop(rng, h, w)  # (2, h, w) grain, shading
    shade = 1.0 + rng.uniform(0.0, 0.15) * detail[1:]  # (1, h, w)
    return torch.add(rgb * shade, detail[:1], alpha=rng.uniform(0.01, 0.06))


# ----------------------------------------------------------------------------------------------
# shapes: an alpha raster (h, w) in [0, 1] with a ~1 texel anti-aliased edge


def _shape_alpha(rng: np.random.Generator, kind: str, n: int, radius: float) -> Tensor:
    """Alpha of a shape centred in an (n, n) raster, fitting in a disc of ``radius`` texels."""
    xx, yy = _grid_xy(n, n)
    c = (n - 1) / 2
    a, b = _rotated(xx, yy, rng.uniform(0, 2 * math.pi), c, c)
    if kind == "ellipse":
        ra, rb = radius, radius * rng.uniform(0.35, 1.0)
        rho = torch.sqrt((a / ra) ** 2 + (b / rb) ** 2).clamp(min=1e-6)
        r = torch.sqrt(a * a + b * b)
        sdf = r / rho - r  # distance to the boundary along the ray, positive inside
    elif kind == "rectangle":
        ang = rng.uniform(0.2, 1.37)
        hx, hy = radius * math.cos(ang), radius * math.sin(ang)
        sdf = torch.minimum(hx - a.abs(), hy - b.abs())
    elif kind == "polygon":  # convex polygon inscribed in the circle
        k = int(rng.integers(3, 9))
        angles = (np.arange(k) + rng.uniform(-0.35, 0.35, k)) * (2 * math.pi / k)
        vx, vy = radius * np.cos(angles), radius * np.sin(angles)
        ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy
        norm = np.hypot(ex, ey)
        nx, ny = -ey / norm, ex / norm  # inward normals of a counter-clockwise polygon
        off = vx * nx + vy * ny
        nx_t, ny_t, off_t = (
            torch.from_numpy(v.astype(np.float32))[:, None, None] for v in (nx, ny, off)
        )  # (k, 1, 1) each
        # signed distance to the polygon: the smallest distance to its edge lines
        sdf = (a[None] * nx_t + b[None] * ny_t - off_t).amin(dim=0)
    elif kind == "blob":  # star-shaped: radius varies smoothly with the angle
        theta = torch.atan2(b, a)
        amps = rng.uniform(0.0, 0.25, 4) / np.arange(1, 5) ** 0.5
        phases = rng.uniform(0, 2 * math.pi, 4)
        rt = torch.ones_like(theta)
        for j in range(4):
            rt = rt + float(amps[j]) * torch.cos((j + 2) * theta + float(phases[j]))
        rt = rt * (radius / (1 + amps.sum()))
        sdf = rt - torch.sqrt(a * a + b * b)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return (sdf + 0.5).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# affine motion


def _similarity(tx: float, ty: float, angle: float, scale: float) -> np.ndarray:
    """3x3 matrix x -> scale * R(angle) x + t."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _about(center: tuple[float, float], m: np.ndarray) -> np.ndarray:
    """Apply m about ``center`` instead of the origin."""
    t = np.array([[1.0, 0, center[0]], [0, 1.0, center[1]], [0, 0, 1.0]])
    ti = np.array([[1.0, 0, -center[0]], [0, 1.0, -center[1]], [0, 0, 1.0]])
    return t @ m @ ti


@dataclass
class _Motion:
    """Constant-velocity motion: translation (px/frame), rotation (rad/frame), log-scale/frame."""

    vx: float
    vy: float
    omega: float
    sigma: float


def _sample_motion(
    rng: np.random.Generator,
    max_px: float,
    max_rot: float,
    max_log_scale: float,
    radius: float,
    subpixel_fraction: float,
) -> _Motion:
    """Draw one moving thing's per-frame motion.

    With probability ``subpixel_fraction`` every point of the thing (within ``radius`` of its
    centre) moves less than one pixel per frame; otherwise the speed is log-uniform in
    [1, max_px] px, which makes small motions common and large ones rare, and rotation and
    scale change are drawn with squared uniforms (also skewed to small values).
    """
    direction = rng.uniform(0, 2 * math.pi)
    radius = max(radius, 1.0)
    if rng.random() < subpixel_fraction:
        # split the one-pixel budget between translation, rotation and scaling
        share = rng.dirichlet([1.0, 1.0, 1.0]) * rng.uniform(0.0, 0.95)
        speed = share[0]
        omega = rng.choice([-1.0, 1.0]) * min(share[1] / radius, max_rot)
        sigma = rng.choice([-1.0, 1.0]) * min(share[2] / radius, max_log_scale)
    else:
        speed = _loguniform(rng, 1.0, max(1.0, max_px))
        omega = rng.choice([-1.0, 1.0]) * max_rot * rng.random() ** 2
        sigma = rng.choice([-1.0, 1.0]) * max_log_scale * rng.random() ** 2
        # keep the rim displacement from rotation/scaling within the translation cap
        rim = max(abs(omega), abs(sigma)) * radius
        if rim > max_px:
            omega *= max_px / rim
            sigma *= max_px / rim
    return _Motion(speed * math.cos(direction), speed * math.sin(direction), omega, sigma)


def _fit_trajectory(
    rng: np.random.Generator, motion: _Motion, num_frames: int, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Pick a start point so that start + v*t stays in the box [lo, hi] for all frames.

    The velocity is shrunk (in place) where the box is too small for the whole trajectory,
    and the total scale change over the clip is kept within x1.6 either way.
    """
    span = num_frames - 1
    v = np.array([motion.vx, motion.vy])
    extent = hi - lo
    if span > 0:
        for i in range(2):
            if abs(v[i]) * span > extent[i]:
                v[i] = math.copysign(extent[i] / span, v[i])
        if abs(motion.sigma) * span > math.log(1.6):
            motion.sigma = math.copysign(math.log(1.6) / span, motion.sigma)
    motion.vx, motion.vy = float(v[0]), float(v[1])
    start_lo = np.where(v >= 0, lo, lo - v * span)
    start_hi = np.where(v >= 0, hi - v * span, hi)
    start_hi = np.maximum(start_hi, start_lo)
    return start_lo + rng.random(2) * (start_hi - start_lo)


# ----------------------------------------------------------------------------------------------
# the world


@dataclass
class _Layer:
    raster: Tensor  # (C, h, w): RGB (+ alpha for foreground layers)
    affines: np.ndarray  # (T, 3, 3) canonical texel -> image pixel, float64
    family: int


class SyntheticWorld:
    """An endless, seeded source of synthetic clips with exact flow, occlusion and labels.

    Args:
        cfg: the world's knobs; ``SyntheticConfig()`` when None.
        seed: non-negative integer; with ``stream`` and the clip index it fixes every clip.
        stream: seed stream (the datasets use disjoint streams for their splits).
    """

    def __init__(
        self, cfg: SyntheticConfig | None = None, seed: int = 0, *, stream: int = 0
    ) -> None:
        self.cfg = cfg if cfg is not None else SyntheticConfig()
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise UserError("seed", f"expected a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.stream = int(stream)

    def clip(
        self, index: int, num_frames: int = 2, height: int = 128, width: int = 160
    ) -> SyntheticClip:
        """Render clip ``index``: deterministic from (seed, stream, index) and the sizes.

        Args:
            index: non-negative clip number.
            num_frames: T >= 1 frames; T = 1 gives a single image and empty flow/occlusion.
            height: H >= 1 pixels.
            width: W >= 1 pixels.

        Returns:
            A ``SyntheticClip``; clips with T > 2 continue the same constant-velocity motions.
        """
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
            raise UserError("index", f"expected a non-negative integer, got {index!r}")
        rng = np.random.default_rng([self.stream, self.seed, int(index)])
        return _draw_clip(self.cfg, rng, num_frames, height, width)


def _check_size(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise UserError(name, f"expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _draw_clip(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    num_frames: int,
    height: int,
    width: int,
    max_objects: int | None = None,
) -> SyntheticClip:
    """Draw and render one clip from ``rng`` (see ``SyntheticWorld.clip``).

    Args:
        cfg: the world's knobs.
        rng: the clip's own random generator; consumed in a fixed order.
        num_frames: T >= 1.
        height: H >= 1.
        width: W >= 1.
        max_objects: optional cap on the number of foreground layers (videos use 4).
    """
    T = _check_size("num_frames", num_frames)
    H = _check_size("height", height)
    W = _check_size("width", width)
    short, long_ = min(H, W), max(H, W)
    center = ((W - 1) / 2, (H - 1) / 2)

    # camera: C_t maps world coordinates (= frame-0 image coordinates) to frame t
    cams = np.repeat(np.eye(3)[None], T, axis=0)
    if rng.random() < cfg.camera_motion:
        cam = _sample_motion(
            rng,
            cfg.camera_max_translation * long_,
            math.radians(cfg.camera_max_rotation_deg),
            cfg.camera_max_zoom,
            0.5 * math.hypot(H, W),
            cfg.subpixel_fraction,
        )
        if T > 2:  # keep the total camera drift within a quarter of the image
            drift = math.hypot(cam.vx, cam.vy) * (T - 1)
            if drift > 0.25 * long_:
                cam.vx *= 0.25 * long_ / drift
                cam.vy *= 0.25 * long_ / drift
            cam.omega = float(np.clip(cam.omega, -0.5 / (T - 1), 0.5 / (T - 1)))
            cam.sigma = float(np.clip(cam.sigma, -0.3 / (T - 1), 0.3 / (T - 1)))
        for t in range(T):
            m = _similarity(cam.vx * t, cam.vy * t, cam.omega * t, math.exp(cam.sigma * t))
            cams[t] = _about(center, m)

    # foreground layers, far to near
    k_max = int(cfg.max_layers) if max_objects is None else min(int(cfg.max_layers), max_objects)
    k_min = min(int(cfg.min_layers), k_max)
    num_fg = int(rng.integers(k_min, k_max + 1))
    layers: list[_Layer] = []
    for _ in range(num_fg):
        family = int(rng.integers(NUM_CLASSES))
        diameter = _loguniform(rng, cfg.min_object_size * short, cfg.max_object_size * short)
        radius = max(1.5, diameter / 2)
        n = int(math.ceil(2 * radius)) + 4
        if cfg.class_shape_prob > 0 and rng.random() < cfg.class_shape_prob:
            kind = _SHAPES[family % len(_SHAPES)]
        else:
            kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
        alpha = _shape_alpha(rng, kind, n, radius)
        rgb = _texture(rng, family, n, n, min(short, 2 * diameter), cfg.class_hue_spread)
        angle0 = rng.uniform(0, 2 * math.pi)
        scale0 = math.exp(rng.uniform(-0.1, 0.1))
        motion = _sample_motion(
            rng,
            cfg.max_translation * long_,
            math.radians(cfg.max_rotation_deg),
            math.log1p(cfg.max_scale_change),
            radius * scale0,
            cfg.subpixel_fraction,
        )
        start = _fit_trajectory(
            rng, motion, T, np.array([0.0, 0.0]), np.array([W - 1.0, H - 1.0])
        )
        c_tex = ((n - 1) / 2, (n - 1) / 2)
        to_center = np.array([[1.0, 0, -c_tex[0]], [0, 1.0, -c_tex[1]], [0, 0, 1.0]])
        affines = np.empty((T, 3, 3))
        for t in range(T):
            world = _similarity(
                start[0] + motion.vx * t,
                start[1] + motion.vy * t,
                angle0 + motion.omega * t,
                scale0 * math.exp(motion.sigma * t),
            )
            affines[t] = cams[t] @ world @ to_center
        layers.append(_Layer(torch.cat([rgb, alpha[None]]), affines, family))

    # background: static in the world, its raster covers what the camera sees over the clip
    corners = np.array(
        [[-2.0, -2.0, 1], [W + 1.0, -2.0, 1], [-2.0, H + 1.0, 1], [W + 1.0, H + 1.0, 1]]
    )
    seen = np.concatenate([(np.linalg.inv(c) @ corners.T)[:2].T for c in cams])
    lo = np.floor(seen.min(0))
    hi = np.ceil(seen.max(0))
    bw, bh = int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1
    bg_family = int(rng.integers(NUM_CLASSES))
    bg_rgb = _texture(rng, bg_family, bh, bw, short, cfg.class_hue_spread)
    offset = np.array([[1.0, 0, lo[0]], [0, 1.0, lo[1]], [0, 0, 1.0]])
    bg = _Layer(bg_rgb, np.stack([c @ offset for c in cams]), bg_family)

    frames, flow, occ, inst = _render(bg, layers, T, H, W)
    frames = _photometric(cfg, rng, frames)
    layer_classes = torch.tensor([bg.family] + [ly.family for ly in layers], dtype=torch.int64)
    return SyntheticClip(
        frames=frames,
        flow=flow,
        occlusion=occ,
        instances=inst,
        classes=layer_classes[inst],
        layer_classes=layer_classes,
    )


def _normalizer(h: int, w: int) -> np.ndarray:
    """3x3 matrix texel -> grid_sample coordinates in [-1, 1] (align_corners=True)."""
    return np.array([[2.0 / max(w - 1, 1), 0, -1.0], [0, 2.0 / max(h - 1, 1), -1.0], [0, 0, 1.0]])


def _layer_boxes(affines: np.ndarray, sizes: np.ndarray, H: int, W: int) -> np.ndarray:
    """Pixel boxes holding each layer's raster in each frame.

    Args:
        affines: (K, T, 3, 3) canonical texel -> image pixel.
        sizes: (K, 2) raster heights and widths.

    Returns:
        (K, T, 4) int boxes y0, y1, x0, x1 (end-exclusive, one pixel of margin, clipped to
        the image); empty boxes have y0 >= y1 or x0 >= x1.
    """
    h, w = sizes[:, 0].astype(np.float64) - 1, sizes[:, 1].astype(np.float64) - 1
    zero, one = np.zeros_like(h), np.ones_like(h)
    corners = np.stack(
        [np.stack([zero, w, zero, w]), np.stack([zero, zero, h, h]), np.stack([one] * 4)]
    ).transpose(2, 0, 1)  # (K, 3, 4)
    xy = np.einsum("ktij,kjc->ktic", affines[:, :, :2], corners)  # (K, T, 2, 4)
    lo = np.floor(xy.min(-1)).astype(np.int64) - 1  # (K, T, 2) x, y
    hi = np.ceil(xy.max(-1)).astype(np.int64) + 2
    x0, y0 = np.clip(lo[..., 0], 0, W), np.clip(lo[..., 1], 0, H)
    x1, y1 = np.clip(hi[..., 0], 0, W), np.clip(hi[..., 1], 0, H)
    return np.stack([y0, y1, x0, x1], axis=-1)


def _box_grid(m: np.ndarray, box: np.ndarray | tuple[int, int, int, int]) -> Tensor:
    """Apply the affine map m (2x3 or 3x3) to the pixel centres of box -> (1, hc, wc, 2)."""
    y0, y1, x0, x1 = (int(v) for v in box)
    m = m.astype(np.float32)
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    gx = np.add.outer(ys * m[0, 1] + m[0, 2], xs * m[0, 0])  # (hc, wc)
    gy = np.add.outer(ys * m[1, 1] + m[1, 2], xs * m[1, 0])
    return torch.from_numpy(np.stack([gx, gy], axis=-1))[None]


def _render(
    bg: _Layer, layers: list[_Layer], T: int, H: int, W: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Composite the layers; return frames, flow, occlusion and instances (see SyntheticClip).

    Foreground layers are sampled only inside their bounding box in each frame (they cover a
    small part of the image), which keeps rendering cheap.
    """
    HW = H * W
    pix = _pixels_h(H, W)  # (3, HW)

    # background: one grid_sample for all frames; reflection keeps the texture a function of
    # the canonical coordinates even if a sample strays off the raster
    bh, bw = bg.raster.shape[-2:]
    bg_inv = np.linalg.inv(bg.affines)  # (T, 3, 3) image -> canonical
    g_bg = _normalizer(bh, bw) @ bg_inv  # (T, 3, 3) image -> grid_sample coords
    full = (0, H, 0, W)
    grid = torch.cat([_box_grid(g, full) for g in g_bg], dim=1)  # (1, T*H, W, 2)
    frames = F.grid_sample(
        bg.raster[None],
        grid,
        mode="bilinear",
        padding_mode="reflection",
        align_corners=True,
    )[0].reshape(3, T, H, W)
    frames = frames.permute(1, 0, 2, 3).contiguous()  # (T, 3, H, W)

    K = len(layers)
    inst = torch.zeros(T, H, W, dtype=torch.int64)
    if K:
        affines = np.stack([ly.affines for ly in layers])  # (K, T, 3, 3)
        inv = np.linalg.inv(affines)
        sizes = np.array([ly.raster.shape[-2:] for ly in layers])  # (K, 2)
        norms = np.stack([_normalizer(int(h), int(w)) for h, w in sizes])  # (K, 3, 3)
        to_grid = norms[:, None] @ inv  # (K, T, 3, 3) image pixel -> grid_sample coords
        boxes = _layer_boxes(affines, sizes, H, W)  # (K, T, 4)
        nonempty = (boxes[..., 0] < boxes[..., 1]) & (boxes[..., 2] < boxes[..., 3])

    # foreground, far to near: alpha-composite and record the nearest covering layer
    for k in range(K):
        for t in range(T):
            if not nonempty[k, t]:
                continue
            y0, y1, x0, x1 = boxes[k, t]
            samp = F.grid_sample(
                layers[k].raster[None], _box_grid(to_grid[k, t], boxes[k, t]),
                mode="bilinear", padding_mode="zeros", align_corners=True,
            )[0]  # (4, hc, wc)
            region = frames[t, :, y0:y1, x0:x1]  # a view: composited in place
            region.lerp_(samp[:3], samp[3:])  # alpha blend: region + a (colour - region)
            inst[t, y0:y1, x0:x1].masked_fill_(samp[3] > 0.5, k + 1)

    if T < 2:
        return frames, torch.zeros(0, 2, H, W), torch.zeros(0, H, W, dtype=torch.bool), inst

    # exact flow: on a layer, M = A_{t+1} A_t^-1 is affine and flow(x) = (M - I) x
    rel_bg = bg.affines[1:] @ bg_inv[:-1] - np.eye(3)  # (T-1, 3, 3)
    flow = torch.cat([_box_grid(m, full) for m in rel_bg]).permute(0, 3, 1, 2).contiguous()
    if K:
        rel = affines[:, 1:] @ inv[:, :-1] - np.eye(3)  # (K, T-1, 3, 3)
    for k in range(K):
        for t in range(T - 1):
            if not nonempty[k, t]:
                continue
            y0, y1, x0, x1 = boxes[k, t]
            mine = inst[t, y0:y1, x0:x1] == k + 1  # (hc, wc)
            layer_flow = _box_grid(rel[k, t], boxes[k, t])[0].permute(2, 0, 1)  # (2, hc, wc)
            region = flow[t, :, y0:y1, x0:x1]
            region.copy_(torch.where(mine, layer_flow, region))

    # occlusion: the target leaves the image, or a nearer layer covers it in frame t+1
    target = pix[:2].reshape(1, 2, H, W) + flow  # (T-1, 2, H, W)
    occ = (
        (target[:, 0] < 0) | (target[:, 0] > W - 1) | (target[:, 1] < 0) | (target[:, 1] > H - 1)
    )
    for t in range(T - 1):
        reach = int(math.ceil(float(flow[t].abs().max()))) + 1
        for k in range(K):
            if not nonempty[k, t + 1]:
                continue
            # source pixels whose target can reach this layer's box in frame t+1
            y0, y1, x0, x1 = boxes[k, t + 1]
            sbox = (max(0, y0 - reach), min(H, y1 + reach), max(0, x0 - reach), min(W, x1 + reach))
            sy0, sy1, sx0, sx1 = sbox
            # layer k's grid coordinates of the targets: G (x + f) = G x + G_lin f
            g = to_grid[k, t + 1]
            gl = g[:2, :2].astype(np.float32)
            fx, fy = flow[t, 0, sy0:sy1, sx0:sx1], flow[t, 1, sy0:sy1, sx0:sx1]
            shift = torch.stack(
                [fx * gl[0, 0] + fy * gl[0, 1], fx * gl[1, 0] + fy * gl[1, 1]], dim=-1
            )  # (hc, wc, 2)
            grid = _box_grid(g, sbox) + shift[None]  # (1, hc, wc, 2)
            alpha = F.grid_sample(
                layers[k].raster[None, 3:], grid, mode="bilinear", padding_mode="zeros",
                align_corners=True,
            )[0, 0]  # (hc, wc)
            covered = (alpha > 0.5) & (inst[t, sy0:sy1, sx0:sx1] <= k)
            occ[t, sy0:sy1, sx0:sx1] |= covered
    return frames, flow, occ, inst


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflected borders."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma * sigma))
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    if w > r:
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    if h > r:
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _photometric(cfg: SyntheticConfig, rng: np.random.Generator, frames: Tensor) -> Tensor:
    """Exposure/colour cast per clip, lighting change between frames, blur and sensor noise.

    Works in place on ``frames`` (T, 3, H, W), which the renderer has just allocated.
    """
    T, _, H, W = frames.shape
    # per-clip exposure and colour cast: identical in every frame, so flow stays exact
    log_cast = rng.uniform(-0.25, 0.2) + rng.uniform(-0.08, 0.08, 3)  # (3,)
    if cfg.lighting_change > 0 and T > 1:
        lc = cfg.lighting_change
        # per-channel log-gain (3), offset (1) and the strength (1) of a smooth illumination
        # field follow a mean-reverting random walk from frame 0 (the reference): consecutive
        # frames differ by at most ~lc, long clips stay within ~2 lc of the reference
        steps = np.concatenate(
            [
                rng.uniform(-lc, lc, (T - 1, 1)) + rng.uniform(-lc / 3, lc / 3, (T - 1, 3)),
                rng.uniform(-lc / 3, lc / 3, (T - 1, 1)),
                rng.uniform(-lc, lc, (T - 1, 1)),
            ],
            axis=1,
        )  # (T-1, 5)
        state = np.zeros((T, 5))
        for t in range(1, T):
            state[t] = 0.8 * state[t - 1] + steps[t - 1]
        cell = max(8.0, 0.6 * max(H, W))
        field = _fbm(rng, 1, H, W, cell, cell).clamp(-2.0, 2.0)  # (1, H, W)
        strength = torch.from_numpy(state[:, 4].astype(np.float32))[:, None, None, None]
        illum = torch.exp(strength * field[None])  # (T, 1, H, W)
        gain = torch.from_numpy(np.exp(state[:, :3] + log_cast).astype(np.float32))
        bias = torch.from_numpy(state[:, 3].astype(np.float32))
        frames.mul_(illum).mul_(gain[:, :, None, None]).add_(bias[:, None, None, None])
    else:
        frames.mul_(torch.from_numpy(np.exp(log_cast).astype(np.float32))[None, :, None, None])
    if cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
        sigma = rng.uniform(0.3, max(0.3, cfg.max_blur_sigma))
        jitter = rng.uniform(0.8, 1.2, T)
        if T > 1:
            frames = torch.cat(
                [_gaussian_blur(frames[t : t + 1], sigma * jitter[t]) for t in range(T)]
            )
        else:
            frames = _gaussian_blur(frames, sigma)
    if cfg.noise_std > 0:
        frames.add_(_noise(rng, T, 3, H, W).mul_(rng.uniform(0, cfg.noise_std)))
    return frames.clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# torch datasets


def _stream(kind: str, split: str) -> int:
    if split not in SPLITS:
        raise UserError(f"split {split!r}", f"expected one of {', '.join(SPLITS)}")
    return _STREAMS[(kind, split)]


class _SyntheticDataset(Dataset):
    """Map-style dataset over one seed stream of the world; items depend only on the index."""

    kind = ""

    def __init__(
        self,
        height: int,
        width: int,
        length: int,
        seed: int = 0,
        split: str = "train",
        cfg: SyntheticConfig | None = None,
    ) -> None:
        self.height = _check_size("height", height)
        self.width = _check_size("width", width)
        self.length = _check_size("length", length, minimum=0)
        self.split = split
        self.world = SyntheticWorld(cfg, seed, stream=_stream(self.kind, split))

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} items")
        return int(index)


class SyntheticFlowPairs(_SyntheticDataset):
    """Frame pairs with exact forward flow: dict ``image1``, ``image2`` (3, H, W) float in
    [0, 1], ``flow`` (2, H, W), ``valid`` (H, W) bool (all True), ``occlusion`` (H, W) bool."""

    kind = "flow"

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.world.clip(self._index(index), 2, self.height, self.width)
        return {
            "image1": clip.frames[0],
            "image2": clip.frames[1],
            "flow": clip.flow[0],
            "valid": torch.ones(self.height, self.width, dtype=torch.bool),
            "occlusion": clip.occlusion[0],
        }


class SyntheticImages(_SyntheticDataset):
    """Single frames (3, H, W) float in [0, 1] for the content (VICReg) branch."""

    kind = "images"

    def __getitem__(self, index: int) -> Tensor:
        return self.world.clip(self._index(index), 1, self.height, self.width).frames[0]


class SyntheticSegmentation(_SyntheticDataset):
    """Images with texture-family labels: dict ``image`` (3, H, W) float, ``label`` (H, W)
    int64 class ids in [0, NUM_CLASSES) (the ignore value 255 never occurs)."""

    kind = "segmentation"

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.world.clip(self._index(index), 1, self.height, self.width)
        return {"image": clip.frames[0], "label": clip.classes[0]}


class SyntheticVideos(Dataset):
    """A DAVIS-like set of clips: item i is dict ``name`` ("synth_000"), ``frames``
    (T, 3, H, W) float and ``instances`` (T, H, W) int64 (0 background, 1..K objects).

    Every sequence has 1-4 objects (``cfg.min_layers``/``max_layers`` clamped to [1, 4]),
    each visible in frame 0 on at least 0.5% of the image and in every frame on at least
    0.1% of it (at least one pixel); clips that fail are redrawn from the next sub-seed.

    Args:
        num_sequences: number of clips.
        num_frames: frames per clip (>= 2).
        height: H.
        width: W.
        seed: non-negative integer.
        cfg: world knobs; ``SyntheticConfig()`` when None.
    """

    max_attempts = 50

    def __init__(
        self,
        num_sequences: int,
        num_frames: int,
        height: int,
        width: int,
        seed: int = 0,
        cfg: SyntheticConfig | None = None,
    ) -> None:
        self.num_sequences = _check_size("num_sequences", num_sequences, minimum=0)
        self.num_frames = _check_size("num_frames", num_frames, minimum=2)
        self.height = _check_size("height", height)
        self.width = _check_size("width", width)
        base = cfg if cfg is not None else SyntheticConfig()
        self.cfg = SyntheticConfig(
            **{
                **{f.name: getattr(base, f.name) for f in fields(base)},
                "min_layers": int(np.clip(base.min_layers, 1, 4)),
                "max_layers": int(np.clip(base.max_layers, max(1, min(base.min_layers, 4)), 4)),
            }
        )
        self.world = SyntheticWorld(self.cfg, seed, stream=_STREAMS[("videos", "val")])

    def __len__(self) -> int:
        return self.num_sequences

    def _visible(self, instances: Tensor, num_objects: int) -> Tensor:
        """(K,) bool: which objects meet the visibility rule in the class docstring."""
        T = instances.shape[0]
        area = self.height * self.width
        counts = torch.stack(
            [torch.bincount(instances[t].reshape(-1), minlength=num_objects + 1) for t in range(T)]
        )[:, 1:]  # (T, K) pixels per object and frame
        first_ok = counts[0] >= max(1.0, 0.005 * area)
        return first_ok & (counts >= max(1.0, 0.001 * area)).all(dim=0)

    def __getitem__(self, index: int) -> dict[str, object]:
        if index < 0:
            index += self.num_sequences
        if not 0 <= index < self.num_sequences:
            raise IndexError(
                f"index {index} out of range for a dataset of {self.num_sequences} items"
            )
        best: tuple[int, SyntheticClip, Tensor] | None = None
        for attempt in range(self.max_attempts):
            rng = np.random.default_rng(
                [self.world.stream, self.world.seed, int(index), attempt]
            )
            clip = _draw_clip(
                self.cfg, rng, self.num_frames, self.height, self.width, max_objects=4
            )
            ok = self._visible(clip.instances, len(clip.layer_classes) - 1)
            if best is None or int(ok.sum()) > best[0]:
                best = (int(ok.sum()), clip, ok)
            if ok.numel() > 0 and bool(ok.all()):
                break
        assert best is not None
        _, clip, ok = best
        instances = clip.instances
        if not bool(ok.all()):
            # last resort (tiny images): objects that fail the rule join the background and
            # the others are renumbered 1..K'
            new_ids = torch.zeros(len(ok) + 1, dtype=torch.int64)
            new_ids[1:][ok] = torch.arange(1, int(ok.sum()) + 1)
            instances = new_ids[instances]
        return {"name": f"synth_{index:03d}", "frames": clip.frames, "instances": instances}
