"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B, D) across ranks, keeping the gradient path; identity on 1 process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def variance_term(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``mean_d relu(1 - sqrt(Var_unbiased(x[:, d]) + eps))`` for (N, D) ``x``."""
    std = torch.sqrt(x.var(dim=0, unbiased=True) + eps)
    return F.relu(1.0 - std).mean()


def covariance_term(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal entries of the unbiased covariance of (N, D) ``x``, / D.

    With fewer samples than dimensions (VICReg's usual case: a per-GPU batch of tens against
    an 8192-d expander) the (D, D) covariance is never formed: its squared Frobenius norm equals
    that of the (N, N) Gram matrix of the centred samples, ``||Xc^T Xc||_F = ||Xc Xc^T||_F``,
    and its diagonal is the per-dimension variance. That is O(N^2 D) work and O(N^2) memory
    instead of O(N D^2) and O(D^2) (256 MB per branch at D = 8192), with the same value and
    gradient. The subtraction cannot cancel badly here: a covariance of rank < N <= D has
    off-diagonal mass of at least D (D - N + 1) / (N - 1) times the mean squared variance.
    """
    n, d = x.shape
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    xc = x - x.mean(dim=0)
    # ||cov||_F^2 from whichever of the (N, N) Gram and (D, D) scatter matrices is smaller, in
    # float32 even under fp16 autocast (squared sums of 1024 vectors overflow fp16's 65504)
    with torch.autocast(x.device.type, enabled=False):
        scatter = xc @ xc.T if n < d else xc.T @ xc
    total = scatter.pow(2).sum() / (n - 1) ** 2
    diag = xc.pow(2).sum(dim=0) / (n - 1)  # (D,) per-dimension variances = diag(cov)
    return (total - diag.pow(2).sum()) / d


def vicreg_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    inv_coeff: float = 25.0,
    var_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gather: bool = True,
) -> dict[str, torch.Tensor]:
    """VICReg loss between two batches of embeddings.

    invariance = MSE(x, y) on the local batch; variance = mean of the two branches' hinge
    terms; covariance = sum of the two branches' off-diagonal terms (each / D). Under
    torch.distributed (``gather=True``) the variance and covariance are computed on the
    embeddings all-gathered from every rank, with gradient.

    Args:
        x, y: (B, D) embeddings of the two views.
        inv_coeff, var_coeff, cov_coeff: the weights (VICReg defaults 25 / 25 / 1).
        gather: all-gather before the variance/covariance terms when running distributed.

    Returns:
        dict with ``loss`` (weighted sum), ``invariance``, ``variance``, ``covariance`` (unweighted).
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"expected two (B, D) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    x = x.float()
    y = y.float()
    inv = F.mse_loss(x, y)
    if gather:
        x = gather_with_grad(x)
        y = gather_with_grad(y)
    var = 0.5 * (variance_term(x) + variance_term(y))
    cov = covariance_term(x) + covariance_term(y)
    loss = inv_coeff * inv + var_coeff * var + cov_coeff * cov
    return {"loss": loss, "invariance": inv, "variance": var, "covariance": cov}
