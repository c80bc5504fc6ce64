"""VICReg expander: Linear-BN-ReLU blocks then a final Linear (Bardes et al. 2022)."""

from __future__ import annotations

import torch.nn as nn


def build_expander(in_dim: int, dims: list[int]) -> nn.Sequential:
    """MLP ``in_dim -> dims[0] -> ... -> dims[-1]``; BatchNorm + ReLU after all but the last."""
    if not dims:
        raise ValueError("model.expander.dims must list at least one width")
    layers: list[nn.Module] = []
    c = in_dim
    for i, d in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(nn.Linear(c, d, bias=last))
        if not last:
            layers += [nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
        c = d
    return nn.Sequential(*layers)
