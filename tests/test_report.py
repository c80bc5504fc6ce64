"""Pictures of a run: ``summary.md`` plots and ``mcjepa report RUN`` (issue 23, item 5)."""

from __future__ import annotations

import shutil

from conftest import tiny_args
from PIL import Image
from typer.testing import CliRunner

from mcjepa_cli.main import app

runner = CliRunner()
PLOTS = ("losses.png", "optim.png", "throughput.png", "eval.png", "flow.png")


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()  # the whole file decodes
        return im.size


def test_a_finished_run_links_its_plots_and_report_redraws_them(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["pretrain", "quickstart", *tiny_args(
        "schedule.total=4", "train.eval_every=2", "train.eval_pairs=1",
        "train.eval_sets=[{name: synthetic}]", "train.report_plots=true"),
        "--output", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = (run / "summary.md").read_text()
    assert "## Plots" in summary
    for name in PLOTS:
        assert f"](report/{name})" in summary, name
        w, h = _png_size(run / "report" / name)
        assert name == "flow.png" or (w >= 300 and h >= 100)
    # the flow panel: five 64-px panels side by side under a caption strip
    w, h = _png_size(run / "report" / "flow.png")
    assert w == 5 * 64 + 4 * 2 and h > 64
    before = {n: (run / "report" / n).stat().st_mtime_ns for n in PLOTS}
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert f"wrote {run / 'report' / 'report.md'}" in r.output
    assert all((run / "report" / n).stat().st_mtime_ns >= before[n] for n in PLOTS)
    assert "of 4 (finished)" in (run / "report" / "report.md").read_text()


def test_report_of_a_run_still_training_and_of_no_run(tmp_path):
    # mid-run: metrics.jsonl only (no summary, no checkpoint yet), a record being written last
    run = tmp_path / "mid"
    run.mkdir()
    lines = [f'{{"step": {s}, "loss": {5.0 / s}, "photometric": {1.0 / s}, "lr": {{"encoder": '
             f'{1e-3 * s}}}, "grad_norm": 1.0, "steps_per_s": 2.0}}' for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "lo')
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in (run / "report").glob("*.png"))
    assert written == ["losses.png", "optim.png", "throughput.png"]  # no eval, no checkpoint
    text = (run / "report" / "report.md").read_text()
    assert "logged steps: 5 (so far)" in text and "eval.png" not in text
    # not a run: one line, exit 2
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["report", str(empty)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no metrics.jsonl" in lines[0]
    shutil.rmtree(empty)
    r = runner.invoke(app, ["report", str(empty)])
    assert r.exit_code == 2 and "expected a run directory" in r.output
