"""Run under torchrun (2 processes, gloo): vicreg_loss's variance and covariance must equal
the single-process values on the concatenation of every rank's batch, with gradients that,
averaged over ranks as DDP does, give the full-batch gradient."""

import json
import sys

import torch
import torch.distributed as dist

from mcjepa_cli.losses import covariance_term, variance_term, vicreg_loss

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
xs = [torch.randn(6, 5, generator=g) * (1 + r) for r in range(world)]  # every rank's batch
ys = [torch.randn(6, 5, generator=g) for r in range(world)]
x = xs[rank].clone().requires_grad_()
y = ys[rank].clone()
out = vicreg_loss(x, y, inv_coeff=0.0, var_coeff=1.0, cov_coeff=1.0)
X, Y = torch.cat(xs), torch.cat(ys)
var_ref = 0.5 * (variance_term(X) + variance_term(Y))
cov_ref = covariance_term(X) + covariance_term(Y)
out["loss"].backward()
# every rank computes the same gathered loss L; the all-gather's backward sums the ranks'
# gradients, so this rank's samples receive world * dL/dx; DDP's averaging over ranks then
# yields exactly the full-batch gradient for the shared parameters.
Xr = X.clone().requires_grad_()
(0.5 * (variance_term(Xr) + variance_term(Y)) + covariance_term(Xr) + covariance_term(Y)).backward()
ref_grad = Xr.grad[rank * 6 : (rank + 1) * 6]
local_var = 0.5 * (variance_term(xs[rank]) + variance_term(ys[rank]))
res = {
    "variance_diff": float((out["variance"] - var_ref).abs()),
    "covariance_diff": float((out["covariance"] - cov_ref).abs()),
    "local_variance_differs": bool((local_var - var_ref).abs() > 1e-4),
    "grad_diff": float((x.grad / world - ref_grad).abs().max()),
}
if rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(res, f)
dist.destroy_process_group()
