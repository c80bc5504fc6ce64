"""Per-objective encoder-gradient norms (train.grad_norms_every) vs separate backward passes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import TINY_OVERRIDES, tiny_args
from typer.testing import CliRunner

from mcjepa_cli.config import load_recipe
from mcjepa_cli.engine.diagnostics import encoder_gradient_norms
from mcjepa_cli.losses.objective import mcjepa_objective, objective_parts
from mcjepa_cli.main import app
from mcjepa_cli.models import build_model

# each objective's weight field(s) in LossConfig: zeroing all others isolates it
ISOLATE = {
    "reconstruction": "photometric",
    "smoothness": "smoothness",
    "feature_regression": "feature_regression",
    "cycle": "cycle",
    "vc": "vc",
    "vicreg": "content_weight",
}


def _tiny_setup():
    recipe = load_recipe("quickstart", [*TINY_OVERRIDES, "model.expander.dims=[32,32]"])
    torch.manual_seed(0)
    model = build_model(recipe.model)
    # the flow decoders' output layers start at zero, so at init no flow term reaches the
    # encoder: give them small weights, as after a few training steps
    with torch.no_grad():
        for p in model.flow_head.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(2, 3, 64, 64, generator=g) for k in ("image1", "image2")}
    batch.update({k: torch.rand(4, 3, 32, 32, generator=g) for k in ("view1", "view2")})
    return recipe, model, batch


def _separate_norm(model, batch, cfg, only: str, level: str | None = None) -> float:
    """Encoder-gradient norm of one objective by its own forward and backward pass, over the
    whole encoder or over the parameters named for one level (by name, independently of
    ``level_parameters``)."""
    weights = dict.fromkeys(ISOLATE.values(), 0.0)
    weights[ISOLATE[only]] = getattr(cfg, ISOLATE[only])
    if only != "vicreg":
        weights["content_weight"] = 0.0
    solo = dataclasses.replace(cfg, **weights)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same VC samples as the combined pass
    loss, _ = mcjepa_objective(model, batch, solo, flow_on=True)
    loss.backward()
    prefix = {None: ("",), "s2": ("stem_a.",), "s4": ("stem_b.", "stem_norm.", "stages.0."),
              "s8": ("stages.1.",), "s16": ("stages.2.",), "s32": ("stages.3.",),
              "s64": ("extra.",)}[level]
    grads = [p.grad for n, p in model.encoder.named_parameters()
             if p.grad is not None and n.startswith(prefix)]
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def test_encoder_gradient_norms_equal_separate_backward_passes():
    recipe, model, batch = _tiny_setup()
    cfg = dataclasses.replace(recipe.loss, feature_regression=0.3, cycle=0.2)
    torch.manual_seed(123)
    loss, terms = mcjepa_objective(model, batch, cfg, flow_on=True)
    parts = objective_parts(terms, cfg)
    assert set(parts) == set(ISOLATE)
    # the parts add up to the loss that is optimised
    assert float(sum(parts.values()).detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
    params = list(model.encoder.parameters())
    norms, by_level = encoder_gradient_norms(parts, params, model.encoder.level_parameters())
    assert set(by_level) == {"s2", "s4", "s8", "s16", "s32", "s64"}
    # the graph is kept: the step's own backward still runs afterwards
    loss.backward()
    for name in ISOLATE:
        expected = _separate_norm(model, batch, cfg, name)
        assert expected > 0, name
        assert norms[name] == pytest.approx(expected, rel=1e-4), name
        # the level that davis-eval reads and the level that VICReg pools, separately
        for level in ("s8", "s32"):
            expected = _separate_norm(model, batch, cfg, name, level)
            got = by_level[level][name]
            assert got == pytest.approx(expected, rel=1e-4, abs=1e-12), (name, level)
        # the levels split the encoder's parameters: their squares add up to the total
        total_sq = sum(v[name] ** 2 for v in by_level.values())
        assert total_sq == pytest.approx(norms[name] ** 2, rel=1e-6), name


def test_zero_weight_objective_is_left_out():
    recipe, model, batch = _tiny_setup()
    cfg = dataclasses.replace(recipe.loss, cycle=0.0, content_weight=0.0)
    torch.manual_seed(0)
    _, terms = mcjepa_objective(model, batch, cfg, flow_on=True)
    assert set(objective_parts(terms, cfg)) == set(ISOLATE) - {"cycle", "vicreg"}


def test_pretrain_logs_encoder_gradient_norms(tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["pretrain", "quickstart",
                                 *tiny_args("train.grad_norms_every=2", "train.log_every=2"),
                                 "--output", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [rec for rec in records if "event" not in rec]
    assert [rec["step"] for rec in train] == [2, 4, 6]
    for rec in train:
        norms = rec["encoder_grad_norm"]
        assert set(norms) == set(ISOLATE)
        assert all(v > 0 and v == v for v in norms.values())
        levels = rec["encoder_grad_norm_by_level"]
        assert set(levels) == {"s2", "s4", "s8", "s16", "s32", "s64"}
        assert all(set(v) == set(ISOLATE) for v in levels.values())


def test_grad_norms_every_is_validated(tmp_path):
    r = CliRunner().invoke(app, ["pretrain", "quickstart", *tiny_args("train.grad_norms_every=-1"),
                                 "--output", str(tmp_path / "x"), "--no-progress"])
    assert r.exit_code == 2
    assert "train.grad_norms_every" in r.output


@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_flow_encoder_grad_scales_only_the_flow_heads_gradient_into_the_encoder(scale):
    recipe, model, batch = _tiny_setup()
    full = dataclasses.replace(recipe.loss, flow_encoder_grad=[1.0])
    scaled = dataclasses.replace(recipe.loss, flow_encoder_grad=[scale])
    params = list(model.encoder.parameters())
    head = list(model.flow_head.parameters())
    norms, head_grads, losses = {}, {}, {}
    for name, cfg in (("full", full), ("scaled", scaled)):
        torch.manual_seed(5)
        loss, terms = mcjepa_objective(model, batch, cfg, flow_on=True)
        losses[name] = float(loss.detach())
        parts = objective_parts(terms, cfg)
        norms[name], _ = encoder_gradient_norms(parts, params)
        head_grads[name] = torch.autograd.grad(parts["reconstruction"], head, retain_graph=True)
    assert losses["scaled"] == losses["full"]  # the forward pass is unchanged
    for name in ("reconstruction", "smoothness"):  # through the flow head: scaled
        expected = scale * norms["full"][name]
        assert norms["scaled"][name] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    # on the features alone: unscaled (feature regression and cycle also reach the encoder
    # through the flow they warp with, so they change in part)
    for name in ("vc", "vicreg"):
        assert norms["scaled"][name] == pytest.approx(norms["full"][name], rel=1e-4)
    for a, b in zip(head_grads["full"], head_grads["scaled"], strict=True):  # head learns as before
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_flow_encoder_grad_is_validated(tmp_path):
    r = CliRunner().invoke(app, ["pretrain", "quickstart",
                                 *tiny_args("loss.flow_encoder_grad=[1.0,1.5]"),
                                 "--output", str(tmp_path / "x"), "--no-progress"])
    assert r.exit_code == 2
    assert "loss.flow_encoder_grad" in r.output
