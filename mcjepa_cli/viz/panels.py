"""RGB panels for ``mcjepa visualize``: Middlebury flow colours with a wheel legend, occlusion,
PCA feature colours, photometric error, mask overlays, and caption text in PIL's default font.

Every panel is a ``uint8`` tensor (3, H, W) on the CPU. Scales (flow magnitude, error range,
PCA colour range) are passed in, so one scale can hold for a whole clip (DESIGN.md section 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import flow_to_image

UNKNOWN_FLOW_RGB = (0, 0, 0)  # zero flow is white in the Middlebury wheel, so black stands out
OUTSIDE_RGB = (128, 128, 128)  # pixels whose warp sample leaves the image (error panel)
OCCLUDED_RGB = (255, 40, 40)  # drawn over a dimmed grey copy of the frame
CAPTION_BG = (24, 24, 24)
CAPTION_FG = (235, 235, 235)
GAP_RGB = (0, 0, 0)

# Five anchors of matplotlib's "inferno" map (values at 0, .25, .5, .75, 1), interpolated
# linearly: dark = small error, bright = large, readable in grey print too.
_INFERNO_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def flow_to_rgb(
    flow: torch.Tensor, max_flow: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Colour a flow field with the Middlebury wheel at a fixed scale.

    A magnitude of ``max_flow`` reaches the wheel's rim (full saturation); larger motions are
    clipped to the rim so one scale can hold for a whole clip. Unknown pixels (``valid`` false,
    or a non-finite component) are painted ``UNKNOWN_FLOW_RGB``.

    Args:
        flow: (2, H, W) flow in pixels, channel 0 = x (right), 1 = y (down).
        max_flow: magnitude in pixels mapped to the rim; must be positive.
        valid: optional (H, W) bool mask of known pixels.

    Returns:
        (3, H, W) uint8 RGB.
    """
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"expected a (2, H, W) flow, got shape {tuple(flow.shape)}")
    if not (np.isfinite(max_flow) and max_flow > 0):
        raise ValueError(f"max_flow must be a positive number, got {max_flow}")
    fl = flow.detach().to("cpu", torch.float32).clone()  # (2, H, W)
    known = torch.isfinite(fl).all(dim=0)  # (H, W)
    if valid is not None:
        known &= valid.to("cpu", torch.bool)
    fl[:, ~known] = 0.0
    mag = fl.norm(dim=0)  # (H, W)
    shrink = torch.where(mag > max_flow, max_flow / mag.clamp_min(1e-12), torch.ones_like(mag))
    fl = fl * shrink  # every magnitude <= max_flow (up to rounding)
    # torchvision normalises by the largest magnitude it sees; one extra column holding a
    # vector of magnitude exactly max_flow pins that normalisation to our fixed scale.
    h, w = mag.shape
    sentinel = torch.zeros(2, h, 1)
    sentinel[0] = max_flow
    rgb = flow_to_image(torch.cat((fl, sentinel), dim=2))[:, :, :w].clone()  # (3, H, W)
    rgb[:, ~known] = torch.tensor(UNKNOWN_FLOW_RGB, dtype=torch.uint8).view(3, 1)
    return rgb


