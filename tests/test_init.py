"""``pretrain --init CHECKPOINT``: a new run that starts from an mcjepa checkpoint's weights
(issue 21, point 1)."""

from __future__ import annotations

import torch
from conftest import TINY_OVERRIDES, tiny_args
from typer.testing import CliRunner

from mcjepa_cli.engine.checkpoint import load_checkpoint
from mcjepa_cli.main import app

runner = CliRunner()
# the fixture run's flow size; learning rates 0: one step changes no weight, so last.pt after
# step 1 holds the weights the run started from
SAME = [o for o in TINY_OVERRIDES if not o.startswith("data.flow_size")] + [
    "data.flow_size=[64,96]", "schedule.total=1", "train.eval_every=0", "train.eval_pairs=1",
    "optim.lr_encoder=0", "optim.lr_flow_head=0", "optim.lr_expander=0"]


def _run(tmp_path, name, *extra, init=None):
    args = ["pretrain", "quickstart", *tiny_args(*SAME, *extra), "--output",
            str(tmp_path / name), "--no-progress"]
    return runner.invoke(app, [*args, "--init", str(init)] if init is not None else args)


def test_init_starts_from_the_checkpoints_weights_with_a_fresh_optimiser(tmp_path,
                                                                          quickstart_checkpoint):
    source = load_checkpoint(quickstart_checkpoint)
    assert int(source["step"]) == 12 and source["optimizer"]["state"]
    r = _run(tmp_path, "a", "model.expander.dims=[32,32]", init=quickstart_checkpoint)
    assert r.exit_code == 0, r.output
    assert "init: loaded encoder, flow_head from" in r.output
    assert "left at initialisation: expander ('expander.0.weight' is (64, 320) there, (32, 320) here)" in r.output
    ck = load_checkpoint(tmp_path / "a")
    assert int(ck["step"]) == 1  # a new run: step 0 + one step
    assert ck["recipe"]["model"]["init"] == str(quickstart_checkpoint)
    # a fresh optimiser: one step of moments, not the source's 12 + 1
    assert {int(s["step"]) for s in ck["optimizer"]["state"].values()} == {1}
    params = {k for k in ck["model"] if k.startswith(("encoder.", "flow_head."))}
    assert len(params) > 50
    for k in params:
        assert torch.equal(ck["model"][k], source["model"][k]), k
    assert ck["model"]["expander.0.weight"].shape == (32, 320)
    # control: without --init the same run starts elsewhere
    r = _run(tmp_path, "b", "model.expander.dims=[32,32]", "train.seed=5")
    assert r.exit_code == 0, r.output
    fresh = load_checkpoint(tmp_path / "b")["model"]
    assert not torch.equal(fresh["encoder.stem_a.weight"], source["model"]["encoder.stem_a.weight"])


def test_init_refusals_are_one_line(tmp_path, quickstart_checkpoint):
    r = _run(tmp_path, "c", "model.encoder.arch=convnext_femto", init=quickstart_checkpoint)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "its encoder does not fit this recipe's convnext_femto encoder" in lines[0]
    assert "'encoder.stem_a.weight' is (20, 3, 2, 2) there, (24, 3, 2, 2) here" in lines[0]
    r = _run(tmp_path, "d", init=tmp_path / "missing.pt")
    assert r.exit_code == 2 and "checkpoint not found" in r.output
    r = runner.invoke(app, ["pretrain", "--resume", str(quickstart_checkpoint), "--init",
                            str(quickstart_checkpoint)])
    assert r.exit_code == 2 and "--init" in r.output
