"""Feature regression and cycle consistency between warped feature maps (MC-JEPA, DESIGN.md 1.3)."""

from __future__ import annotations

import torch

from mcjepa_cli.losses.photometric import masked_mean
from mcjepa_cli.models.layers import warp


def feature_regression_loss(x1: torch.Tensor, x2: torch.Tensor, flow_fw: torch.Tensor,
                            mask: torch.Tensor | None = None, *, align_corners: bool = False) -> torch.Tensor:
    """``|| X_t - W(X_{t+1}, f_{t->t+1}) ||^2`` averaged over channels and valid pixels.

    Args:
        x1, x2: (B, C, h, w) features of frames t and t+1 at one level.
        flow_fw: (B, 2, h, w) flow t -> t+1 in this level's pixels.
        mask: (B, 1, h, w) 1 for pixels to score (visible and inside the image).
    """
    pred = warp(x2, flow_fw, align_corners=align_corners)
    return masked_mean((x1 - pred).pow(2), mask)


def cycle_loss(x1: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
               mask: torch.Tensor | None = None, *, align_corners: bool = False) -> torch.Tensor:
    """``|| X_t - W(W(X_t, f_{t+1->t}), f_{t->t+1}) ||^2``: features carried to t+1 and back."""
    there = warp(x1, flow_bw, align_corners=align_corners)  # frame t features in frame t+1's grid
    back = warp(there, flow_fw, align_corners=align_corners)
    return masked_mean((x1 - back).pow(2), mask)
