"""Forward-backward consistency occlusion mask (Meister et al. 2018; DESIGN.md 1.3)."""

from __future__ import annotations

import torch

from mcjepa_cli.models.layers import warp


@torch.no_grad()
def occlusion_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, *, alpha1: float = 0.01,
                   alpha2: float = 0.5, align_corners: bool = False) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 where a pixel of frame 1 is occluded in frame 2.

    Occluded when ``|f_fw + W(f_bw, f_fw)|^2 > alpha1 (|f_fw|^2 + |W(f_bw, f_fw)|^2) + alpha2``.
    Carries no gradient.
    """
    bw_at_fw = warp(flow_bw, flow_fw, align_corners=align_corners)  # (B, 2, H, W)
    lhs = (flow_fw + bw_at_fw).pow(2).sum(1, keepdim=True)
    rhs = alpha1 * (flow_fw.pow(2).sum(1, keepdim=True) + bw_at_fw.pow(2).sum(1, keepdim=True)) + alpha2
    return (lhs > rhs).to(flow_fw.dtype)
