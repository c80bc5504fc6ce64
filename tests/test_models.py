"""Model building blocks against independent computations (warp, cost volume, stem, shapes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcjepa_cli.models import ModelConfig, build_model
from mcjepa_cli.models.encoder import factorise_stem, fold_stem
from mcjepa_cli.models.layers import cost_volume, cost_volume_naive, resize_flow, warp


def _tiny_cfg(strides=(32, 16, 8, 4)) -> ModelConfig:
    cfg = ModelConfig()
    cfg.encoder.arch = "convnext_atto"
    cfg.flow_head.strides = list(strides)
    cfg.flow_head.decoder_channels = [16, 16]
    cfg.flow_head.proj_channels = 8
    cfg.expander.dims = [32, 32]
    return cfg


@pytest.mark.parametrize("align_corners", [False, True])
def test_warp_integer_translation(align_corners):
    torch.manual_seed(0)
    img = torch.rand(1, 3, 20, 24)
    dx, dy = 3, -2
    # frame 2 = frame 1 moved by (dx, dy): I2(x + dx, y + dy) = I1(x, y)
    img2 = torch.roll(img, shifts=(dy, dx), dims=(2, 3))
    flow = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, 20, 24)
    out, inside = warp(img2, flow, align_corners=align_corners, return_mask=True)
    # interior pixels whose target stays inside the image (no wrap-around from roll)
    ys, xs = slice(2, 18), slice(0, 21)
    assert torch.allclose(out[..., ys, xs], img[..., ys, xs], atol=1e-5)
    assert inside[0, 0, 0, 23] == 0  # x + 3 = 26 > 23: outside
    assert inside[0, 0, 5, 5] == 1


@pytest.mark.parametrize("align_corners", [False, True])
def test_warp_subpixel_on_linear_ramp(align_corners):
    h, w = 16, 18
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    a, b = 0.7, -0.3
    img = (a * xs + b * ys).view(1, 1, h, w)
    u, v = 0.3, -0.6
    flow = torch.tensor([u, v], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, h, w)
    out = warp(img, flow, align_corners=align_corners)
    expected = a * (xs + u) + b * (ys + v)  # bilinear is exact on a linear function
    assert torch.allclose(out[0, 0, 2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-9)


def test_cost_volume_matches_naive_loop():
    torch.manual_seed(1)
    b, c, h, w, r = 2, 5, 7, 9, 2
    f1, f2 = torch.randn(b, c, h, w), torch.randn(b, c, h, w)
    out = cost_volume(f1, f2, r)
    d = 2 * r + 1
    ref = torch.zeros(b, d * d, h, w)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            k = (dy + r) * d + (dx + r)
            for y in range(h):
                for x in range(w):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        ref[:, k, y, x] = (f1[:, :, y, x] * f2[:, :, yy, xx]).sum(1) / c
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(cost_volume_naive(f1, f2, r), ref, atol=1e-5)


def test_resize_flow_scales_values():
    flow = torch.ones(1, 2, 4, 5)
    out = resize_flow(flow, (8, 15))
    assert out.shape == (1, 2, 8, 15)
    assert torch.allclose(out[:, 0], torch.full((1, 8, 15), 3.0))  # width ratio 3
    assert torch.allclose(out[:, 1], torch.full((1, 8, 15), 2.0))  # height ratio 2


def test_split_stem_folds_and_factorises_exactly():
    torch.manual_seed(2)
    model = build_model(_tiny_cfg())
    enc = model.encoder
    x = torch.randn(2, 3, 32, 40)
    w, b = fold_stem(enc.stem_a, enc.stem_b)
    assert torch.allclose(enc.stem_b(enc.stem_a(x)), F.conv2d(x, w, b, stride=4), atol=1e-5)
    # factorise an arbitrary 4x4 stem and check the pair reproduces it
    w4, b4 = torch.randn(enc.stem_b.out_channels, 3, 4, 4), torch.randn(enc.stem_b.out_channels)
    parts = factorise_stem(w4, b4, enc.stem_a.out_channels)
    ya = F.conv2d(x, parts["stem_a.weight"], parts["stem_a.bias"], stride=2)
    yb = F.conv2d(ya, parts["stem_b.weight"], parts["stem_b.bias"], stride=2)
    assert torch.allclose(yb, F.conv2d(x, w4, b4, stride=4), atol=1e-5)


def test_pyramid_matches_declared_strides_and_channels():
    model = build_model(_tiny_cfg()).eval()
    x = torch.rand(1, 3, 128, 192)
    feats = model.features(x)
    assert len(feats) == 6
    for f, s, c in zip(feats, model.feature_strides, model.feature_channels):
        assert f.shape == (1, c, 128 // s, 192 // s)


@pytest.mark.parametrize("size", [(37, 53), (65, 97), (64, 64)])
def test_flow_at_any_input_size(size):
    model = build_model(_tiny_cfg(strides=(64, 32, 16, 8, 4))).eval()
    x1, x2 = torch.rand(2, 3, *size), torch.rand(2, 3, *size)
    with torch.inference_mode():
        flow = model.estimate_flow(x1, x2)
        assert flow.shape == (2, 2, *size)
        assert torch.isfinite(flow).all()
        # per-frame reuse gives the same flow as the pairwise call
        p1, p2 = model.prepare_frame(x1), model.prepare_frame(x2)
        assert torch.allclose(model.flow_between(p1, p2), flow, atol=1e-5)


def test_flow_is_clipped():
    cfg = _tiny_cfg()
    cfg.flow_head.max_flow = 1.0
    model = build_model(cfg).eval()
    for dec in model.flow_head.decoders:  # force huge residuals
        torch.nn.init.constant_(dec.out.bias, 1000.0)
    with torch.inference_mode():
        flow = model.estimate_flow(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert flow.abs().max() <= 1.0 + 1e-5


def test_embedding_shape():
    model = build_model(_tiny_cfg()).train()
    z = model.embed(torch.rand(4, 3, 64, 64))
    assert z.shape == (4, 32)


def test_cost_volume_gradients_match_autograd_reference():
    torch.manual_seed(3)
    f1 = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cost_volume(a, b, 2), (f1, f2))
    w = torch.randn(2, 25, 5, 6, dtype=torch.float64)
    g_ours = torch.autograd.grad((cost_volume(f1, f2, 2) * w).sum(), (f1, f2))
    g_ref = torch.autograd.grad((cost_volume_naive(f1, f2, 2) * w).sum(), (f1, f2))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_decoder_norm_choice():
    """``decoder_norm: none`` builds a decoder without LayerNorm that still estimates flow;
    an unknown value is refused by the model and by recipe validation (naming the key)."""
    from timm.layers import LayerNorm2d

    from mcjepa_cli.config import load_recipe, validate_recipe
    from mcjepa_cli.errors import UserError

    cfg = _tiny_cfg()
    cfg.flow_head.decoder_norm = "none"
    model = build_model(cfg).eval()
    assert not any(isinstance(mod, LayerNorm2d) for mod in model.flow_head.modules())
    with torch.no_grad():
        flow = model.estimate_flow(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96))
    assert flow.shape == (1, 2, 64, 96) and torch.isfinite(flow).all()
    cfg.flow_head.decoder_norm = "batchnorm"
    with pytest.raises(ValueError, match="decoder_norm"):
        build_model(cfg)
    recipe = load_recipe("quickstart")
    recipe.model.flow_head.decoder_norm = "batchnorm"
    with pytest.raises(UserError, match="decoder_norm"):
        validate_recipe(recipe)
