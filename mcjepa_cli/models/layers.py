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
    # in place with Python scalars (interpolate's backward does not need its output): no
    # host-built scale tensor (a host-to-device copy, i.e. a CUDA sync) and the memory format
    # of ``flow`` is kept
    out[:, 0].mul_(w / w0)
    out[:, 1].mul_(h / h0)
    return out


def _tile_width(w: int, radius: int) -> int:
    """Width of the column tiles of the batched-matmul cost volume.

    16 columns per tile: each (T, C) x (C, T + 2r) product wastes (T + 2r) / (2r + 1) of the
    multiply-adds of a per-shift loop but runs as one batched GEMM per row shift instead of
    (2r + 1) elementwise passes. Tiles must be at least 2r wide so that the 2r-column overlaps
    of neighbouring windows do not overlap each other (backward scatters into them).
    """
    t = max(16, 2 * radius)
    return w if w <= t else t


def _tiles(f1: torch.Tensor, f2: torch.Tensor, radius: int):
    """Channels-last, tile-padded copies of both inputs and the tile geometry."""
    b, c, h, w = f1.shape
    t = _tile_width(w, radius)
    nt = -(-w // t)  # tiles per row
    wp = nt * t
    r = radius
    # (B, H, Wp, C): the first frame, zero-padded on the right to whole tiles
    f1n = F.pad(f1, (0, wp - w)).permute(0, 2, 3, 1).contiguous()
    # (B, H + 2r, Wp + 2r, C): the second frame with the search margin
    f2n = F.pad(f2, (r, r + wp - w, r, r)).permute(0, 2, 3, 1).contiguous()
    return f1n, f2n, (b, c, h, w, t, nt, wp)


def _windows(f2n: torch.Tensor, dy: int, geo: tuple[int, ...], radius: int) -> torch.Tensor:
    """(B*H*nt, T + 2r, C) view: for row shift ``dy``, each tile's search window of frame 2."""
    b, c, h, _, t, nt, _ = geo
    s_b, s_h, s_w, s_c = f2n.stride()
    return f2n.as_strided(
        (b, h, nt, t + 2 * radius, c), (s_b, s_h, t * s_w, s_w, s_c), f2n.storage_offset() + dy * s_h
    )


def _band(g: torch.Tensor, t: int, d: int) -> torch.Tensor:
    """(N, T, d) view of the band ``g[n, i, i + j]`` of a contiguous (N, T, T + d - 1) tensor."""
    n, _, width = g.shape
    return g.as_strided((n, t, d), (t * width, width + 1, 1), g.storage_offset())


def _cost_volume_forward(f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
    """Tiled batched-matmul correlation; see ``cost_volume`` for the definition."""
    dtype = torch.promote_types(f1.dtype, f2.dtype)
    f1n, f2n, geo = _tiles(f1.to(dtype), f2.to(dtype), radius)
    b, c, h, w, t, nt, wp = geo
    d = 2 * radius + 1
    a = f1n.view(b * h * nt, t, c)  # one (T, C) block per tile
    out = f1n.new_empty(b, h, nt, t, d, d)  # (..., dy, dx)
    for dy in range(d):
        win = _windows(f2n, dy, geo, radius).reshape(b * h * nt, t + 2 * radius, c)
        g = torch.bmm(a, win.transpose(1, 2))  # (N, T, T + 2r) all column pairs of a tile
        out[:, :, :, :, dy].copy_(_band(g, t, d).view(b, h, nt, t, d))
    out = out.view(b, h, wp, d * d)[:, :, :w]  # (B, H, W, d*d)
    return out.permute(0, 3, 1, 2).div_(c)  # (B, d*d, H, W), channels-last memory


class _CostVolume(torch.autograd.Function):
    """Tiled correlation with a hand-written backward.

    Only the two inputs are saved; per row shift the backward runs two batched GEMMs (into
    frame 1's tiles and into frame 2's windows) and scatters the windows back in place, so
    no (B, C, (2r+1)^2, H, W) intermediate ever exists (unlike ``cost_volume_naive``).
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
        d = 2 * r + 1
        dtype = torch.promote_types(torch.promote_types(f1.dtype, f2.dtype), grad.dtype)
        f1n, f2n, geo = _tiles(f1.to(dtype), f2.to(dtype), r)
        b, c, h, w, t, nt, wp = geo
        n = b * h * nt
        # (B, H, Wp, dy, dx) incoming gradient, zero on the padded columns, scaled by 1/C
        gn = F.pad(grad.to(dtype), (0, wp - w)).permute(0, 2, 3, 1).reshape(n, t, d, d) / c
        a = f1n.view(n, t, c)
        g1 = torch.zeros_like(a) if ctx.needs_input_grad[0] else None
        g2n = torch.zeros_like(f2n) if ctx.needs_input_grad[1] else None
        dense = a.new_zeros(n, t, t + 2 * r)  # the band of each shift, zeros elsewhere
        band = _band(dense, t, d)
        s_b, s_h, s_w, s_c = f2n.stride()
        for dy in range(d):
            band.copy_(gn[:, :, dy])
            if g1 is not None:
                win = _windows(f2n, dy, geo, r).reshape(n, t + 2 * r, c)
                g1.baddbmm_(dense, win)  # (N, T, C) += (N, T, T+2r) @ (N, T+2r, C)
            if g2n is not None:
                gw = torch.bmm(dense.transpose(1, 2), a).view(b, h, nt, t + 2 * r, c)
                # each window = its tile's own T columns + 2r columns shared with the next tile
                head = g2n.as_strided((b, h, nt, t, c), (s_b, s_h, t * s_w, s_w, s_c), dy * s_h)
                head += gw[:, :, :, :t]
                tail = g2n.as_strided((b, h, nt, 2 * r, c), (s_b, s_h, t * s_w, s_w, s_c),
                                      dy * s_h + t * s_w)
                tail += gw[:, :, :, t:]
        g1_out = g2_out = None
        if g1 is not None:
            g1_out = g1.view(b, h, wp, c)[:, :, :w].permute(0, 3, 1, 2).to(f1.dtype)
        if g2n is not None:
            g2_out = g2n[:, r : r + h, r : r + w].permute(0, 3, 1, 2).to(f2.dtype)
        return g1_out, g2_out, None


def cost_volume(f1: torch.Tensor, f2: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Local correlation between ``f1`` and ``f2`` over a (2r+1)^2 window.

    ``out[:, k, y, x] = <f1[:, :, y, x], f2[:, :, y + dy, x + dx]> / C`` with
    ``k = (dy + r) * (2r + 1) + (dx + r)``; positions outside ``f2`` contribute 0.
    Pure PyTorch (CPU and GPU), differentiable in both inputs. Computed tile by tile with
    batched matrix products (one per row shift), without the (2r+1)^2-fold copy of ``f2``
    that ``cost_volume_naive`` makes; ``cost_volume_shift`` is the plain pad-and-shift loop.

    Args:
        f1, f2: (B, C, H, W) features.
        radius: search radius r.

    Returns:
        (B, (2r+1)^2, H, W) cost volume (channels-last memory layout).
    """
    if f1.shape != f2.shape:
        raise ValueError(f"feature shapes differ: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        return _CostVolume.apply(f1, f2, radius)
    return _cost_volume_forward(f1, f2, radius)


def _shift_forward(f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
    b, c, h, w = f1.shape
    d = 2 * radius + 1
    f2p = F.pad(f2, (radius, radius, radius, radius))  # (B, C, H+2r, W+2r)
    out = f1.new_empty(b, d * d, h, w)
    for dy in range(d):
        for dx in range(d):
            # one (B, C, H, W) product at a time: peak memory stays at one feature map
            torch.sum(f1 * f2p[:, :, dy : dy + h, dx : dx + w], dim=1, out=out[:, dy * d + dx])
    return out.div_(c)


class _ShiftCostVolume(torch.autograd.Function):
    """Pad-and-shift correlation with a hand-written backward.

    Autograd through 81 slices of a padded tensor would zero-fill and accumulate a full padded
    gradient per slice; here each shift adds its contribution in place, and only the two
    inputs are saved for backward (no (B, C, (2r+1)^2, H, W) intermediate as with unfold).
    """

    @staticmethod
    def forward(ctx, f1: torch.Tensor, f2: torch.Tensor, radius: int) -> torch.Tensor:
        ctx.save_for_backward(f1, f2)
        ctx.radius = radius
        return _shift_forward(f1, f2, radius)

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


def cost_volume_shift(f1: torch.Tensor, f2: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """The same correlation as ``cost_volume`` by a pad-and-shift loop ((2r+1)^2 products).

    Kept as a second reference (and for the benchmark suite); peak memory is one feature map.
    """
    if f1.shape != f2.shape:
        raise ValueError(f"feature shapes differ: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        return _ShiftCostVolume.apply(f1, f2, radius)
    return _shift_forward(f1, f2, radius)


def cost_volume_naive(f1: torch.Tensor, f2: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Reference cost volume via ``F.unfold`` (materialises all (2r+1)^2 neighbours at once)."""
    b, c, h, w = f1.shape
    d = 2 * radius + 1
    patches = F.unfold(f2, kernel_size=d, padding=radius)  # (B, C*d*d, H*W)
    patches = patches.view(b, c, d * d, h, w)
    return (f1.unsqueeze(2) * patches).sum(1) / c  # (B, d*d, H, W)
