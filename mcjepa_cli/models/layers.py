"""Flow building blocks: backward warping, flow resizing and the local cost volume (PWC-Net)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 2, h, w) pixel coordinates, channel 0 = x (column), 1 = y (row)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype),
        torch.arange(w, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack((xs, ys), 0).unsqueeze(0)


def warp(
    x: torch.Tensor, flow: torch.Tensor, *, align_corners: bool = False, return_mask: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Backward warp: ``out(p) = x(p + flow(p))``, bilinear, zeros outside the image.

    Args:
        x: (B, C, H, W) values to sample.
        flow: (B, 2, H, W) displacement in pixels of ``x`` (channel 0 = x, 1 = y).
        align_corners: passed to ``grid_sample``. With False, pixel centres sit at
            (i + 0.5) / size in normalised coordinates, the convention used for flow here.
        return_mask: also return the (B, 1, H, W) mask of samples that land inside the image.
    """
    b, _, h, w = x.shape
    coords = pixel_grid(h, w, x.device, flow.dtype) + flow  # (B, 2, H, W) target pixels
    if align_corners:
        gx = 2.0 * coords[:, 0] / max(w - 1, 1) - 1.0
        gy = 2.0 * coords[:, 1] / max(h - 1, 1) - 1.0
    else:
        gx = (2.0 * coords[:, 0] + 1.0) / w - 1.0
        gy = (2.0 * coords[:, 1] + 1.0) / h - 1.0
    grid = torch.stack((gx, gy), dim=-1)  # (B, H, W, 2)
    out = F.grid_sample(
        x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=align_corners
    )
    if not return_mask:
        return out
    inside = (
        (coords[:, 0] >= 0) & (coords[:, 0] <= w - 1) & (coords[:, 1] >= 0) & (coords[:, 1] <= h - 1)
    )
    return out, inside.unsqueeze(1).to(x.dtype)


def resize_flow(flow: torch.Tensor, size: tuple[int, int], *, align_corners: bool = False) -> torch.Tensor:
    """Resize a flow field to ``size`` (h, w) bilinearly, scaling each component by its axis ratio."""
    h0, w0 = flow.shape[-2:]
    h, w = size
    if (h, w) == (h0, w0):
        return flow
    out = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=align_corners)
    scale = torch.tensor([w / w0, h / h0], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return out * scale


def _cost_volume_forward(f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
    b, c, h, w = f1.shape
    d = 2 * radius + 1
    f2p = F.pad(f2, (radius, radius, radius, radius))  # (B, C, H+2r, W+2r)
    out = f1.new_empty(b, d * d, h, w)
    for dy in range(d):
        for dx in range(d):
            # one (B, C, H, W) product at a time: peak memory stays at one feature map
            torch.sum(f1 * f2p[:, :, dy : dy + h, dx : dx + w], dim=1, out=out[:, dy * d + dx])
    return out.div_(c)


class _CostVolume(torch.autograd.Function):
    """Pad-and-shift correlation with a hand-written backward.

    Autograd through 81 slices of a padded tensor would zero-fill and accumulate a full padded
    gradient per slice; here each shift adds its contribution in place, and only the two
    inputs are saved for backward (no (B, C, (2r+1)^2, H, W) intermediate as with unfold).
    """

    @staticmethod
    def forward(ctx, f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
        ctx.save_for_backward(f1, f2)
        ctx.radius = radius
        return _cost_volume_forward(f1, f2, radius)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f1, f2 = ctx.saved_tensors
        r = ctx.radius
        b, c, h, w = f1.shape
        d = 2 * r + 1
        grad = grad / c
        f2p = F.pad(f2, (r, r, r, r))
        g1 = torch.zeros_like(f1) if ctx.needs_input_grad[0] else None
        g2p = torch.zeros_like(f2p) if ctx.needs_input_grad[1] else None
        for dy in range(d):
            for dx in range(d):
                g = grad[:, dy * d + dx].unsqueeze(1)  # (B, 1, H, W)
                # product then in-place add: ~3x faster on CPU than a broadcasting addcmul_
                if g1 is not None:
                    g1 += g * f2p[:, :, dy : dy + h, dx : dx + w]
                if g2p is not None:
                    g2p[:, :, dy : dy + h, dx : dx + w] += g * f1
        g2 = g2p[:, :, r : r + h, r : r + w] if g2p is not None else None
        return g1, g2, None


def cost_volume(f1: torch.Tensor, f2: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Local correlation between ``f1`` and ``f2`` over a (2r+1)^2 window (pad-and-shift).

    ``out[:, k, y, x] = <f1[:, :, y, x], f2[:, :, y + dy, x + dx]> / C`` with
    ``k = (dy + r) * (2r + 1) + (dx + r)``; positions outside ``f2`` contribute 0.
    Pure PyTorch (CPU and GPU), differentiable in both inputs.

    Args:
        f1, f2: (B, C, H, W) features.
        radius: search radius r.

    Returns:
        (B, (2r+1)^2, H, W) cost volume.
    """
    if f1.shape != f2.shape:
        raise ValueError(f"feature shapes differ: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        return _CostVolume.apply(f1, f2, radius)
    return _cost_volume_forward(f1, f2, radius)


def cost_volume_naive(f1: torch.Tensor, f2: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Reference cost volume via ``F.unfold`` (materialises all (2r+1)^2 neighbours at once)."""
    b, c, h, w = f1.shape
    d = 2 * radius + 1
    patches = F.unfold(f2, kernel_size=d, padding=radius)  # (B, C*d*d, H*W)
    patches = patches.view(b, c, d * d, h, w)
    return (f1.unsqueeze(2) * patches).sum(1) / c  # (B, d*d, H, W)
