"""Scale-out fidelity (issue 20, item 4): SyncBatchNorm in the expander under DDP
(``train.sync_bn``), and every rank's random-number state in the checkpoint, so that a
multi-process run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import REPO, tiny_args
from typer.testing import CliRunner

from mcjepa_cli.engine import distributed as du
from mcjepa_cli.engine.trainer import sync_expander_batchnorm
from mcjepa_cli.errors import UserError
from mcjepa_cli.main import app
from mcjepa_cli.models import ModelConfig, build_model

runner = CliRunner()


# ----------------------------------------------------------------------------- SyncBatchNorm
def _tiny_model() -> nn.Module:
    cfg = ModelConfig()
    cfg.encoder.arch = "convnext_atto"
    cfg.flow_head.decoder_channels = [16, 16]
    cfg.flow_head.proj_channels = 16
    cfg.expander.dims = [32, 32, 16]
    return build_model(cfg)


def test_sync_bn_converts_exactly_the_expander_batchnorm_layers():
    model = _tiny_model()
    # a BatchNorm outside the expander (none in today's encoder / flow head) must stay as it is
    model.flow_head.add_module("extra_bn", nn.BatchNorm2d(4))
    before = dict(model.named_modules())
    plain_state = model.state_dict()
    expander_bns = [n for n, m in before.items()
                    if n.startswith("expander.") and isinstance(m, nn.BatchNorm1d)]
    assert len(expander_bns) == 2  # dims [32, 32, 16]: BatchNorm after all but the last

    assert sync_expander_batchnorm(model, enabled=False) == 0
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())

    assert sync_expander_batchnorm(model, enabled=True) == 2
    after = dict(model.named_modules())
    assert sorted(after) == sorted(before)  # same names: nothing added or removed
    synced = sorted(n for n, m in after.items() if isinstance(m, nn.SyncBatchNorm))
    assert synced == sorted(expander_bns)
    assert type(after["flow_head.extra_bn"]) is nn.BatchNorm2d
    assert all(after[n] is before[n] for n in after if n.startswith(("encoder.", "flow_head.")))
    # the parameters are the same objects (an optimizer built before still holds them) ...
    assert after["expander.1"].weight is before["expander.1"].weight
    # ... and the state dict has BatchNorm's keys: checkpoints load into a plain model
    state = model.state_dict()
    assert list(state) == list(plain_state)
    plain = _tiny_model()
    plain.flow_head.add_module("extra_bn", nn.BatchNorm2d(4))
    plain.load_state_dict(state, strict=True)
    model.load_state_dict(plain.state_dict(), strict=True)  # and back
    # on CPU, without a process group, the converted expander still runs (as BatchNorm)
    assert model.embed(torch.rand(2, 3, 64, 64)).shape == (2, 16)


def test_sync_bn_choice_auto_on_off():
    assert du.sync_bn_enabled("auto", "cuda", "nccl") is True
    assert du.sync_bn_enabled("auto", "cpu", "gloo") is False
    assert du.sync_bn_enabled("auto", "cuda", None) is False  # one process: nothing to sync
    assert du.sync_bn_enabled("off", "cuda", "nccl") is False
    assert du.sync_bn_enabled("on", "cuda", "nccl") is True
    # YAML 1.1 reads a bare on / off as true / false: the same choices
    assert du.sync_bn_enabled(True, "cuda", "nccl") is True
    assert du.sync_bn_enabled(False, "cuda", "nccl") is False
    for device_type, backend in (("cpu", "gloo"), ("cpu", None), ("cuda", "gloo")):
        with pytest.raises(UserError) as e:
            du.sync_bn_enabled("on", device_type, backend)
        assert e.value.culprit == "train.sync_bn" and "CPU" in e.value.expected


def test_sync_bn_auto_is_off_under_a_real_gloo_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        assert du.backend() == "gloo"
        assert du.sync_bn_enabled("auto", "cpu", du.backend()) is False
        with pytest.raises(UserError):
            du.sync_bn_enabled("on", "cpu", du.backend())
    finally:
        dist.destroy_process_group()
    assert du.backend() is None


@pytest.mark.parametrize("value", ["on", "'on'", "true"])
def test_sync_bn_on_on_cpu_is_one_line_before_any_work(tmp_path, value):
    out = tmp_path / "run"
    r = runner.invoke(app, ["pretrain", "quickstart", *tiny_args(f"train.sync_bn={value}"),
                            "--output", str(out), "--no-progress"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: train.sync_bn: "), r.output
    assert "SyncBatchNorm does not run on CPU/gloo" in lines[0] and "Traceback" not in r.output
    assert not out.exists()  # refused before the run directory is made


# --------------------------------------------------------- per-rank RNG state, exact resume
# randomness that differs per rank and step: drop path and the VC terms' sampled positions
# (16 of the 16x16 stride-4 positions); 6 steps, checkpoints at 3 and 6
RNG_ARGS = ["model.encoder.drop_path_rate=0.2", "loss.vc_samples=16", "train.eval_pairs=1"]
TERMS = ("loss", "photometric", "smoothness", "feature_regression", "vc", "vicreg")


def _torchrun(tmp_path: Path, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "mcjepa_cli", "pretrain", *args, "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]


def _losses(run: Path) -> dict[int, dict]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "event" not in r}


def _largest_difference(a: dict[int, dict], b: dict[int, dict], steps) -> float:
    return max(abs(a[s][k] - b[s][k]) for s in steps for k in TERMS if k in a[s])


def test_two_process_resume_is_exact_with_every_ranks_rng_state(tmp_path):
    full = tmp_path / "full"
    _torchrun(tmp_path, "quickstart", *tiny_args(*RNG_ARGS), "--output", str(full))
    ck3 = full / "checkpoints" / "step_0000003.pt"
    state = torch.load(ck3, weights_only=True)  # loads as checkpoints are loaded
    rng = state["rng"]
    assert state["world_size"] == 2 and len(rng) == 2
    # each rank's own generators, not rank 0's copied: the CPU torch and Python states differ
    assert not torch.equal(rng[0]["torch"], rng[1]["torch"])
    assert rng[0]["python"] != rng[1]["python"]

    resumed = tmp_path / "resumed"
    _torchrun(tmp_path, "--resume", str(ck3), "--output", str(resumed))
    a, b = _losses(full), _losses(resumed)
    assert sorted(b) == [4, 5, 6]
    assert _largest_difference(a, b, (4, 5, 6)) <= 1e-6
    wa = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) <= 1e-6

    # the test can fail: giving rank 1 rank 0's state (what a checkpoint holding one rank's
    # state restores) changes rank 1's draws from step 4 on: its embeddings enter rank 0's
    # VICReg terms (all-gathered) at once, its gradients the shared weights from step 5
    state["rng"] = [rng[0], rng[0]]
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    tampered = tmp_path / "tampered"
    _torchrun(tmp_path, "--resume", str(wrong), "--output", str(tampered))
    c = _losses(tampered)
    assert _largest_difference(a, c, (4,)) > 1e-4 and _largest_difference(a, c, (5, 6)) > 1e-4
