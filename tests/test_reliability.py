"""Reliability and safety: kills, signals, non-finite steps, safe loading, outputs, bad data.

The kill test runs real ``python -m mcjepa_cli pretrain`` processes. Each process is frozen with
SIGSTOP at random moments (the files on disk at that instant are exactly what a SIGKILL at that
instant would leave, since neither lets the process clean up) and checked, then continued; it
is finally killed with SIGKILL and the next process resumes the run with ``--resume``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO, tiny_args
from mcjepa_cli.engine.checkpoint import load_checkpoint
from mcjepa_cli.engine.run_lock import LOCK_NAME
from mcjepa_cli.errors import UserError
from mcjepa_cli.main import app

runner = CliRunner()

KILL_PROCESSES = 4  # one fresh run, then three --resume runs; each ends with a real SIGKILL
FROZEN_PER_PROCESS = 4  # SIGSTOP snapshots checked per process before its SIGKILL
KILL_DELAY_S = (0.0, 0.8)  # random wait before each freeze / kill
# a process that has not checkpointed by then fails the test (raise it on a crowded machine)
PROCESS_DEADLINE_S = float(os.environ.get("MCJEPA_TEST_PROCESS_DEADLINE_S", 120))


# ------------------------------------------------------------------------------ helpers
def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _pretrain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcjepa_cli", "pretrain", *args, "--no-progress"]


FLOW_ONLY = "model.content=false"  # for tests where the VICReg branch plays no part: 2-3x faster


def _endless(run: Path, *extra: str) -> list[str]:
    """A tiny pretraining run far longer than the test: it only ends by a signal."""
    return _pretrain_cmd("quickstart", *tiny_args("schedule.total=100000", "train.log_every=1",
                                                  "train.eval_pairs=1", *extra),
                         "--output", str(run))


def _step_files(run: Path) -> dict[int, Path]:
    out = {}
    for p in (run / "checkpoints").glob("step_*.pt"):
        out[int(p.stem.split("_")[1])] = p
    return out


def _temp_files(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob(".*.tmp-*"))


def _records(run: Path) -> list[dict]:
    """Complete metrics records (a kill may leave one partial last line)."""
    out = []
    path = run / "metrics.jsonl"
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"partial record in the middle of metrics.jsonl: {line!r}"
    return out


def _wait_for(predicate, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + PROCESS_DEADLINE_S
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n"
                                 f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def _wait_stopped(pid: int) -> None:
    """Wait until the kernel reports the process as stopped (state T)."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} did not stop")


def _check_run_loads(run: Path, min_step: int, periodic: bool) -> int:
    """The newest checkpoint (``last.pt``) loads (and, if ``periodic``, every periodic one);
    returns last's step."""
    last = load_checkpoint(run)  # resolves the run directory to checkpoints/last.pt
    assert last["path"].endswith("last.pt")
    step = int(last["step"])
    assert step >= min_step, (step, min_step)
    for n, p in _step_files(run).items():
        assert n <= step, f"{p.name} is newer than last.pt (step {step})"
        if periodic:
            assert int(load_checkpoint(p)["step"]) == n
    assert {"model", "optimizer", "rng", "recipe"} <= set(last)
    return step


