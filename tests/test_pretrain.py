"""End-to-end pretraining: runs, exact resume, run directory contents, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import REPO, tiny_args
from mcjepa_cli.main import app

runner = CliRunner()


def _losses(run: Path) -> dict[int, dict]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "event" not in rec:
            out[rec["step"]] = rec
    return out


def test_pretrain_run_and_exact_resume(tmp_path):
    full = tmp_path / "full"
    r = runner.invoke(app, ["pretrain", "quickstart", *tiny_args("train.eval_every=3"), "--output",
                            str(full), "--no-progress"])
    assert r.exit_code == 0, r.output
    for name in ("recipe.yaml", "metrics.jsonl", "summary.json", "summary.md",
                 "checkpoints/last.pt", "checkpoints/step_0000003.pt"):
        assert (full / name).is_file(), name
    summary = json.loads((full / "summary.json").read_text())
    assert {"heldout_epe", "zero_flow_epe", "embedding_std", "wall_time_s"} <= set(summary)
    ck = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 6 and ck["recipe"]["model"]["encoder"]["arch"] == "convnext_atto"

    # "stopped after step 3": continue from the step-3 checkpoint in a fresh directory
    resumed = tmp_path / "resumed"
    r = runner.invoke(app, ["pretrain", "--resume", str(full / "checkpoints" / "step_0000003.pt"),
                            "--output", str(resumed), "--no-progress"])
    assert r.exit_code == 0, r.output
    a, b = _losses(full), _losses(resumed)
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        for key in ("loss", "photometric", "vicreg", "feature_regression", "smoothness"):
            assert abs(a[step][key] - b[step][key]) <= 1e-6, (step, key, a[step][key], b[step][key])
    wa = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6

    # the mid-run evaluation (train.eval_every=3; the resumed run above matched the
    # uninterrupted one, so evaluating does not disturb training) equals EPE computed here,
    # independently, from the step-3 checkpoint on the same held-out pairs
    records = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    evals = [rec for rec in records if rec.get("event") == "eval"]
    assert [e["step"] for e in evals] == [3]  # step 6 is the end-of-run report's
    from mcjepa_cli.config import load_recipe
    from mcjepa_cli.data.synthetic import SyntheticFlowPairs
    from mcjepa_cli.models import build_model

    ck3 = torch.load(full / "checkpoints" / "step_0000003.pt", weights_only=True)
    recipe = load_recipe("quickstart", tiny_args()[1::2])  # the overrides without "--set"
    model = build_model(recipe.model)
    model.load_state_dict(ck3["model"])
    model.eval()
    pairs = SyntheticFlowPairs(64, 64, 4, seed=0, split="val", cfg=recipe.data.synthetic)
    errs, mags = [], []
    with torch.no_grad():
        for i in range(4):
            item = pairs[i]
            pred = model.estimate_flow(item["image1"][None], item["image2"][None])[0]
            errs.append(((pred - item["flow"]) ** 2).sum(0).sqrt().flatten())
            mags.append((item["flow"] ** 2).sum(0).sqrt().flatten())
    epe, zero = torch.cat(errs).mean().item(), torch.cat(mags).mean().item()
    assert evals[0]["heldout_epe"] == pytest.approx(epe, rel=1e-5)
    assert evals[0]["zero_flow_epe"] == pytest.approx(zero, rel=1e-6)
    assert evals[0]["epe_ratio"] == pytest.approx(epe / zero, rel=1e-5)


def test_run_directory_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    r = runner.invoke(app, ["pretrain", "quickstart", *tiny_args(), "--output", str(out)])
    assert r.exit_code == 2
    assert "--overwrite" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["pretrain", "no/such/recipe.yaml"], "no/such/recipe.yaml"),
        (["pretrain", "quickstart", "--set", "optim.lr_encodr=1"], "optim.lr_encoder"),
        (["pretrain", "quickstart", "--set", "train.seed=x"], "train.seed"),
        (["pretrain", "quickstart", "--device", "tpu"], "train.device: expected auto, cpu"),
        (["pretrain", "quickstart", "--set", "data.flow=[{name: sintel, root: /no/such/sintel}]"],
         "/no/such/sintel"),
        (["pretrain", "--resume", "/no/such/run"], "/no/such/run"),
        (["pretrain"], "RECIPE"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, culprit, tmp_path):
    r = runner.invoke(app, [*args, "--output", str(tmp_path / "o")] if len(args) > 1 else args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert culprit in lines[0]
    assert "Traceback" not in r.output


def test_yaml_syntax_error_and_empty_dataset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {encoder: [\n")
    r = runner.invoke(app, ["pretrain", str(bad)])
    assert r.exit_code == 2 and "YAML error" in r.output and str(bad) in r.output
    empty = tmp_path / "frames"
    empty.mkdir()
    r = runner.invoke(app, ["pretrain", "quickstart", *tiny_args(),
                            "--set", f"data.flow=[{{name: frames, root: {empty}}}]",
                            "--output", str(tmp_path / "o")])
    assert r.exit_code == 2 and str(empty) in r.output and "Traceback" not in r.output


def test_help_lists_pretrain_and_module_entry_point():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "pretrain" in r.output
    p = subprocess.run([sys.executable, "-m", "mcjepa_cli", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("mcjepa ")


def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mcjepa_cli", "pretrain", "quickstart", *tiny_args("schedule.total=2"),
           "--output", str(out), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["max_param_diff_across_ranks"] == 0.0  # identical after every step
    # VICReg's variance / covariance use the batch gathered from both ranks
    script = REPO / "tests" / "ddp_vicreg_check.py"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(script), str(tmp_path / "vicreg.json")],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "vicreg.json").read_text())
    assert res["variance_diff"] < 1e-6 and res["covariance_diff"] < 1e-6
    assert res["local_variance_differs"]
    assert res["grad_diff"] < 1e-6
