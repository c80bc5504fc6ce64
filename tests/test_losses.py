"""Loss terms against hand computations and ground truth."""

from __future__ import annotations

import math

import pytest
import torch

from mcjepa_cli.losses import (
    census_distance,
    cycle_loss,
    feature_regression_loss,
    occlusion_mask,
    photometric_distance,
    smoothness_loss,
    vicreg_loss,
)
from mcjepa_cli.losses.photometric import masked_mean
from mcjepa_cli.models.layers import warp


def test_vicreg_hand_computed_covariance_case():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    out = vicreg_loss(x, y)
    # invariance: mean of squared differences = (0 + 0 + 0 + 4) / 4
    assert out["invariance"].item() == pytest.approx(1.0)
    # every unbiased variance (2, 2 | 2, 8) gives std > 1: no hinge
    assert out["variance"].item() == pytest.approx(0.0)
    # covariances: x -> [[2, 2], [2, 2]] (off-diag^2 sum 8, / D=2 -> 4);
    # y -> [[2, 4], [4, 8]] (off-diag^2 sum 32, / 2 -> 16)
    assert out["covariance"].item() == pytest.approx(20.0)
    assert out["loss"].item() == pytest.approx(25 * 1.0 + 25 * 0.0 + 1 * 20.0)


def test_vicreg_hand_computed_variance_case():
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    out = vicreg_loss(x, y, inv_coeff=1.0, var_coeff=2.0, cov_coeff=3.0)
    eps = 1e-4
    hx = (max(0, 1 - math.sqrt(0.125 + eps)) + max(0, 1 - math.sqrt(0.0 + eps))) / 2
    hy = (max(0, 1 - math.sqrt(0.0 + eps)) + max(0, 1 - math.sqrt(2.0 + eps))) / 2
    assert out["variance"].item() == pytest.approx((hx + hy) / 2, rel=1e-6)
    inv = (0 + 1 + 0.25 + 9) / 4
    assert out["invariance"].item() == pytest.approx(inv)
    assert out["covariance"].item() == pytest.approx(0.0, abs=1e-12)  # a constant dimension each
    assert out["loss"].item() == pytest.approx(inv + 2 * (hx + hy) / 2, rel=1e-6)


