"""Variance-covariance regularisation of encoder feature maps (MC-JEPA, every pyramid level)."""

from __future__ import annotations

import torch

from mcjepa_cli.losses.vicreg import covariance_term, variance_term


def feature_vc_loss(feat: torch.Tensor, num_samples: int = 1024,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance hinge and covariance over feature vectors sampled from a map.

    Args:
        feat: (B, C, h, w) features of one level.
        num_samples: how many of the B*h*w vectors to use (all when fewer).

    Returns:
        (variance term, covariance term), unweighted.
    """
    b, c, h, w = feat.shape
    vecs = feat.permute(0, 2, 3, 1).reshape(-1, c).float()  # (B*h*w, C)
    n = vecs.shape[0]
    if n > num_samples:
        idx = torch.randperm(n, device=feat.device, generator=generator)[:num_samples]
        vecs = vecs[idx]
    if vecs.shape[0] < 2:
        zero = feat.sum() * 0.0
        return zero, zero
    return variance_term(vecs), covariance_term(vecs)
