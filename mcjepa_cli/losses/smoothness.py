"""Edge-aware flow smoothness, first or second order (UFlow / ARFlow convention)."""

from __future__ import annotations

import torch


def _dx(t: torch.Tensor) -> torch.Tensor:
    return t[..., :, 1:] - t[..., :, :-1]


def _dy(t: torch.Tensor) -> torch.Tensor:
    return t[..., 1:, :] - t[..., :-1, :]


def smoothness_loss(flow: torch.Tensor, image: torch.Tensor, *, order: int = 2,
                    edge_weight: float = 10.0) -> torch.Tensor:
    """Edge-aware smoothness of ``flow`` (B, 2, H, W) guided by ``image`` (B, 3, H, W).

    Weight per position ``exp(-edge_weight * mean_c |grad image|)``; penalty ``|d^k flow|``
    (k = ``order``) averaged over positions, components and both axes.
    """
    if order not in (1, 2):
        raise ValueError(f"smoothness order must be 1 or 2, got {order}")
    wx = torch.exp(-edge_weight * _dx(image).abs().mean(1, keepdim=True))  # (B, 1, H, W-1)
    wy = torch.exp(-edge_weight * _dy(image).abs().mean(1, keepdim=True))  # (B, 1, H-1, W)
    if order == 1:
        gx, gy = _dx(flow), _dy(flow)
    else:
        gx, gy = _dx(_dx(flow)), _dy(_dy(flow))  # second differences
        wx, wy = wx[..., :, 1:], wy[..., 1:, :]
    return 0.5 * ((wx * gx.abs()).mean() + (wy * gy.abs()).mean())
