"""``train.eval_sets``: flow-eval datasets scored while pretraining (issue 23, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_args
from typer.testing import CliRunner

from mcjepa_cli.eval.flow_eval import flow_eval
from mcjepa_cli.main import app

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _run(run: Path, sets: str, *extra: str):
    return runner.invoke(app, ["pretrain", "quickstart", *tiny_args(
        "schedule.total=4", "train.eval_every=2", "train.eval_pairs=1", f"train.eval_sets={sets}",
        *extra), "--output", str(run), "--no-progress"])


def test_eval_sets_are_scored_during_and_after_the_run_like_flow_eval(tmp_path):
    run = tmp_path / "run"
    sets = "[{name: synthetic}]"
    roots = []
    if (SHARED / "middlebury").is_dir():
        roots.append(("middlebury", SHARED / "middlebury"))
        sets = f"[{{name: synthetic}}, {{name: middlebury, root: '{SHARED / 'middlebury'}'}}]"
    r = _run(run, sets)
    assert r.exit_code == 0, r.output
    evals = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()
             if '"event": "eval"' in ln]
    assert [e["step"] for e in evals] == [2]
    labels = {"synthetic", *(name for name, _ in roots)}
    assert set(evals[0]["eval_sets_epe"]) == labels
    assert "| synthetic " in r.output.replace("\n", " ")  # the console line
    summary = json.loads((run / "summary.json").read_text())
    # the end-of-run figures equal flow-eval's own on the final checkpoint
    ckpt = str(run / "checkpoints" / "last.pt")
    assert summary["eval_sets"]["synthetic"] == pytest.approx(
        flow_eval("synthetic", checkpoint=ckpt)[0]["epe"], rel=1e-5)
    for name, root in roots:
        assert summary["eval_sets"][name] == pytest.approx(
            flow_eval(name, root=root, checkpoint=ckpt)[0]["epe"], rel=1e-5)
    assert "EPE on synthetic (train.eval_sets, pooled)" in (run / "summary.md").read_text()


def test_a_bad_eval_set_is_one_line_before_training(tmp_path):
    for sets, words in (("[{name: middlebury, root: /nonexistent/mb}]", "dataset folder not found"),
                        ("[{name: nope}]", "expected one of sintel")):
        r = _run(tmp_path / "run", sets)
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: train.eval_sets[0]")
        assert words in lines[0]
        assert not (tmp_path / "run" / "metrics.jsonl").exists()
