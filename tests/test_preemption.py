"""How clusters stop jobs, and outputs a run must not touch (issue 24).

Schedulers (Slurm, Kubernetes, ``timeout``) send SIGTERM to a job's whole process group, so the
DataLoader workers and, under torchrun, the launcher get it too. ``--overwrite`` removes only
what a run writes. Plus the small output contracts: ``--json -``, ``latest``, file modes,
the progress bar at 80 columns, one-line errors for unwritable outputs and hostile values.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_args
from rich.console import Console
from typer.testing import CliRunner

from mcjepa_cli.engine.checkpoint import load_checkpoint
from mcjepa_cli.main import app

runner = CliRunner()
DEADLINE_S = float(os.environ.get("MCJEPA_TEST_PROCESS_DEADLINE_S", 120))
FLOW_ONLY = "model.content=false"


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a record being written
            continue
        if "event" not in rec:
            out.append(int(rec["step"]))
    return out


def _group_sigterm_then_resume(tmp_path: Path, launcher: list[str],
                               extra: list[str]) -> tuple[str, int]:
    """Start a run in its own session, SIGTERM its whole group after a step, check the
    checkpoint, then resume to the end. Returns the interrupted run's log and exit code."""
    run = tmp_path / "run"
    args = [*tiny_args("schedule.total=40", "train.log_every=1", "train.checkpoint_every=1000",
                       "train.eval_pairs=1", FLOW_ONLY, *extra),
            "--output", str(run), "--no-progress"]
    log = tmp_path / "term.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*launcher, "pretrain", "quickstart", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not _steps(run):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler does at preemption
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    reached = max(_steps(run))
    assert reached < 40, "the run ended before the signal; the test proves nothing"
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert int(ck["step"]) == reached  # complete, and the step the run had reached
    assert f"checkpoint saved at step {reached}" in text, text[-3000:]
    assert "DataLoader worker" not in text, text[-3000:]
    # resume to the end: every step logged exactly once
    p = subprocess.run([*launcher, "pretrain", "--resume", str(run), "--no-progress"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _steps(run) == list(range(1, 41))
    return text, proc.returncode


def test_sigterm_to_the_process_group_with_loader_workers_saves_and_exits_143(tmp_path):
    text, code = _group_sigterm_then_resume(
        tmp_path, [sys.executable, "-m", "mcjepa_cli"], ["data.num_workers=2"])
    assert code == 143, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


def test_sigterm_to_a_torchrun_group_saves_on_every_rank(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "mcjepa_cli"]
    text, code = _group_sigterm_then_resume(tmp_path, launcher, ["data.num_workers=1"])
    # the ranks' own output: no traceback; torchrun itself reports the signal it got in its
    # own way (a SignalException traceback and exit 1 in torch 2.x), which is not ours
    ours = text.split("Received 15 death signal")[0]
    assert "Traceback" not in ours, text[-3000:]
    assert code in (1, 143, -signal.SIGTERM), text[-3000:]


def test_overwrite_keeps_every_file_a_run_did_not_write(tmp_path):
    run = tmp_path / "run"
    base = ["pretrain", "quickstart", *tiny_args("schedule.total=3", "train.checkpoint_every=1",
                                                 "train.keep_checkpoints=5", FLOW_ONLY),
            "--output", str(run), "--no-progress"]
    assert runner.invoke(app, base).exit_code == 0
    foreign = {
        run / "checkpoints" / "my_best_model.pt": b"mine",
        run / "checkpoints" / "notes" / "a.txt": b"notes",
        run / "tensorboard" / "my_plot.png": b"png",
        run / "README.txt": b"readme",
        run / "analysis" / "table.csv": b"1,2",
    }
    for path, data in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    old_steps = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert old_steps
    r = runner.invoke(app, [*base[:-3], "--set", "schedule.total=2", "--output", str(run),
                            "--overwrite", "--no-progress"])
    assert r.exit_code == 0, r.output
    for path, data in foreign.items():
        assert path.read_bytes() == data, path
    assert "--overwrite: removed" in r.output and "checkpoints/last.pt" in r.output
    assert int(load_checkpoint(run / "checkpoints" / "last.pt")["step"]) == 2
    assert not (run / "checkpoints" / "step_0000003.pt").exists()  # the old run's, removed
    assert _steps(run) == [1, 2]


BOMB = ("[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
        "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
        "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
        "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]]")


def _one_line_exit_2(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


def test_alias_bombs_and_recursive_aliases_are_refused_at_once(tmp_path):
    t0 = time.monotonic()
    line = _one_line_exit_2(runner.invoke(app, ["pretrain", "quickstart", "--set", f"name={BOMB}"]))
    assert "--set name" in line and "100,000" in line
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(f"name: {BOMB}\n")
    line = _one_line_exit_2(runner.invoke(app, ["pretrain", str(recipe)]))
    assert str(recipe) in line
    line = _one_line_exit_2(runner.invoke(app, ["pretrain", "quickstart", "--set",
                                                "data.flow=&a [*a]"]))
    assert "recursive" in line
    assert time.monotonic() - t0 < 30


def test_outputs_that_cannot_be_created_are_one_line(tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    line = _one_line_exit_2(runner.invoke(app, ["pretrain", "quickstart", "--output",
                                                str(afile / "run")]))
    assert str(afile / "run") in line and "cannot create" in line
    flo = tmp_path / "f.flo"
    from mcjepa_cli.io.flow_io import write_flo

    write_flo(flo, torch.zeros(8, 8, 2))
    line = _one_line_exit_2(runner.invoke(app, ["visualize", "--flow", str(flo), "-o",
                                                str(afile / "out.png")]))
    assert str(afile) in line and "not a folder" in line


def test_resume_of_a_finished_run_changes_nothing_and_odd_schedules_are_refused(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["pretrain", "quickstart", *tiny_args("schedule.total=2", FLOW_ONLY),
                            "--output", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = runner.invoke(app, ["pretrain", "--resume", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "already finished" in r.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "empty" in _one_line_exit_2(runner.invoke(app, ["pretrain", str(empty)]))
    for value in ("1e29", "1.0e12", ".inf", ".nan"):
        line = _one_line_exit_2(runner.invoke(app, ["pretrain", "quickstart", "--set",
                                                    f"schedule.total={value}"]))
        assert "schedule.total" in line


def test_timm_export_file_mode_follows_the_umask(quickstart_checkpoint, tmp_path):
    out = tmp_path / "enc.safetensors"
    old = os.umask(0o022)
    try:
        r = runner.invoke(app, ["export", str(quickstart_checkpoint), "--format", "timm", "-o",
                                str(out), "--no-check"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o777 == 0o644


def test_json_dash_prints_only_json_on_stdout_and_latest_is_named(quickstart_checkpoint,
                                                                   tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    os.symlink(quickstart_checkpoint, runs / "my-run")
    env = dict(_env(), MCJEPA_RUNS=str(runs))
    p = subprocess.run([sys.executable, "-m", "mcjepa_cli", "flow-eval", "--dataset", "synthetic",
                        "--checkpoint", "latest", "--count", "2", "--size", "64x64",
                        "--json", "-", "--no-progress"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(p.stdout)  # stdout is the JSON and nothing else
    assert rows[0]["dataset"] == "synthetic" and rows[0]["epe"] >= 0
    assert f"latest: {runs / 'my-run' / 'checkpoints' / 'last.pt'}" in p.stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("width", [80, 120])
def test_progress_bar_keeps_step_count_and_eta_at_narrow_widths(width):
    from mcjepa_cli.engine.trainer import _Progress

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    terms = {"loss": 12.3456, "photometric": 0.54321, "smoothness": 0.012345,
             "feature_regression": 0.3333, "vicreg": 23.456, "embedding_std": 0.2345}
    with _Progress(26000, 13000, True, console) as bar:
        bar.advance(terms)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    last = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert len(last) <= width
    assert "13001/26000" in last and "ETA" in last and "━" in last  # count, ETA, the bar
    assert "loss=" in last


def test_a_failed_run_with_loader_workers_exits_instead_of_waiting_for_them(tmp_path):
    """The workers ignore SIGTERM; a run that fails while they live must still stop them and
    exit (multiprocessing's exit handler would SIGTERM them and wait forever)."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mcjepa_cli", "pretrain", "quickstart",
           *tiny_args("schedule.total=50", "data.num_workers=2", "train.inject_nan_at=[1]",
                      "train.max_nonfinite_steps=1", FLOW_ONLY),
           "--output", str(run), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path,
                       timeout=DEADLINE_S)
    assert p.returncode == 1, p.stderr[-3000:]
    assert "non-finite" in p.stderr and "Traceback" not in p.stderr


def test_periodic_checkpoints_are_ordered_by_step_number_and_user_files_are_not_among_them(
        tmp_path):
    from mcjepa_cli.engine.trainer import periodic_checkpoints

    for name in ("step_9999999.pt", "step_10000000.pt", "step_0000500.pt", "step_best.pt",
                 "last.pt"):
        (tmp_path / name).write_bytes(b"x")
    got = [p.name for p in periodic_checkpoints(tmp_path)]
    assert got == ["step_0000500.pt", "step_9999999.pt", "step_10000000.pt"]