# ------------------------------------------------------------------------------ kills
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_sigkill_at_random_moments_then_resume(tmp_path):
    seed = int(os.environ.get("MCJEPA_KILL_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    run = tmp_path / "run"
    trials = caught_mid_write = resumes = 0
    step = 0
    for k in range(KILL_PROCESSES):
        log = tmp_path / f"process{k}.log"
        cmd = (_endless(run, "train.checkpoint_every=1", "train.keep_checkpoints=2") if k == 0
               else _pretrain_cmd("--resume", str(run)))
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                    cwd=tmp_path)
        try:
            # this process's first checkpoint: a periodic file past the step it started from
            # (written after last.pt, so last.pt has reached it too)
            start = step
            _wait_for(lambda s=start: max(_step_files(run), default=0) > s, proc,
                      f"process {k}'s first checkpoint", log)
            if k:
                resumes += 1
            for t in range(FROZEN_PER_PROCESS + 1):
                time.sleep(rng.uniform(*KILL_DELAY_S))
                final = t == FROZEN_PER_PROCESS
                proc.send_signal(signal.SIGKILL if final else signal.SIGSTOP)
                if final:
                    proc.wait(timeout=30)
                    assert proc.returncode == -signal.SIGKILL
                else:
                    _wait_stopped(proc.pid)
                caught_mid_write += bool(_temp_files(run))
                new_step = _check_run_loads(run, min_step=start + 1, periodic=final)
                assert new_step >= step
                step = new_step
                trials += 1
                if not final:
                    proc.send_signal(signal.SIGCONT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert trials == KILL_PROCESSES * (FROZEN_PER_PROCESS + 1) >= 20
    assert resumes == KILL_PROCESSES - 1
    # every resume dropped the records written after its checkpoint and wrote them again:
    # one record per step, no gap, no duplicate
    steps = [r["step"] for r in _records(run) if "event" not in r]
    assert steps == list(range(1, len(steps) + 1)), steps
    assert len(steps) >= step
    # each resume removed the temporary file a kill had left; only the last kill's may remain
    assert len(_temp_files(run)) <= 1
    print(f"kill trials: {trials} ({KILL_PROCESSES} SIGKILL, {trials - KILL_PROCESSES} frozen), "
          f"caught mid-write: {caught_mid_write}, resumes: {resumes}, last step {step}, "
          f"seed {seed}")


def test_sigterm_and_sigint_save_and_exit_143_130(tmp_path):
    run = tmp_path / "run"
    results = []
    for k, (cmd, sig, code) in enumerate([
        (_endless(run, "train.checkpoint_every=1000", FLOW_ONLY), signal.SIGTERM, 143),
        (_pretrain_cmd("--resume", str(run)), signal.SIGINT, 130),
    ]):
        log = tmp_path / f"signal{k}.log"
        before = max((r["step"] for r in _records(run) if "event" not in r), default=0)
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                    cwd=tmp_path)
        try:
            _wait_for(lambda b=before: any(r["step"] > b for r in _records(run)), proc,
                      "a training step", log)
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == code, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reached = max(r["step"] for r in _records(run) if "event" not in r)
        ck = load_checkpoint(run / "checkpoints" / "last.pt")
        assert int(ck["step"]) == reached > before  # the step reached, not a periodic one
        assert not _step_files(run)  # checkpoint_every=1000: this is the signal's checkpoint
        text = log.read_text()
        assert f"checkpoint saved at step {reached}" in text and "Traceback" not in text
        results.append(reached)
    assert results[1] > results[0]


# ------------------------------------------------------------------------------ numerics
def _save_spy(monkeypatch) -> list[tuple[str, int, str]]:
    """Record every checkpoint the trainer writes: (file name, step, sha256 after writing)."""
    import mcjepa_cli.engine.trainer as trainer

    writes: list[tuple[str, int, str]] = []
    real = trainer.save_checkpoint

    def spy(path, state):
        real(path, state)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        writes.append((Path(path).name, int(state["step"]), digest))

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    return writes


def _replace_spy(monkeypatch) -> set[Path]:
    """Record every destination of ``os.replace`` (how ``io.atomic`` puts a file in place)."""
    renamed: set[Path] = set()
    real = os.replace

    def spy(src, dst, *a, **k):
        real(src, dst, *a, **k)
        renamed.add(Path(dst).resolve())

    monkeypatch.setattr(os, "replace", spy)
    return renamed


def test_single_nan_is_skipped_logged_and_outputs_are_atomic(tmp_path, monkeypatch):
    renamed = _replace_spy(monkeypatch)
    run = tmp_path / "run"
    r = runner.invoke(app, ["pretrain", "quickstart",
                            *tiny_args("schedule.total=3", "train.checkpoint_every=1",
                                       "train.keep_checkpoints=10", "train.inject_nan_at=[2]"),
                            "--output", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    records = _records(run)
    events = [e for e in records if e.get("event") == "nonfinite_skip"]
    assert len(events) == 1
    ev = events[0]
    assert ev["step"] == 3 and ev["culprits"] == ["loss"] and ev["consecutive"] == 1
    assert {"photometric", "vicreg", "loss"} <= set(ev["terms"])  # the terms of that step
    by_step = {rec["step"]: rec for rec in records if "event" not in rec}
    assert [by_step[s]["skipped_steps"] for s in (1, 2, 3)] == [0, 0, 1]
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 1
    # the skipped step changed nothing: weights and optimizer state after step 3 (last.pt; no
    # periodic checkpoint is kept for a skipped step) == after step 2
    ck = {s: torch.load(run / "checkpoints" / f"step_{s:07d}.pt", weights_only=True)
          for s in (1, 2)}
    ck[3] = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck[3]["step"] == 3 and not (run / "checkpoints" / "step_0000003.pt").exists()
    for name, w in ck[2]["model"].items():
        assert torch.equal(w, ck[3]["model"][name]), name
    moved = max((ck[2]["model"][n] - w).abs().max().item() for n, w in ck[1]["model"].items())
    assert moved > 0  # control: a good step does change the weights
    assert ck[3]["optimizer"]["state"][0]["step"] == ck[2]["optimizer"]["state"][0]["step"] == 2
    # every result file arrived by an atomic rename (metrics.jsonl is an append-only log,
    # tensorboard/ belongs to TensorBoard and the run lock holds no result)
    for p in run.rglob("*"):
        if (p.is_file() and p.name not in ("metrics.jsonl", LOCK_NAME)
                and "tensorboard" not in p.parts):
            assert p.resolve() in renamed, f"{p} was not written atomically"


def test_nonfinite_streak_stops_with_exit_1_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    writes = _save_spy(monkeypatch)
    run = tmp_path / "run"
    r = runner.invoke(app, ["pretrain", "quickstart",
                            *tiny_args("schedule.total=8", "train.checkpoint_every=1", FLOW_ONLY,
                                       "train.max_nonfinite_steps=3",
                                       "train.inject_nan_at=[1,2,3]"),
                            "--output", str(run), "--no-progress"])
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "3 consecutive steps" in errors[0] and "last.pt" in errors[0], r.stderr
    assert "Traceback" not in r.output
    last_writes = [w for w in writes if w[0] == "last.pt"]
    assert [w[1] for w in last_writes] == [1]  # nothing written once the streak began
    last = run / "checkpoints" / "last.pt"
    assert hashlib.sha256(last.read_bytes()).hexdigest() == last_writes[-1][2]  # byte for byte
    assert int(load_checkpoint(last)["step"]) == 1
    events = [e for e in _records(run) if e.get("event") == "nonfinite_skip"]
    assert [(e["step"], e["consecutive"]) for e in events] == [(2, 1), (3, 2), (4, 3)]
    assert not (run / "summary.json").exists()


# ------------------------------------------------------------------------------ safe loading
class _OpenOnLoad:
    """Pickles to ``open(marker, "w")``: full unpickling creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "mcjepa-checkpoint", "recipe": {}, "model": {}, "step": 1,
                "payload": _OpenOnLoad(marker)}, path)
    return path


def test_pickle_payload_is_refused_everywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # control: the payload is live; full unpickling does run it
    control = tmp_path / "control_marker"
    torch.load(_payload_checkpoint(tmp_path / "control.pt", control), weights_only=False)
    assert control.exists()

    marker = tmp_path / "marker"
    ckpt = _payload_checkpoint(tmp_path / "evil" / "checkpoints" / "last.pt", marker)
    with pytest.raises(UserError) as e:
        load_checkpoint(ckpt)
    assert "refused" in str(e.value) and "io.open" in str(e.value)  # builtins.open is io.open
    mounted = {c.name for c in app.registered_commands}
    commands = [["pretrain", "--resume", str(ckpt)],
                ["pretrain", "--resume", str(ckpt.parent.parent)]]  # the run directory form
    if "flow-eval" in mounted:
        commands.append(["flow-eval", "--dataset", "synthetic", "--checkpoint", str(ckpt)])
    if "visualize" in mounted:
        img = tmp_path / "a.png"
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
        commands.append(["visualize", str(img), str(img), "--checkpoint", str(ckpt),
                         "-o", str(tmp_path / "v.png")])
    if "segment-eval" in mounted:
        commands.append(["segment-eval", "--dataset", "synthetic", "--checkpoint", str(ckpt)])
    if "davis-eval" in mounted:
        commands.append(["davis-eval", "--dataset", "synthetic", "--checkpoint", str(ckpt)])
    for args in commands:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "refused to load" in r.stderr and str(ckpt) in r.stderr, (args, r.output)
        assert "Traceback" not in r.output
    assert not marker.exists()


def test_yaml_python_tags_are_refused(tmp_path):
    from mcjepa_cli.config import load_recipe

    marker = tmp_path / "marker"
    tags = [f"!!python/object/apply:builtins.open ['{marker}', 'w']",
            "!!python/name:os.system",
            "!!python/object:collections.OrderedDict {}",
            f"!!python/object/new:builtins.open ['{marker}', 'w']"]
    control = tmp_path / "control"
    yaml.unsafe_load(f"x: !!python/object/apply:builtins.open ['{control}', 'w']\n")
    assert control.exists()  # control: an unsafe loader would run the tag
    for i, tag in enumerate(tags):
        path = tmp_path / f"tag{i}.yaml"
        path.write_text(f"name: {tag}\n")
        with pytest.raises(UserError) as e:
            load_recipe(str(path))
        assert str(path) in str(e.value) and "YAML error" in str(e.value)
        # a --set value with a tag is not YAML that safe_load accepts: it stays a plain string
        assert load_recipe("quickstart", [f"model.init={tag}"]).model.init == tag
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_unsafe_loader_in_the_code():
    """Every ``torch.load`` passes ``weights_only=True``; no unsafe YAML or pickle loader."""
    found = 0
    for path in sorted((REPO / "mcjepa_cli").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call, name in _calls(tree):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if name.endswith("torch.load"):
                found += 1
                kw = {k.arg: k.value for k in call.keywords}
                value = kw.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, \
                    f"{where}: torch.load without weights_only=True"
            if name in ("torch.jit.load", "torch.export.load"):
                # only to check an export mcjepa has just written itself, never a user's file
                assert path.name == "export.py", f"{where}: {name}"
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                                "pickle.load", "pickle.loads", "marshal.loads", "eval", "exec"), \
                f"{where}: {name}"
    assert found >= 1


# ------------------------------------------------------------------------------ outputs
def test_existing_run_directory_needs_overwrite_which_replaces_it(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "quickstart", *tiny_args("schedule.total=1", "train.checkpoint_every=1",
                                                 "train.eval_pairs=1", FLOW_ONLY),
            "--output", str(run), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    # a previous run's leftovers that the new run would not overwrite by itself
    stale = run / "checkpoints" / "step_0000999.pt"
    stale.write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    before = (run / "checkpoints" / "last.pt").read_bytes()
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--overwrite" in r.stderr and "Traceback" not in r.output
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # untouched
    r = runner.invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not stale.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "step_0000001.pt"]
    assert [rec["step"] for rec in _records(run)] == [1]
    # -o pointing at a file is refused
    r = runner.invoke(app, [*args[:-3], "--output", str(stale.parent / "last.pt")])
    assert r.exit_code == 2 and "expected a run directory" in r.stderr


def test_eval_outputs_are_atomic(tmp_path, monkeypatch):
    """flow-eval's JSON and saved predictions and visualize's PNG arrive by atomic rename."""
    mounted = {c.name for c in app.registered_commands}
    monkeypatch.chdir(tmp_path)
    renamed = _replace_spy(monkeypatch)
    written: list[Path] = []
    if "flow-eval" in mounted:
        pred = tmp_path / "pred"
        r = runner.invoke(app, ["flow-eval", "--dataset", "synthetic", "--model", "zero",
                                "--count", "2", "--size", "64x64",
                                "--json", str(tmp_path / "r.json"),
                                "--save-predictions", str(pred), "--no-progress"])
        assert r.exit_code == 0, r.output
        written += [tmp_path / "r.json", *[p for p in pred.rglob("*") if p.is_file()]]
    if "visualize" in mounted:
        from mcjepa_cli.io.flow_io import write_flo

        flo = tmp_path / "f.flo"
        write_flo(flo, np.random.default_rng(0).normal(size=(24, 32, 2)).astype(np.float32))
        for ext in ("png", "gif", "mp4"):
            out = tmp_path / f"viz.{ext}"
            r = runner.invoke(app, ["visualize", "--flow", str(flo), "--flow", str(flo),
                                    "-o", str(out), "--no-progress"])
            assert r.exit_code == 0, r.output
            written.append(out)
    if not written:
        pytest.skip("no eval command mounted yet")
    assert len(written) >= 2
    for p in written:
        assert p.is_file() and p.resolve() in renamed, f"{p} was not written atomically"


# ------------------------------------------------------------------------------ bad data
def _frames_folder(root: Path) -> tuple[Path, Path]:
    """Sequences of odd but valid frames, plus one sequence with a truncated frame."""
    rng = np.random.default_rng(0)

    def rgb(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    seqs = {
        "grey": [Image.fromarray(rgb(72, 80)[..., 0], mode="L") for _ in range(2)],
        "rgba": [Image.fromarray(np.dstack([rgb(72, 80), np.full((72, 80), 128, np.uint8)]),
                                 mode="RGBA") for _ in range(2)],
        "png16": [rng.integers(0, 65536, (72, 80), dtype=np.uint16) for _ in range(2)],
        "palette": [Image.fromarray(rgb(72, 80)).convert("P") for _ in range(2)],
        "tiny": [Image.fromarray(rgb(12, 20)) for _ in range(2)],  # far below the 64x64 crop
        "broken": [Image.fromarray(rgb(72, 80)) for _ in range(2)],
    }
    import png  # pypng: PIL cannot write a 16-bit greyscale PNG

    for name, frames in seqs.items():
        (root / name).mkdir(parents=True)
        for i, im in enumerate(frames):
            if isinstance(im, np.ndarray):  # 16-bit grey
                with open(root / name / f"{i:03d}.png", "wb") as f:
                    png.Writer(width=im.shape[1], height=im.shape[0], greyscale=True,
                               bitdepth=16).write(f, im.tolist())
            else:
                im.save(root / name / f"{i:03d}.png")
    corrupt = root / "broken" / "001.png"
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated
    img16 = np.asarray(Image.open(root / "png16" / "000.png"))
    assert img16.dtype != np.uint8 and img16.max() > 255  # really a 16-bit PNG on disk
    return root, corrupt


def _frames_run(root: Path, out: Path, *extra: str):
    return runner.invoke(app, ["pretrain", "quickstart",
                               *tiny_args("schedule.total=3", "train.eval_pairs=1", FLOW_ONLY,
                                          f"data.flow=[{{name: frames, root: {root}}}]", *extra),
                               "--output", str(out), "--no-progress"])


def test_corrupt_frame_stops_with_exit_2_or_is_skipped_and_counted(tmp_path):
    root, corrupt = _frames_folder(tmp_path / "frames")
    for workers in (0, 1):  # in the main process and in a DataLoader worker
        r = _frames_run(root, tmp_path / f"stop{workers}", f"data.num_workers={workers}")
        assert r.exit_code == 2, r.output
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and str(corrupt) in errors[0], r.stderr
        assert "Traceback" not in r.output
    out = tmp_path / "skip"
    r = _frames_run(root, out, "data.on_error=skip")
    assert r.exit_code == 0, r.output
    skipped = json.loads((out / "summary.json").read_text())["skipped_samples"]
    # 6 pairs (one per sequence) and 3 steps x 2 = 6 draws: one epoch, every pair drawn once.
    # Exactly the broken pair is skipped: the grey / RGBA / 16-bit / palette / tiny frames load
    assert skipped == 1, skipped
    assert _records(out)[-1]["skipped_samples"] == skipped


def test_read_image_converts_grey_rgba_16bit_independently(tmp_path):
    from mcjepa_cli.io.images import read_image

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (5, 7)).astype(np.uint16)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    import png  # pypng writes a true 16-bit greyscale PNG

    with open(tmp_path / "d.png", "wb") as f:
        png.Writer(width=7, height=5, greyscale=True, bitdepth=16).write(f, deep.tolist())
    g = read_image(tmp_path / "g.png").numpy()
    assert g.shape == (3, 5, 7) and all((g[c] == grey).all() for c in range(3))
    a = read_image(tmp_path / "a.png").numpy()
    assert (a.transpose(1, 2, 0) == rgba[..., :3]).all()
    d = read_image(tmp_path / "d.png").numpy()
    expected = np.floor(deep.astype(np.float64) * 255.0 / 65535.0 + 0.5)  # round half up
    assert d.dtype == np.uint8 and (d[0] == d[2]).all()
    assert np.abs(d[0].astype(int) - expected).max() <= 1
    with pytest.raises(UserError) as e:
        bad = tmp_path / "empty.png"
        bad.write_bytes(b"")
        read_image(bad)
    assert str(bad) in str(e.value)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the tiny quickstart model with random weights (no training needed)."""
    from conftest import TINY_OVERRIDES
    from mcjepa_cli.config import load_recipe, to_dict
    from mcjepa_cli.engine.checkpoint import save_checkpoint
    from mcjepa_cli.models import build_model

    recipe = load_recipe("quickstart", TINY_OVERRIDES)
    ckpt = tmp_path_factory.mktemp("random_ckpt") / "random.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, {"recipe": to_dict(recipe),
                           "model": build_model(recipe.model).state_dict(), "step": 0})
    return ckpt


@pytest.mark.parametrize("command, size", [
    ("visualize", (70, 90)),  # not a multiple of any stride
    ("visualize", (9, 11)),
    ("visualize", (1, 1)),
    ("flow-eval", (8, 8)),
])
def test_small_inputs_are_handled_or_refused_in_one_line(command, size, random_checkpoint, tmp_path,
                                                         monkeypatch):
    """Inputs of any size, down to 1 px: padded inside the model, or refused in one line."""
    if command not in {c.name for c in app.registered_commands}:
        pytest.skip(f"{command} is not mounted")
    monkeypatch.chdir(tmp_path)
    h, w = size
    if command == "visualize":
        rng = np.random.default_rng(0)
        frames = [tmp_path / "a.png", tmp_path / "b.png"]
        for p in frames:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        args = ["visualize", *map(str, frames), "--checkpoint", str(random_checkpoint),
                "-o", str(tmp_path / "v.png"), "--no-progress"]
    else:
        args = ["flow-eval", "--dataset", "synthetic", "--checkpoint", str(random_checkpoint),
                "--count", "1", "--size", f"{h}x{w}", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code in (0, 2), (args, r.exception, r.output)
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr
