"""Photometric reconstruction distances: robust L1, L2, SSIM and census (unsupervised flow)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def charbonnier(x: torch.Tensor, eps: float = 1e-3, alpha: float = 0.5) -> torch.Tensor:
    """Generalised Charbonnier penalty ``(x^2 + eps^2)^alpha`` (alpha 0.5 ~ robust L1)."""
    return (x * x + eps * eps).pow(alpha)


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``(1 - SSIM) / 2`` in [0, 1] with 3x3 mean windows (Godard et al. 2017)."""
    c1, c2 = 0.01**2, 0.03**2
    mu_x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    mu_y = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
    sxx = F.avg_pool2d(x * x, 3, 1, 1, count_include_pad=False) - mu_x**2
    syy = F.avg_pool2d(y * y, 3, 1, 1, count_include_pad=False) - mu_y**2
    sxy = F.avg_pool2d(x * y, 3, 1, 1, count_include_pad=False) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return ((1 - num / den) / 2).clamp(0, 1)


def census_distance(x: torch.Tensor, y: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """Soft ternary-census Hamming distance per pixel (Meister et al., UnFlow 2018), (B, 1, H, W)."""

    def transform(img: torch.Tensor) -> torch.Tensor:
        grey = img.mean(1, keepdim=True) * 255.0
        k = patch * patch
        weight = torch.eye(k, device=img.device, dtype=img.dtype).view(k, 1, patch, patch)
        neigh = F.conv2d(grey, weight, padding=patch // 2)  # (B, k, H, W)
        diff = neigh - grey
        return diff / torch.sqrt(0.81 + diff * diff)

    tx, ty = transform(x), transform(y)
    d = (tx - ty) ** 2
    return (d / (0.1 + d)).sum(1, keepdim=True) / (patch * patch)


def photometric_distance(
    target: torch.Tensor,
    warped: torch.Tensor,
    *,
    l1: float = 0.15,
    l2: float = 0.0,
    ssim: float = 0.85,
    census: float = 0.0,
) -> torch.Tensor:
    """Weighted per-pixel distance (B, 1, H, W) between ``target`` and a warped image."""
    d = target.new_zeros(target.shape[0], 1, *target.shape[-2:])
    diff = target - warped
    if l1:
        d = d + l1 * charbonnier(diff).mean(1, keepdim=True)
    if l2:
        d = d + l2 * (diff * diff).mean(1, keepdim=True)
    if ssim:
        d = d + ssim * ssim_distance(target, warped).mean(1, keepdim=True)
    if census:
        d = d + census * census_distance(target, warped)
    return d


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """Mean of ``x`` (B, C, H, W) over pixels where ``mask`` (B, 1, H, W) is 1 (all if None)."""
    if mask is None:
        return x.mean()
    m = mask.expand_as(x)
    return (x * m).sum() / (m.sum() + eps)