def known_flow_magnitudes(flow: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Magnitudes (1-D, float32, CPU) of the known pixels of a (2, H, W) flow."""
    fl = flow.detach().to("cpu", torch.float32)
    known = torch.isfinite(fl).all(dim=0)
    if valid is not None:
        known &= valid.to("cpu", torch.bool)
    return fl.norm(dim=0)[known]


def flow_wheel(radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour-wheel legend: the colour of every flow direction and magnitude up to the rim.

    The pixel at offset (dx, dy) from the centre shows the colour of a flow pointing that way
    (y down, as in images) with magnitude ``hypot(dx, dy) / radius`` of the scale.

    Returns:
        ``(rgb, disc)``: (3, 2r+1, 2r+1) uint8 and the (2r+1, 2r+1) bool disc it is drawn in.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    unit = torch.stack((xs, ys), 0) / radius  # (2, 2r+1, 2r+1)
    disc = unit.norm(dim=0) <= 1.0
    return flow_to_rgb(unit, 1.0), disc


def add_flow_legend(panel: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Draw the colour wheel in the bottom-right corner of a flow panel (skipped when too small).

    Args:
        panel: (3, H, W) uint8 flow panel.
        radius: wheel radius in pixels; default about an eighth of the short side (8..48).
    """
    _, h, w = panel.shape
    r = radius if radius is not None else int(min(max(min(h, w) // 8, 8), 48))
    margin = max(2, r // 4)
    if 2 * r + 1 + 2 * margin > min(h, w):
        return panel
    rgb, disc = flow_wheel(r)
    out = panel.clone()
    y0, x0 = h - margin - (2 * r + 1), w - margin - (2 * r + 1)
    region = out[:, y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
    # a one-pixel dark ring keeps the wheel visible on white (zero-flow) backgrounds
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    dist = torch.sqrt(xs**2 + ys**2)
    ring = (dist > r - 1.0) & (dist <= r + 0.5)
    region[:, disc] = rgb[:, disc]
    region[:, ring] = 64
    return out


def occlusion_panel(frame: torch.Tensor, occluded: torch.Tensor) -> torch.Tensor:
    """The frame as dimmed grey with occluded pixels in ``OCCLUDED_RGB``.

    Args:
        frame: (3, H, W) uint8 RGB.
        occluded: (H, W) bool, true where the forward-backward check fails.
    """
    grey = frame.float().mean(dim=0) * 0.6  # (H, W) dimmed so the red stays readable
    out = grey.round().to(torch.uint8).unsqueeze(0).repeat(3, 1, 1)  # (3, H, W)
    occ = occluded.to("cpu", torch.bool)
    out[:, occ] = torch.tensor(OCCLUDED_RGB, dtype=torch.uint8).view(3, 1)
    return out


def colormap(values: torch.Tensor) -> torch.Tensor:
    """Map (H, W) values in [0, 1] (clipped) to (3, H, W) uint8 with an inferno-like ramp."""
    v = values.detach().to("cpu", torch.float32).clamp(0.0, 1.0).nan_to_num(0.0).numpy()
    pos = v * (len(_INFERNO_ANCHORS) - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(_INFERNO_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _INFERNO_ANCHORS[lo] * (1.0 - frac) + _INFERNO_ANCHORS[lo + 1] * frac  # (H, W, 3)
    return torch.from_numpy(np.round(rgb).astype(np.uint8)).permute(2, 0, 1).contiguous()


def error_panel(error: torch.Tensor, inside: torch.Tensor, max_error: float) -> torch.Tensor:
    """Photometric error as colours: 0 dark, ``max_error`` and above bright; ``inside`` false grey.

    Args:
        error: (H, W) float error per pixel (mean absolute RGB difference in [0, 1] units).
        inside: (H, W) bool, false where the warped sample left the image or the flow is unknown.
        max_error: error mapped to the top of the ramp.
    """
    out = colormap(error.float() / max_error)
    out[:, ~inside.to("cpu", torch.bool)] = torch.tensor(OUTSIDE_RGB, dtype=torch.uint8).view(3, 1)
    return out


def cells_to_pixels(
    cells: torch.Tensor, stride: int, pad: tuple[int, int, int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Spread a feature-cell map over the pixels it covers and crop the input's padding.

    Args:
        cells: (C, h, w) values per cell of a stride-``stride`` map of the padded input.
        stride: pixels per cell.
        pad: (left, right, top, bottom) padding added to the input before the encoder.
        size: (H, W) of the unpadded input.

    Returns:
        (C, H, W), each pixel holding its cell's value (nearest, no smoothing).
    """
    big = cells.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)
    left, _, top, _ = pad
    h, w = size
    if big.shape[1] < top + h or big.shape[2] < left + w:
        raise ValueError(
            f"a {tuple(cells.shape[1:])} map at stride {stride} does not cover {size} + pad {pad}"
        )
    return big[:, top : top + h, left : left + w]


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) floats in [0, 1] -> uint8."""
    return (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()


def mask_overlay(
    frame: torch.Tensor, labels: torch.Tensor | np.ndarray, palette: np.ndarray, alpha: float = 0.55
) -> torch.Tensor:
    """Blend a label map's palette colours over a frame, with solid object boundaries.

    Args:
        frame: (3, H, W) uint8 RGB.
        labels: (H, W) integer labels; 0 = background and 255 = void are left uncoloured.
        palette: (256, 3) uint8 colours (the VOC/DAVIS palette).
        alpha: opacity of the colours inside objects.
    """
    lab = torch.as_tensor(np.asarray(labels)).long()  # (H, W)
    if lab.shape != frame.shape[1:]:
        raise ValueError(f"labels {tuple(lab.shape)} do not match frame {tuple(frame.shape[1:])}")
    obj = (lab > 0) & (lab < 255)
    colours = torch.from_numpy(np.asarray(palette, dtype=np.uint8))[lab.clamp(0, 255)]
    colours = colours.permute(2, 0, 1).float()  # (3, H, W)
    out = frame.float().clone()
    out[:, obj] = (1.0 - alpha) * out[:, obj] + alpha * colours[:, obj]
    edge = torch.zeros_like(obj)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[1:, :] != lab[:-1, :]
    edge &= obj
    out[:, edge] = colours[:, edge]
    return out.round().clamp(0, 255).to(torch.uint8)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` px (FreeType build), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def caption_font_size(panel_height: int) -> int:
    """Caption font size for panels ``panel_height`` px tall: ~1/24 of it, 10..28 px."""
    return int(min(max(round(panel_height / 24), 10), 28))


def caption_height(panel_height: int) -> int:
    """Height in pixels of the caption strip above panels ``panel_height`` px tall."""
    font = _font(caption_font_size(panel_height))
    _, top, _, bottom = font.getbbox("Ag|")
    return int(bottom - min(top, 0)) + 6


def caption_strip(width: int, height: int, texts: Sequence[str], font_size: int) -> torch.Tensor:
    """A (3, height, width) uint8 strip with the first of ``texts`` that fits the width.

    ``texts`` go from most to least detailed; when none fits, the last one is drawn clipped.
    """
    font = _font(font_size)
    img = Image.new("RGB", (width, height), CAPTION_BG)
    draw = ImageDraw.Draw(img)
    chosen = texts[-1] if texts else ""
    for text in texts:
        if draw.textlength(text, font=font) <= width - 6:
            chosen = text
            break
    _, top, _, _ = font.getbbox("Ag|")
    draw.text((3, 3 - min(top, 0)), chosen, fill=CAPTION_FG, font=font)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def compose(panels: Sequence[tuple[torch.Tensor, Sequence[str]]], gap: int = 2) -> torch.Tensor:
    """Lay panels side by side, each under its caption strip.

    Args:
        panels: ``(image, captions)`` pairs; images (3, H, W) uint8 of one size; captions as
            for ``caption_strip`` (most detailed first).
        gap: black columns between panels.

    Returns:
        (3, caption_height(H) + H, n * W + (n - 1) * gap) uint8.
    """
    if not panels:
        raise ValueError("compose needs at least one panel")
    _, h, w = panels[0][0].shape
    strip_h = caption_height(h)
    fs = caption_font_size(h)
    n = len(panels)
    out = torch.zeros(3, strip_h + h, n * w + (n - 1) * gap, dtype=torch.uint8)
    out[:] = torch.tensor(GAP_RGB, dtype=torch.uint8).view(3, 1, 1)
    for i, (img, texts) in enumerate(panels):
        if tuple(img.shape) != (3, h, w):
            raise ValueError(f"panel {i} has shape {tuple(img.shape)}, expected {(3, h, w)}")
        x0 = i * (w + gap)
        out[:, :strip_h, x0 : x0 + w] = caption_strip(w, strip_h, texts, fs)
        out[:, strip_h:, x0 : x0 + w] = img
    return out
