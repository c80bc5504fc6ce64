"""Training diagnostics: how strongly each objective pulls on the shared encoder.

MC-JEPA sums several objectives (reconstruction, smoothness, feature regression, cycle, VC,
VICReg) that all reach the same encoder. Their loss values say little about which one steers
it; the norm of the gradient each sends into the encoder's parameters does. One extra
backward pass per objective (``torch.autograd.grad`` on the step's own graph, so no second
forward and no change to the random streams), every ``train.grad_norms_every`` steps.

The same gradients, split by the encoder level whose feature map each parameter computes
(``PyramidEncoder.level_parameters``), say what steers the stride-8 level that ``davis-eval``
reads apart from the stride-32 level that the VICReg embedding pools.
"""

from __future__ import annotations

import math

import torch


def encoder_gradient_norms(
    parts: dict[str, torch.Tensor],
    params: list[torch.nn.Parameter],
    groups: dict[str, list[torch.nn.Parameter]] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """L2 norm of d(part)/d(params) for each weighted objective, over all ``params`` together
    and over each group of them.

    Args:
        parts: weighted objectives with their graphs (``losses.objective.objective_parts``).
        params: the parameters the norm is taken over (the encoder's).
        groups: optional named subsets of ``params`` (e.g. per encoder level).

    Returns:
        ``({objective: norm}, {group: {objective: norm}})``; 0.0 for an objective that does not
        reach the parameters. The graph is retained, so the step's own backward pass can follow.
    """
    index = {id(p): i for i, p in enumerate(params)}
    members = {g: [index[id(p)] for p in ps] for g, ps in (groups or {}).items()}
    total: dict[str, float] = {}
    by_group: dict[str, dict[str, float]] = {g: {} for g in members}
    for name, value in parts.items():
        if value.requires_grad:
            grads = torch.autograd.grad(value.float(), params, retain_graph=True, allow_unused=True)
            sq = [float(g.detach().double().pow(2).sum()) if g is not None else 0.0 for g in grads]
        else:
            sq = [0.0] * len(params)
        total[name] = math.sqrt(sum(sq))
        for g, idx in members.items():
            by_group[g][name] = math.sqrt(sum(sq[i] for i in idx))
    return total, by_group
