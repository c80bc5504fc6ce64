"""One writer per run directory; runs never touch folders that are not theirs; corrupt run
state and failed writes end in one line (issue 25, points 2, 3, 4 for pretrain, 5 and 7)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_args
from typer.testing import CliRunner

from mcjepa_cli.engine.checkpoint import load_checkpoint, save_checkpoint
from mcjepa_cli.engine.run_lock import LOCK_NAME
from mcjepa_cli.main import app

runner = CliRunner()
DEADLINE_S = float(os.environ.get("MCJEPA_TEST_PROCESS_DEADLINE_S", 120))
QUIET = ["train.eval_every=0", "train.eval_pairs=1"]


def _one_line(r, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pretrain(run: Path, *extra: str, args: tuple[str, ...] = ()) -> object:
    return runner.invoke(app, ["pretrain", "quickstart", *tiny_args(*QUIET, *extra), *args,
                               "--output", str(run), "--no-progress"])


def _metric_steps(run: Path) -> list[int]:
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln]
    return [r["step"] for r in recs if "event" not in r]


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    holder = subprocess.Popen(
        [sys.executable, "-m", "mcjepa_cli", "pretrain", "quickstart",
         *tiny_args(*QUIET, "schedule.total=100000", "train.checkpoint_every=1"),
         "--output", str(run), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (run / "checkpoints" / "last.pt").is_file():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # a fresh run with --overwrite, and --resume, while the holder trains: both refused
        for attempt in (["pretrain", "quickstart", *tiny_args(*QUIET), "--output", str(run),
                         "--overwrite", "--no-progress"],
                        ["pretrain", "--resume", str(run), "--no-progress"]):
            line = _one_line(runner.invoke(app, attempt))
            assert f"pid {holder.pid}" in line and str(run) in line, line
        assert holder.poll() is None  # the holder never noticed
        holder.send_signal(signal.SIGKILL)  # dies holding the lock
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    r = _pretrain(run, "schedule.total=2", args=("--overwrite",))
    assert r.exit_code == 0, r.output
    assert f"took over from pid {holder.pid}" in r.output
    assert _metric_steps(run) == [1, 2]
    assert (run / LOCK_NAME).read_text() == ""  # released at the end


def test_runs_never_write_into_folders_that_are_not_runs(tmp_path, quickstart_checkpoint):
    ckpt = quickstart_checkpoint / "checkpoints" / "last.pt"
    # a folder of a user's files, with names a run also writes
    foreign = tmp_path / "analysis"
    (foreign / "tensorboard").mkdir(parents=True)
    (foreign / "tensorboard" / "events.out.tfevents.123.host").write_bytes(b"my events")
    (foreign / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    (foreign / "recipe.yaml").write_text("mine: 1\n")
    (foreign / "summary.md").write_text("# my summary\n")
    model_copy = foreign / "some_model.pt"
    shutil.copyfile(ckpt, model_copy)
    before = _snapshot(foreign)

    line = _one_line(_pretrain(foreign, args=("--overwrite",)))
    assert "--overwrite replaces only runs" in line
    line = _one_line(runner.invoke(app, ["pretrain", "--resume", str(ckpt), "--output",
                                         str(foreign), "--no-progress"]))
    assert "folder of other files" in line
    line = _one_line(runner.invoke(app, ["pretrain", "--resume", str(model_copy),
                                         "--no-progress"]))
    assert "pass --output" in line
    assert _snapshot(foreign) == before
    # another run's directory is not a resumed run's --output either
    other = tmp_path / "other_run"
    shutil.copytree(quickstart_checkpoint, other)
    other_before = _snapshot(other)
    line = _one_line(runner.invoke(app, ["pretrain", "--resume", str(ckpt), "--output",
                                         str(other), "--no-progress"]))
    assert f"--resume {other}" in line
    assert _snapshot(other) == other_before


@pytest.fixture
def resumable(tmp_path) -> Path:
    """A 6-step run whose last.pt is its step-3 checkpoint (three steps left to resume)."""
    run = tmp_path / "run"
    r = _pretrain(run, "schedule.total=6", "train.checkpoint_every=3")
    assert r.exit_code == 0, r.output
    ck = run / "checkpoints"
    shutil.copyfile(ck / "step_0000003.pt", ck / "last.pt")
    return run


def _resume(run: Path):
    return runner.invoke(app, ["pretrain", "--resume", str(run), "--no-progress"])


def test_corrupt_run_state_is_one_line_or_recovered(resumable):
    run = resumable
    last = run / "checkpoints" / "last.pt"
    good = load_checkpoint(last)
    for key, value, words in (("step", "three", "its step is 'three'"),
                              ("step", 2.5, "its step is 2.5"),
                              ("step", -1, "its step is -1"),
                              ("rng", [{"torch": torch.zeros(3), "python": "x"}],
                               "random-number state is malformed")):
        save_checkpoint(last, {**good, key: value})
        line = _one_line(_resume(run))
        assert str(last) in line and words in line, line
    save_checkpoint(last, good)
    # recipe.yaml a folder: refused before any work
    (run / "recipe.yaml").unlink()
    (run / "recipe.yaml").mkdir()
    line = _one_line(_resume(run))
    assert f"{run / 'recipe.yaml'}: expected a file the run writes, found a folder" in line
    (run / "recipe.yaml").rmdir()
    # malformed metrics lines are skipped and reported; a temp-named folder is left alone
    metrics = run / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(lines[0] + b"\xff\xfe not utf-8\n" + b"[1, 2]\n" + b'{"step": "x"}\n'
                        + b"".join(lines[1:]))
    odd = run / "checkpoints" / ".last.pt.tmp-folder"
    odd.mkdir()
    r = _resume(run)
    assert r.exit_code == 0, r.output
    assert "skipped 3 malformed line(s)" in r.output
    assert _metric_steps(run) == [1, 2, 3, 4, 5, 6]
    assert odd.is_dir()


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_previous_one(resumable):
    run = resumable
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    limit = last.stat().st_size // 2  # the next checkpoint does not fit: a real failed write

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run([sys.executable, "-m", "mcjepa_cli", "pretrain", "--resume", str(run),
                        "--no-progress"], capture_output=True, text=True, preexec_fn=small_files,
                       env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
                       timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(last) in errors[0], p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert last.read_bytes() == before  # the previous checkpoint, intact
    assert [q.name for q in last.parent.iterdir() if ".tmp-" in q.name] == []  # no partial file


def test_fp16_on_cpu_with_a_non_finite_first_step(tmp_path):
    # a non-finite first step, before the fp16 loss scaler ever scaled, used to fail with
    # "AssertionError: Attempted update but _scale is None"
    run = tmp_path / "run"
    r = _pretrain(run, "schedule.total=3", "train.precision=fp16", "train.inject_nan_at=[0]")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_steps"] >= 1


def test_skipped_steps_survive_a_resume(tmp_path):
    run = tmp_path / "run"
    r = _pretrain(run, "schedule.total=6", "train.checkpoint_every=3", "train.inject_nan_at=[0]")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 1
    ck = run / "checkpoints"
    shutil.copyfile(ck / "step_0000003.pt", ck / "last.pt")  # resume from step 3
    r = _resume(run)
    assert r.exit_code == 0, r.output
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 1  # was 0


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from mcjepa_cli.engine import trainer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer, "_timestamp", lambda: "20261206-101500")
    first, _ = trainer.prepare_run_dir("quickstart", None, None, False)
    (first / "metrics.jsonl").write_text("")  # the first run has started writing
    second, _ = trainer.prepare_run_dir("quickstart", None, None, False)
    assert first == Path("runs/quickstart-20261206-101500")
    assert second == Path("runs/quickstart-20261206-101500-2")


def test_new_runs_go_where_latest_looks(tmp_path, monkeypatch):
    from mcjepa_cli.engine import trainer
    from mcjepa_cli.engine.checkpoint import newest_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MCJEPA_RUNS", str(tmp_path / "elsewhere"))
    run, _ = trainer.prepare_run_dir("quickstart", None, None, False)
    assert run.parent == tmp_path / "elsewhere"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert newest_run() == run  # before, pretrain wrote under ./runs and latest never found it