@pytest.mark.parametrize("n,d", [(6, 40), (40, 6), (3, 3), (4, 2048)])
def test_covariance_term_matches_numpy_cov_and_explicit_gradient(n, d):
    """The (N, N) Gram path (N < D) and the (D, D) path both equal numpy's covariance."""
    import numpy as np

    from mcjepa_cli.losses.vicreg import covariance_term

    g = torch.Generator().manual_seed(n * 1000 + d)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d,
                                                                               dtype=torch.float64))
    c = np.cov(x.numpy(), rowvar=False)  # unbiased, (D, D)
    expected = (np.square(c).sum() - np.square(np.diag(c)).sum()) / d
    x.requires_grad_(True)
    got = covariance_term(x)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # gradient against autograd through the explicit (D, D) covariance
    (grad,) = torch.autograd.grad(got, x)
    xr = x.detach().clone().requires_grad_(True)
    xc = xr - xr.mean(0)
    cov = xc.T @ xc / (n - 1)
    ref = (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d
    (grad_ref,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_vicreg_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        vicreg_loss(torch.zeros(4, 3), torch.zeros(4, 2))


def test_occlusion_mask_formula():
    h, w = 6, 8
    fw = torch.zeros(1, 2, h, w)
    fw[:, 0] = 2.0
    bw = torch.zeros(1, 2, h, w)
    bw[:, 0] = -2.0  # consistent: fw + W(bw, fw) = 0 -> visible where the target is inside
    occ = occlusion_mask(fw, bw)
    assert occ[..., :, : w - 3].sum() == 0
    bw_bad = torch.zeros(1, 2, h, w)  # inconsistent: |2|^2 = 4 > 0.01 * 4 + 0.5
    assert occlusion_mask(fw, bw_bad)[..., :, : w - 3].min() == 1


def _synthetic_pair():
    from mcjepa_cli.data.synthetic import SyntheticFlowPairs

    ds = SyntheticFlowPairs(64, 80, 4, seed=3, split="val")
    items = [ds[i] for i in range(4)]
    im1 = torch.stack([it["image1"] for it in items])
    im2 = torch.stack([it["image2"] for it in items])
    flow = torch.stack([it["flow"] for it in items])
    occ = torch.stack([it["occlusion"] for it in items]).unsqueeze(1).float()
    return im1, im2, flow, occ


def test_flow_losses_lower_with_true_flow_than_zero_flow():
    im1, im2, flow, occ = _synthetic_pair()
    assert flow.abs().max() > 0.5  # the world moves
    zero = torch.zeros_like(flow)
    vis = 1.0 - occ

    def photo(f):
        warped, inside = warp(im2, f, return_mask=True)
        return masked_mean(photometric_distance(im1, warped), vis * inside).item()

    assert photo(flow) < 0.5 * photo(zero)
    # feature regression on fixed random conv features of the frames
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        x1, x2 = conv(im1), conv(im2)
        assert feature_regression_loss(x1, x2, flow, vis) < 0.5 * feature_regression_loss(x1, x2, zero, vis)


def test_cycle_loss_zero_for_consistent_translation():
    torch.manual_seed(0)
    x = torch.rand(1, 4, 16, 16)
    fw = torch.zeros(1, 2, 16, 16)
    fw[:, 0] = 2.0
    bw = -fw
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 3:-3, 3:-3] = 1  # away from borders where zero padding enters
    assert cycle_loss(x, fw, bw, mask).item() < 1e-10
    assert cycle_loss(x, fw, fw, mask).item() > 1e-3


def test_smoothness_second_order_ignores_affine_flow():
    img = torch.rand(1, 3, 12, 14)
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(14.0), indexing="ij")
    affine = torch.stack((0.1 * xs + 0.2 * ys, -0.3 * xs)).unsqueeze(0)
    assert smoothness_loss(affine, img, order=2).item() < 1e-6
    assert smoothness_loss(affine, img, order=1).item() > 1e-3
    bumpy = affine.clone()
    bumpy[..., 6, 7] += 5.0
    assert smoothness_loss(bumpy, img, order=2).item() > 1e-3


def test_photometric_distance_zero_for_identical_images():
    img = torch.rand(2, 3, 10, 10)
    d = photometric_distance(img, img, l1=0.0, l2=1.0, ssim=1.0, census=1.0)
    assert d.abs().max().item() < 1e-6


def test_census_distance_matches_a_per_pixel_loop():
    # soft ternary census (UnFlow): grey in [0, 255], t = d / sqrt(0.81 + d^2) for each of the
    # 7x7 neighbours (zero outside the image), distance = mean over neighbours of s / (0.1 + s)
    # with s the squared difference of the two images' t
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, 9, 11, dtype=torch.float64), torch.rand(1, 3, 9, 11, dtype=torch.float64)
    gx, gy = x.mean(1)[0] * 255.0, y.mean(1)[0] * 255.0
    h, w = gx.shape

    def t(g, i, j, di, dj):
        ii, jj = i + di, j + dj
        n = g[ii, jj] if 0 <= ii < h and 0 <= jj < w else 0.0
        d = n - g[i, j]
        return d / (0.81 + d * d) ** 0.5

    expected = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            acc = 0.0
            for di in range(-3, 4):
                for dj in range(-3, 4):
                    s = (t(gx, i, j, di, dj) - t(gy, i, j, di, dj)) ** 2
                    acc += s / (0.1 + s)
            expected[i, j] = acc / 49
    got = census_distance(x, y)
    assert got.shape == (1, 1, h, w)
    torch.testing.assert_close(got[0, 0], expected, rtol=1e-9, atol=1e-12)
    # photometric_distance adds it with its weight
    both = photometric_distance(x, y, l1=0.0, ssim=0.0, census=0.5)
    torch.testing.assert_close(both[0, 0], 0.5 * expected, rtol=1e-9, atol=1e-12)
