"""The staged flow objective: SSIM share and occlusion masks switch in at schedule.*_start,
counted from the flow start (schedule.flow_start), in the schedule's unit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_OVERRIDES

import mcjepa_cli.engine.trainer as trainer
from mcjepa_cli.config import load_recipe, recipe_from_dict, to_dict
from mcjepa_cli.errors import UserError
from mcjepa_cli.losses.objective import FlowStage, flow_objective
from mcjepa_cli.models import build_model


def _recipe(*extra: str):
    return load_recipe("quickstart", [*TINY_OVERRIDES, *extra])


def test_stage_steps_count_from_flow_start_in_steps():
    r = _recipe("schedule.total=100", "schedule.flow_start=10", "schedule.ssim_start=5",
                "schedule.occlusion_start=20")
    plan = trainer.plan_schedule(r, None)
    assert (plan.flow_start_step, plan.ssim_start_step, plan.occlusion_start_step) == (10, 15, 30)
    assert plan.stage(14) == FlowStage(ssim=False, occlusion=False)
    assert plan.stage(15) == FlowStage(ssim=True, occlusion=False)
    assert plan.stage(29) == FlowStage(ssim=True, occlusion=False)
    assert plan.stage(30) == FlowStage(ssim=True, occlusion=True)


def test_stage_steps_count_from_flow_start_in_epochs():
    r = _recipe("schedule.unit=epochs", "schedule.steps_per_epoch=7", "schedule.total=10",
                "schedule.warmup=1", "schedule.flow_start=2", "schedule.ssim_start=1",
                "schedule.occlusion_start=0.5")
    plan = trainer.plan_schedule(r, None)
    assert (plan.flow_start_step, plan.ssim_start_step, plan.occlusion_start_step) == (14, 21, 18)


def test_default_is_everything_from_the_flow_start():
    plan = trainer.plan_schedule(_recipe("schedule.total=50", "schedule.flow_start=7"), None)
    assert plan.ssim_start_step == plan.occlusion_start_step == 7
    assert plan.stage(7) == FlowStage()


@pytest.mark.parametrize("key", ["schedule.ssim_start", "schedule.occlusion_start"])
def test_negative_stage_start_is_refused(key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        _recipe(f"{key}=-1")


def _model_and_pair():
    recipe = _recipe("loss.photo_ssim=0.85", "loss.photo_l1=1.0", "loss.photo_census=1.0",
                     "loss.occlusion=true", "loss.max_occluded_fraction=1.0")
    torch.manual_seed(0)
    model = build_model(recipe.model)
    with torch.no_grad():  # non-zero flow, so warping and occlusion masks matter
        for p in model.flow_head.parameters():
            if not p.any():
                p.normal_(0.0, 0.3)
    g = torch.Generator().manual_seed(3)
    img1 = torch.rand(2, 3, 64, 64, generator=g)
    img2 = torch.roll(img1, shifts=(2, 3), dims=(2, 3)) * 0.9 + 0.05
    return recipe.loss, model, img1, img2


def _photo(model, img1, img2, cfg, stage):
    torch.manual_seed(7)  # the same VC samples every call
    with torch.no_grad():
        _, terms = flow_objective(model, img1, img2, cfg, stage)
    return terms


def test_ssim_stage_adds_exactly_the_ssim_share():
    cfg, model, img1, img2 = _model_and_pair()
    cfg = dataclasses.replace(cfg, occlusion=False)
    off = _photo(model, img1, img2, cfg, FlowStage(ssim=False))["photometric"]
    on = _photo(model, img1, img2, cfg, FlowStage(ssim=True))["photometric"]
    # the per-pixel distance is a weighted sum, so the difference is the SSIM share on its own
    ssim_only = dataclasses.replace(cfg, photo_l1=0.0, photo_l2=0.0, photo_census=0.0)
    alone = _photo(model, img1, img2, ssim_only, FlowStage(ssim=True))["photometric"]
    assert float(alone) > 0.01
    torch.testing.assert_close(on - off, alone, rtol=1e-5, atol=1e-6)
    no_ssim = _photo(model, img1, img2, dataclasses.replace(cfg, photo_ssim=0.0), FlowStage())
    torch.testing.assert_close(off, no_ssim["photometric"])


def test_occlusion_stage_is_the_unmasked_objective_until_it_starts():
    cfg, model, img1, img2 = _model_and_pair()
    before = _photo(model, img1, img2, cfg, FlowStage(occlusion=False))
    unmasked = _photo(model, img1, img2, dataclasses.replace(cfg, occlusion=False), FlowStage())
    after = _photo(model, img1, img2, cfg, FlowStage(occlusion=True))
    for key in ("photometric", "feature_regression", "cycle"):
        torch.testing.assert_close(before[key], unmasked[key])
    assert float(before["occluded_fraction"]) == 0.0
    assert float(after["occluded_fraction"]) > 0.0  # masks are on: the terms change
    assert not torch.equal(after["photometric"], before["photometric"])


def test_pretrain_switches_stages_at_the_planned_steps(tmp_path, monkeypatch, capsys):
    calls: list[tuple[bool, FlowStage]] = []
    real = trainer.mcjepa_objective

    def spy(model, batch, cfg, flow_on, stage):
        calls.append((flow_on, stage))
        return real(model, batch, cfg, flow_on, stage)

    monkeypatch.setattr(trainer, "mcjepa_objective", spy)
    recipe = _recipe("schedule.total=8", "schedule.flow_start=2", "schedule.ssim_start=3",
                     "schedule.occlusion_start=4", "train.checkpoint_every=100",
                     "loss.photo_ssim=0.5", "loss.occlusion=true")
    trainer.pretrain(recipe, output=str(tmp_path / "run"), show_progress=False)
    assert [on for on, _ in calls] == [False, False] + [True] * 6
    assert [s.ssim for _, s in calls[2:]] == [False, False, False, True, True, True]
    assert [s.occlusion for _, s in calls[2:]] == [False, False, False, False, True, True]
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())  # the console wraps long lines
    assert "flow from step 2, SSIM from step 5, occlusion masks from step 6" in text


def test_old_occlusion_start_step_is_read_as_the_new_field():
    data = to_dict(_recipe("schedule.total=100", "schedule.flow_start=10"))
    data["loss"]["occlusion_start_step"] = 30
    del data["schedule"]["occlusion_start"]
    r = recipe_from_dict(data)
    assert r.schedule.occlusion_start == 20
    assert trainer.plan_schedule(r, None).occlusion_start_step == 30
