"""Issue 25, "never lose a user's data".

1. No output of any command may be an input it reads, or lie inside the evaluated dataset.
2. A write that fails (permission, a path through a file, a folder, a full disk) is one line,
   exit code 2, and leaves no partial file and the previous file intact.
3. A flow file whose header claims an absurd size is refused before anything is allocated.
4. ``export`` replaces an existing file only with ``--overwrite``.
5. A safetensors file passed as a checkpoint is named as such.

Datasets are written here in their real on-disk layouts with hand-rolled writers (struct,
pypng, PIL, zlib); every check compares the bytes on disk before and after, the exit code and
the exact error line.
"""

from __future__ import annotations

import errno
import inspect
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mcjepa_cli.errors import UserError
from mcjepa_cli.main import app

runner = CliRunner()
H, W = 12, 16
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


# ----------------------------------------------------------------------------- helpers
def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _error_line(result) -> str:
    """The one line a refused command prints (exit code 2, nothing else, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def _snapshot(*paths: Path) -> dict[str, bytes]:
    """Every file under ``paths`` (folders walked, symlinks not followed) -> its bytes."""
    files: dict[str, bytes] = {}
    for root in paths:
        root = Path(root)
        if root.is_file():
            files[str(root)] = root.read_bytes()
            continue
        for folder, dirs, names in os.walk(root):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                p = Path(folder) / name
                files[str(p)] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return files


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _flo_bytes(flow: np.ndarray) -> bytes:
    h, w = flow.shape[:2]
    return b"PIEH" + struct.pack("<ii", w, h) + flow.astype("<f4").tobytes()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _frame(path: Path, rng: np.random.Generator, grey: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (H, W) if grey else (H, W, 3)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
    return path


def _kitti_bytes(flow: np.ndarray, valid: np.ndarray) -> bytes:
    h, w = valid.shape
    out = np.zeros((h, w, 3), np.uint16)
    out[..., :2] = np.round(flow * 64 + 2**15).astype(np.uint16)
    out[..., 2] = valid
    buf = io.BytesIO()
    png.Writer(width=w, height=h, greyscale=False, bitdepth=16).write(buf, out.reshape(h, -1))
    return buf.getvalue()


def _gt(rng: np.random.Generator) -> np.ndarray:
    return (np.round(rng.normal(size=(H, W, 2)) * 6 * 64) / 64).astype(np.float32)


# ------------------------------------------------------- datasets in their real layouts
def make_chairs(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for i in (1, 2):
        _frame(root / "data" / f"{i:05d}_img1.ppm", rng)
        _frame(root / "data" / f"{i:05d}_img2.ppm", rng)
        _write(root / "data" / f"{i:05d}_flow.flo", _flo_bytes(_gt(rng)))
    return root / "data"  # the ground truth's folder


def make_middlebury(root: Path) -> Path:
    rng = np.random.default_rng(2)
    for seq in ("Alpha", "Beta"):
        _frame(root / "other-data" / seq / "frame10.png", rng)
        _frame(root / "other-data" / seq / "frame11.png", rng)
        _write(root / "other-gt-flow" / seq / "flow10.flo", _flo_bytes(_gt(rng)))
    return root / "other-gt-flow"


def make_kitti(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for i in range(2):
        _frame(root / "training" / "image_2" / f"{i:06d}_10.png", rng)
        _frame(root / "training" / "image_2" / f"{i:06d}_11.png", rng)
        valid = rng.random((H, W)) < 0.7
        _write(root / "training" / "flow_occ" / f"{i:06d}_10.png", _kitti_bytes(_gt(rng), valid))
        _write(root / "training" / "flow_noc" / f"{i:06d}_10.png", _kitti_bytes(_gt(rng), valid))
    return root / "training" / "flow_occ"


def make_sintel(root: Path) -> Path:
    rng = np.random.default_rng(4)
    for k in (1, 2, 3):
        for p in ("clean", "final"):
            _frame(root / "training" / p / "alley" / f"frame_{k:04d}.png", rng)
    for k in (1, 2):
        _write(root / "training" / "flow" / "alley" / f"frame_{k:04d}.flo", _flo_bytes(_gt(rng)))
    return root / "training" / "flow"


DATASETS = {"chairs": make_chairs, "middlebury": make_middlebury, "kitti-2015": make_kitti,
            "sintel": make_sintel}


def make_davis(root: Path) -> Path:
    """One sequence of three frames with an object; returns the annotation folder."""
    rng = np.random.default_rng(5)
    ann = root / "Annotations" / "480p" / "seq"
    for t in range(3):
        frame = root / "JPEGImages" / "480p" / "seq" / f"{t:05d}.jpg"
        frame.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(frame)
        labels = np.zeros((32, 48), np.uint8)
        labels[8:20, 10 + t : 24 + t] = 1
        ann.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels, mode="L").save(ann / f"{t:05d}.png")
    _write(root / "ImageSets" / "2017" / "val.txt", b"seq\n")
    return ann.parent


def make_voc(root: Path) -> None:
    rng = np.random.default_rng(6)
    for name in ("a", "b"):
        img = root / "JPEGImages" / f"{name}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(img)
        lab = root / "SegmentationClass" / f"{name}.png"
        lab.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 3, (40, 48), dtype=np.uint8), mode="L").save(lab)


# =========================================================== 1. outputs never on inputs
def _inside_line(flag: str, given: Path | str, root: Path) -> str:
    return (f"error: {flag} {given}: lies inside the dataset folder {_real(root)}, which this "
            "command reads; refusing to write there (nothing was written): choose a path "
            "outside it")


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_flow_eval_outputs_never_land_in_the_dataset(tmp_path: Path, dataset: str) -> None:
    root = tmp_path / "data" / dataset
    gt_folder = DATASETS[dataset](root)
    before = _snapshot(root)
    gt_file = next(p for p in sorted(gt_folder.rglob("*")) if p.is_file())
    frame = next(p for p in sorted(root.rglob("*")) if p.suffix in (".png", ".ppm")
                 and p.parent.name not in ("flow_occ", "flow_noc"))
    outside_link = tmp_path / "gt_link"
    outside_link.symlink_to(gt_folder, target_is_directory=True)
    base = ["flow-eval", "--dataset", dataset, "--root", root, "--model", "zero", "--no-progress"]

    save_targets = [gt_folder, root, root / "new_predictions",
                    root / "training" / ".." / gt_folder.relative_to(root), outside_link]
    for target in save_targets:
        line = _error_line(_cli(*base, "--save-predictions", target))
        assert line.startswith(f"error: --save-predictions {target}: "), line
        assert _snapshot(root) == before, target
    assert _error_line(_cli(*base, "--save-predictions", gt_folder)) == _inside_line(
        "--save-predictions", gt_folder, root)

    for target in [gt_file, frame, root, root / "rows.json", outside_link / gt_file.name]:
        line = _error_line(_cli(*base, "--json", target))
        assert line.startswith(f"error: --json {target}: "), line
        assert _snapshot(root) == before, target
    assert _error_line(_cli(*base, "--json", gt_file)) == _inside_line("--json", gt_file, root)

    # the same command with its outputs elsewhere writes them: the refusals above are real
    preds, rows = tmp_path / "preds", tmp_path / "rows.json"
    result = _cli(*base, "--save-predictions", preds, "--json", rows)
    assert result.exit_code == 0, result.output
    assert json.loads(rows.read_text())[0]["dataset"] == dataset
    assert any(p.is_file() for p in preds.rglob("*"))
    assert _snapshot(root) == before


def test_flow_eval_never_replaces_prediction_files_or_the_checkpoint(
    tmp_path: Path, quickstart_checkpoint: Path
) -> None:
    root = tmp_path / "chairs"
    make_chairs(root)
    preds = tmp_path / "preds"
    base = ["flow-eval", "--dataset", "chairs", "--root", root, "--no-progress"]
    assert _cli(*base, "--model", "zero", "--save-predictions", preds).exit_code == 0
    before = _snapshot(root, preds)
    line = _error_line(_cli(*base, "--predictions", preds, "--save-predictions", preds))
    assert line == (f"error: --save-predictions {preds}: its file {preds / '00001_flow.flo'} "
                    f"would replace a --predictions file {_real(preds / '00001_flow.flo')}, "
                    "which this command reads; refusing to overwrite it (nothing was written): "
                    "choose another path")
    line = _error_line(_cli(*base, "--predictions", preds, "--json", preds / "00002_flow.flo"))
    assert line.startswith(f"error: --json {preds / '00002_flow.flo'}: is a --predictions file")
    assert _snapshot(root, preds) == before

    ckpt = quickstart_checkpoint / "checkpoints" / "last.pt"
    before = _snapshot(quickstart_checkpoint)
    line = _error_line(_cli("flow-eval", "--dataset", "synthetic", "--count", "1", "--size",
                            "16x16", "--checkpoint", quickstart_checkpoint, "--json", ckpt,
                            "--no-progress"))
    assert line == (f"error: --json {ckpt}: is the checkpoint {_real(ckpt)}, which this command "
                    "reads; refusing to overwrite it (nothing was written): choose another path")
    assert _snapshot(quickstart_checkpoint) == before


def test_visualize_output_is_never_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    rng = np.random.default_rng(7)
    a = _frame(tmp_path / "in" / "a.png", rng)
    b = _frame(tmp_path / "in" / "b.png", rng)
    flo = _write(tmp_path / "in" / "f.flo", _flo_bytes(_gt(rng)))
    kitti = _write(tmp_path / "in" / "k.png", _kitti_bytes(_gt(rng), np.ones((H, W), bool)))
    frames = tmp_path / "frames"
    _frame(frames / "0000.png", rng)
    _frame(frames / "0001.png", rng)
    before = _snapshot(tmp_path)
    for args, output in [
        ([a, b, "--flow", flo], a),
        (["--flow", kitti], kitti),
        ([frames, "--flow", flo], frames / "viz.png"),
        ([a, b, "--flow", flo], tmp_path / "in" / ".." / "in" / "b.png"),
    ]:
        line = _error_line(_cli("visualize", *args, "-o", output, "--overwrite", "--no-progress"))
        assert line.startswith(f"error: --output {output}: "), line
        assert _snapshot(tmp_path) == before, output
    line = _error_line(_cli("visualize", a, b, "--flow", flo, "-o", a, "--overwrite"))
    assert line == (f"error: --output {a}: is an input file {_real(a)}, which this command reads; "
                    "refusing to overwrite it (nothing was written): choose another path")
    # the default output, <input name>_viz.png in the current folder, inside the frame folder
    monkeypatch.chdir(frames)
    line = _error_line(_cli("visualize", frames, "--flow", flo, "--no-progress"))
    monkeypatch.chdir(tmp_path)
    default = frames / "frames_viz.png"
    assert line == (f"error: --output {default}: lies inside the input frame folder "
                    f"{_real(frames)}, which this command reads; refusing to write there "
                    "(nothing was written): choose a path outside it")
    assert _snapshot(tmp_path) == before
    ok = _cli("visualize", a, b, "--flow", flo, "-o", tmp_path / "viz.png", "--no-progress")
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "viz.png").is_file()


def test_export_never_replaces_its_checkpoint(quickstart_checkpoint: Path) -> None:
    ckpt = quickstart_checkpoint / "checkpoints" / "last.pt"
    before = _snapshot(quickstart_checkpoint)
    for output in (ckpt, quickstart_checkpoint / "checkpoints" / ".." / "checkpoints" / "last.pt"):
        line = _error_line(_cli("export", quickstart_checkpoint, "--format", "timm", "-o", output,
                                "--overwrite", "--no-check"))
        assert line == (f"error: --output {output}: is the checkpoint {_real(ckpt)}, which this "
                        "command reads; refusing to overwrite it (nothing was written): choose "
                        "another path")
    assert _snapshot(quickstart_checkpoint) == before


def test_davis_eval_outputs_never_land_in_the_dataset(tmp_path: Path) -> None:
    root = tmp_path / "DAVIS"
    annotations = make_davis(root)
    before = _snapshot(root)
    scoring = ["davis-eval", "--root", root, "--predictions", annotations]
    line = _error_line(_cli(*scoring, "-o", annotations))
    assert line == _inside_line("--output", annotations, root)
    # scoring PNGs that live in the dataset writes its CSVs there by default: refused as well
    line = _error_line(_cli(*scoring))
    assert line == _inside_line("--output (default: the --predictions folder)", annotations, root)
    line = _error_line(_cli(*scoring, "-o", tmp_path / "out", "--json",
                            root / "ImageSets" / "2017" / "val.txt"))
    assert line == _inside_line("--json", root / "ImageSets" / "2017" / "val.txt", root)
    line = _error_line(_cli("davis-eval", "--root", root, "--backbone", "random", "--size", "32",
                            "--device", "cpu", "-o", annotations, "--quiet"))
    assert line == _inside_line("--output", annotations, root)
    assert _snapshot(root) == before
    ok = _cli(*scoring, "-o", tmp_path / "out", "--json", tmp_path / "r.json")
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "r.json").read_text())["J&F-Mean"] == 1.0
    assert _snapshot(root) == before


def test_segment_eval_outputs_never_land_in_the_dataset(
    tmp_path: Path, quickstart_checkpoint: Path
) -> None:
    root = tmp_path / "VOC2012"
    make_voc(root)
    before = _snapshot(root)
    # make_voc writes no ImageSets/: training and evaluation images are the same two files
    base = ["segment-eval", "--dataset", "voc", "--root", root, "--backbone", "random",
            "--preset", "cpu", "--steps", "1", "--device", "cpu", "--quiet",
            "--allow-train-eval-overlap"]
    line = _error_line(_cli(*base, "-o", root / "SegmentationClass"))
    assert line == _inside_line("--output", root / "SegmentationClass", root)
    line = _error_line(_cli(*base, "-o", tmp_path / "out", "--json", root / "JPEGImages" / "a.jpg"))
    assert line == _inside_line("--json", root / "JPEGImages" / "a.jpg", root)
    assert _snapshot(root) == before
    assert not (tmp_path / "out").exists()  # refused before the output folder was made
    ckpt = quickstart_checkpoint / "checkpoints" / "last.pt"
    ckpt_before = _snapshot(quickstart_checkpoint)
    line = _error_line(_cli("segment-eval", "--dataset", "synthetic", "--checkpoint",
                            quickstart_checkpoint, "--preset", "cpu", "--steps", "1",
                            "--train-images", "2", "--val-images", "2", "-o", tmp_path / "o2",
                            "--json", ckpt, "--device", "cpu", "--quiet"))
    assert line.startswith(f"error: --json {ckpt}: is the checkpoint {_real(ckpt)}")
    assert _snapshot(quickstart_checkpoint) == ckpt_before


# ============================================================ 2. failed writes: one line
def _flo_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "f.flo", _flo_bytes(_gt(np.random.default_rng(8))))


def _write_commands(tmp_path: Path, ckpt: Path) -> dict[str, tuple[list[object], str]]:
    """Commands with one output each: name -> (arguments without the output, output flag)."""
    flo = _flo_file(tmp_path)
    synthetic = ["flow-eval", "--dataset", "synthetic", "--model", "zero", "--count", "1",
                 "--size", "16x16", "--no-progress"]
    return {
        "flow-eval --json": (synthetic + ["--json"], "file"),
        "flow-eval --save-predictions": (synthetic + ["--save-predictions"], "folder"),
        "visualize -o": (["visualize", "--flow", flo, "--no-progress", "--overwrite", "-o"],
                         "file"),
        "export -o": (["export", ckpt, "--format", "timm", "--no-check", "--overwrite", "-o"],
                      "file"),
        "davis-eval --json": (["davis-eval", "--dataset", "synthetic", "--backbone", "random",
                               "--num-sequences", "1", "--num-frames", "3", "--synthetic-size",
                               "32x32", "--device", "cpu", "--quiet", "-o", tmp_path / "davis",
                               "--json"], "file"),
    }


_NAMES = {"flow-eval --json": "rows.json", "flow-eval --save-predictions": "preds",
          "visualize -o": "viz.png", "export -o": "enc.safetensors",
          "davis-eval --json": "davis.json"}
_FLAGS = {"flow-eval --json": "--json", "flow-eval --save-predictions": "--save-predictions",
          "visualize -o": "--output", "export -o": "--output", "davis-eval --json": "--json"}


@pytest.mark.parametrize("command", sorted(_NAMES))
def test_output_through_a_file_or_onto_a_folder_is_one_line(
    command: str, tmp_path: Path, quickstart_checkpoint: Path
) -> None:
    args, kind = _write_commands(tmp_path, quickstart_checkpoint)[command]
    flag = _FLAGS[command]
    afile = _write(tmp_path / "afile.txt", b"keep me\n")
    through = afile / "sub" / _NAMES[command]
    line = _error_line(_cli(*args, through))
    assert line == (f"error: {flag} {through}: {afile} is a file, not a folder: cannot write "
                    "inside it")
    assert afile.read_bytes() == b"keep me\n"

    if kind == "file":  # an existing folder where a file is to be written
        folder = tmp_path / "a_folder.png"
        folder.mkdir()
        line = _error_line(_cli(*args, folder))
        expected = (f"error: {folder}: expected a file name for --output, found a folder"
                    if command == "export -o"
                    else f"error: {flag} {folder}: is an existing folder; expected a file name")
        assert line == expected
        assert list(folder.iterdir()) == []
    else:  # an existing file where a folder is to be written
        line = _error_line(_cli(*args, afile))
        assert line == f"error: {flag} {afile}: is an existing file; expected a folder"
        assert afile.read_bytes() == b"keep me\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
@pytest.mark.parametrize("command", sorted(_NAMES))
def test_output_in_a_read_only_folder_is_one_line(
    command: str, tmp_path: Path, quickstart_checkpoint: Path
) -> None:
    args, kind = _write_commands(tmp_path, quickstart_checkpoint)[command]
    locked = tmp_path / "locked"
    old = _write(locked / "old.txt", b"previous results\n")
    target = locked / _NAMES[command]
    if kind == "file":
        _write(target, b"the previous output\n")
    locked.chmod(0o500)
    try:
        before = _snapshot(locked)
        line = _error_line(_cli(*args, target))
        after = _snapshot(locked)
    finally:
        locked.chmod(0o700)
    assert line == (f"error: {_FLAGS[command]} {target}: cannot write in {locked} "
                    "(permission denied)")
    assert after == before and old.read_bytes() == b"previous results\n"


class _DiskFull:
    """Stands in for ``io.atomic.write_all``: for the temporary file of ``name`` it writes half
    the bytes and then fails as a full disk does (ENOSPC, no file name); other files are
    written normally."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def __call__(self, fd: int, data) -> None:
        view = memoryview(data).cast("B")
        if not os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(
                f".{self.name}.tmp-"):
            while view:
                view = view[os.write(fd, view):]
            return
        self.calls += 1
        os.write(fd, view[: len(view) // 2])
        raise OSError(errno.ENOSPC, NO_SPACE)


@pytest.mark.parametrize("command", sorted(_NAMES))
def test_full_disk_is_one_line_and_keeps_the_previous_file(
    command: str, tmp_path: Path, quickstart_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcjepa_cli.io.atomic as atomic

    args, kind = _write_commands(tmp_path, quickstart_checkpoint)[command]
    out_dir = tmp_path / "out"
    target = out_dir / _NAMES[command]
    # the file the failed write must not damage: the output itself, or an earlier prediction
    previous = target / "000000.flo" if kind == "folder" else target
    _write(previous, b"the previous output, byte for byte\n")
    full = _DiskFull(previous.name)
    monkeypatch.setattr(atomic, "write_all", full)
    line = _error_line(_cli(*args, target))
    assert full.calls >= 1
    assert line == f"error: {previous}: cannot write ({NO_SPACE})"
    assert previous.read_bytes() == b"the previous output, byte for byte\n"
    leftovers = [p.name for p in previous.parent.iterdir() if p != previous]
    assert leftovers == [], leftovers  # no temporary or partial file


def test_a_video_ffmpeg_could_not_finish_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """imageio-ffmpeg ignores ffmpeg's exit status; on a full disk ffmpeg leaves an empty or cut
    file and the writer returns normally. Such a file must not replace the previous video."""
    import imageio_ffmpeg

    from mcjepa_cli.viz.writer import mp4_is_complete

    flo = _flo_file(tmp_path)
    args = ["visualize", "--flow", flo, "--flow", flo, "--no-progress", "--overwrite", "-o"]
    good = tmp_path / "good.mp4"
    assert _cli(*args, good).exit_code == 0
    assert mp4_is_complete(good)
    cut = good.read_bytes()[: good.stat().st_size // 2]

    def ffmpeg_on_a_full_disk(path, size, **kwargs):
        Path(path).write_bytes(cut)  # what ffmpeg managed to write before the disk filled up
        while True:
            yield

    out = _write(tmp_path / "out" / "viz.mp4", b"the previous video\n")
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", ffmpeg_on_a_full_disk)
    line = _error_line(_cli(*args, out))
    assert line == (f"error: {out}: cannot write (ffmpeg did not write a complete video (is the "
                    "disk full?))")
    assert out.read_bytes() == b"the previous video\n"
    assert [p.name for p in out.parent.iterdir()] == ["viz.mp4"]


# ================================================================ 3. flow-header bombs
def _sparse(path: Path, header: bytes, size: int) -> Path:
    """A file of ``size`` bytes holding ``header`` and a hole (no disk blocks) after it."""
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(size)
    if path.stat().st_blocks * 512 > len(header) + (1 << 20):
        path.unlink()
        pytest.skip("this file system has no sparse files")
    return path


@pytest.fixture()
def no_big_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail fast (instead of exhausting memory) if a reader reads a whole huge file."""
    import mcjepa_cli.io.flow_io as flow_io

    real = flow_io._read_bytes

    def guarded(path, *args, **kwargs):
        limit = kwargs.get("limit", args[0] if args else None)
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        assert (limit is not None and limit <= 4096) or size < 1 << 24, (
            f"{path}: read {size} bytes before checking the header")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(flow_io, "_read_bytes", guarded)


def _claims_line(path: Path, kind: str, w: int, h: int) -> str:
    return (f"error: {path}: {kind} header claims {w}x{h} pixels (width x height), beyond the "
            "limit of 16384 pixels a side and 67,108,864 pixels for a flow file; refused before "
            "allocating it (corrupt, or not a flow file)")


def _flo_bomb(path: Path) -> Path:
    """A 12.8 GB .flo (sparse) whose header claims 40000x40000, the size its length agrees with."""
    return _sparse(path, b"PIEH" + struct.pack("<ii", 40000, 40000), 12 + 8 * 40000 * 40000)


def _zero_zlib(block: int, repeats: int) -> bytes:
    """A zlib stream of ``block * repeats`` zero bytes, built without compressing them all:
    after a full flush deflate starts afresh, so every block compresses to the same bytes; the
    Adler-32 of n zeros is (n mod 65521) << 16 | 1."""
    c = zlib.compressobj(9)
    first = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()
    assert first[2:] == again
    adler = (((block * repeats) % 65521) << 16) | 1
    return first + again * (repeats - 1) + end[:-4] + struct.pack(">I", adler)


def _png_bomb(path: Path, w: int = 20000, h: int = 20000) -> Path:
    """A 2 MB 16-bit RGB PNG whose pixels really are ``w`` x ``h`` (2.4 GB of rows, zeros)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    small = _zero_zlib(1000, 7)  # the construction itself, checked on a small stream
    d = zlib.decompressobj()
    assert d.decompress(small) == bytes(7000) and d.eof
    row = 1 + 6 * w  # filter byte + 3 channels x 2 bytes
    rows_per_block = 100
    assert h % rows_per_block == 0
    stream = _zero_zlib(row * rows_per_block, h // rows_per_block)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return _write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream)
                  + chunk(b"IEND", b""))


@pytest.fixture()
def no_big_inflate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail fast if the KITTI reader starts inflating a stream of more than 256 MB."""
    import types

    import mcjepa_cli.io.flow_io as flow_io

    def decompressobj(*a, **k):
        real = zlib.decompressobj(*a, **k)

        class Guard:
            def decompress(self, data, max_length=0):
                assert 0 < max_length <= 1 << 28, f"inflating up to {max_length} bytes"
                return real.decompress(data, max_length)

            def __getattr__(self, name):
                return getattr(real, name)

        return Guard()

    monkeypatch.setattr(flow_io, "zlib", types.SimpleNamespace(
        crc32=zlib.crc32, error=zlib.error, decompressobj=decompressobj))


def test_flo_header_beyond_the_limit_is_refused_before_reading(
    tmp_path: Path, no_big_reads: None
) -> None:
    from mcjepa_cli.io.flow_io import read_flo, read_flow

    bomb = _flo_bomb(tmp_path / "bomb.flo")
    with pytest.raises(UserError) as e:
        read_flo(bomb)
    assert f"error: {e.value}" == _claims_line(bomb, ".flo", 40000, 40000)
    small = _write(tmp_path / "small.flo", b"PIEH" + struct.pack("<ii", 40000, 40000) + bytes(8))
    with pytest.raises(UserError, match="claims 40000x40000"):
        read_flow(small)
    # within each bound but beyond the other: 16385 wide; 16384 x 4097 > 8192^2 pixels
    for w, h in ((16385, 1), (16384, 4097)):
        f = _write(tmp_path / f"{w}x{h}.flo", b"PIEH" + struct.pack("<ii", w, h))
        with pytest.raises(UserError, match=f"claims {w}x{h} pixels"):
            read_flo(f)
    # the header's size against the file's, before the payload is read: 8000x8000 (512 MB)
    big = _sparse(tmp_path / "big.flo", b"PIEH" + struct.pack("<ii", 8000, 8000),
                  12 + 8 * 8000 * 8000 + 4)
    with pytest.raises(UserError, match="trailing data"):
        read_flo(big)
    # real sizes at the limit still read
    edge = _flo_bytes(np.arange(2 * 16384, dtype=np.float32).reshape(1, 16384, 2))
    flow = read_flo(_write(tmp_path / "edge.flo", edge))
    assert flow.shape == (1, 16384, 2) and flow[0, -1, 1] == 2 * 16384 - 1


def test_pfm_header_beyond_the_limit_is_refused(tmp_path: Path, no_big_reads: None) -> None:
    from mcjepa_cli.io.flow_io import read_pfm

    header = b"PF\n40000 40000\n-1.0\n"
    bomb = _sparse(tmp_path / "bomb.pfm", header, len(header) + 12 * 40000 * 40000)
    with pytest.raises(UserError) as e:
        read_pfm(bomb)
    assert f"error: {e.value}" == _claims_line(bomb, "PFM", 40000, 40000)
    short = _write(tmp_path / "short.pfm", b"Pf\n100 100\n-1.0\n" + bytes(16))
    with pytest.raises(UserError, match="truncated"):
        read_pfm(short)


def test_kitti_png_bomb_is_refused_before_inflating(
    tmp_path: Path, no_big_inflate: None, no_big_reads: None
) -> None:
    from mcjepa_cli.io.flow_io import read_kitti_png

    bomb = _png_bomb(tmp_path / "000000_10.png")
    assert bomb.stat().st_size < 4 << 20
    with pytest.raises(UserError) as e:
        read_kitti_png(bomb)
    assert f"error: {e.value}" == _claims_line(bomb, "PNG", 20000, 20000)
    # a file larger than any PNG within the limit could be is not even read (600 MB, sparse)
    huge = _sparse(tmp_path / "huge.png", bomb.read_bytes(), 600_000_000)
    with pytest.raises(UserError) as e:
        read_kitti_png(huge)
    assert f"error: {e.value}" == (f"error: {huge}: PNG file of 600,000,000 bytes, more than a "
                                   "flow PNG within the size limit can hold (536,870,912); "
                                   "refused before reading it")


def test_flow_bombs_through_the_command_line(
    tmp_path: Path, no_big_reads: None, no_big_inflate: None
) -> None:
    mb = tmp_path / "Middlebury"
    make_middlebury(mb)
    gt = mb / "other-gt-flow" / "Beta" / "flow10.flo"
    gt.unlink()
    _flo_bomb(gt)
    line = _error_line(_cli("flow-eval", "--dataset", "middlebury", "--root", mb, "--model",
                            "zero", "--no-progress"))
    assert line == _claims_line(gt, ".flo", 40000, 40000)

    kitti = tmp_path / "KITTI"
    make_kitti(kitti)
    gt = kitti / "training" / "flow_occ" / "000001_10.png"
    _png_bomb(gt)
    line = _error_line(_cli("flow-eval", "--dataset", "kitti-2015", "--root", kitti, "--model",
                            "zero", "--no-progress"))
    assert line == _claims_line(gt, "PNG", 20000, 20000)

    bomb = _flo_bomb(tmp_path / "bomb.flo")
    line = _error_line(_cli("visualize", "--flow", bomb, "-o", tmp_path / "v.png",
                            "--no-progress"))
    assert line == _claims_line(bomb, ".flo", 40000, 40000)
    assert not (tmp_path / "v.png").exists()


# ============================================================ 4. export and --overwrite
def test_export_replaces_an_existing_file_only_with_overwrite(
    tmp_path: Path, quickstart_checkpoint: Path
) -> None:
    from safetensors.torch import load_file

    out = _write(tmp_path / "enc.safetensors", b"someone else's file\n")
    base = ["export", quickstart_checkpoint, "--format", "timm", "--no-check", "-o", out]
    line = _error_line(_cli(*base))
    assert line == f"error: {out}: already exists; pass --overwrite to replace it"
    assert out.read_bytes() == b"someone else's file\n"
    result = _cli(*base, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "stem.0.weight" in load_file(str(out))  # replaced by the export

    # the default file name too
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(
        (quickstart_checkpoint / "checkpoints" / "last.pt").read_bytes())
    default = _write(run / "export" / "last_encoder_convnext_atto.safetensors", b"older\n")
    line = _error_line(_cli("export", run, "--no-check"))
    assert line == f"error: {default}: already exists; pass --overwrite to replace it"
    assert default.read_bytes() == b"older\n"


# ================================================= 5. a safetensors file as a checkpoint
def _st(header: bytes) -> bytes:
    """A safetensors-shaped file: the header's length (u64, little-endian), then the header."""
    return struct.pack("<Q", len(header)) + header


def test_safetensors_is_recognised_by_its_bytes(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from mcjepa_cli.io.formats import safetensors_header

    st = tmp_path / "weights.pt"  # renamed: the name says nothing
    save_file({"a.weight": torch.zeros(2, 3), "b": torch.ones(4)}, str(st),
              metadata={"format": "pt"})
    header = safetensors_header(st)
    assert header is not None and header["a.weight"]["shape"] == [2, 3]
    assert header["__metadata__"] == {"format": "pt"}

    zipped, legacy = tmp_path / "zip.pt", tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(2)}, zipped)
    torch.save({"a": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    not_ours = {
        "zip.pt": zipped,
        "legacy.pt": legacy,
        "empty": _write(tmp_path / "empty", b""),
        "short": _write(tmp_path / "short", b"\x02\x00"),
        "too long": _write(tmp_path / "long", struct.pack("<Q", 1000) + b"{}"),
        "a list": _write(tmp_path / "list", _st(b"[]")),
        "not json": _write(tmp_path / "nojson", _st(b"{abc")),
        "no offsets": _write(tmp_path / "nooff", _st(b'{"x":{"dtype":"F32","shape":[1]}}')),
    }
    for name, path in not_ours.items():
        assert safetensors_header(path) is None, name
    assert safetensors_header(tmp_path / "missing") is None


def test_safetensors_passed_as_a_checkpoint_is_named(
    tmp_path: Path, quickstart_checkpoint: Path
) -> None:
    from safetensors.torch import save_file

    from mcjepa_cli.io.formats import refuse_safetensors_checkpoint

    st = tmp_path / "model.pt"
    save_file({"encoder.weight": torch.zeros(2)}, str(st))
    with pytest.raises(UserError) as e:
        refuse_safetensors_checkpoint(st)
    assert f"error: {e.value}" == (
        f"error: {st}: is a safetensors file (1 tensor, e.g. 'encoder.weight'), not an mcjepa "
        "checkpoint: expected a .pt file written by mcjepa pretrain (e.g. "
        "<run>/checkpoints/last.pt), a run directory or 'latest'")
    refuse_safetensors_checkpoint(quickstart_checkpoint / "checkpoints" / "last.pt")  # no error

    exported = tmp_path / "enc.safetensors"
    r = _cli("export", quickstart_checkpoint, "--format", "timm", "--no-check", "-o", exported)
    assert r.exit_code == 0, r.output
    renamed = tmp_path / "enc.pt"
    renamed.write_bytes(exported.read_bytes())
    with pytest.raises(UserError, match=r"convnext_atto encoder weights exported for timm, "
                                        r"which pretraining can start from \(model.encoder.init\)"):
        refuse_safetensors_checkpoint(renamed)


def _loader_calls_the_check() -> bool:
    import mcjepa_cli.engine.checkpoint as checkpoint

    return "refuse_safetensors_checkpoint" in inspect.getsource(checkpoint)


@pytest.mark.skipif(not _loader_calls_the_check(),
                    reason="engine/checkpoint.py does not call refuse_safetensors_checkpoint yet")
def test_safetensors_checkpoint_on_the_command_line(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    st = tmp_path / "model.pt"
    save_file({"encoder.weight": torch.zeros(2)}, str(st))
    before = st.read_bytes()
    for args in (["flow-eval", "--dataset", "synthetic", "--count", "1", "--size", "16x16",
                  "--checkpoint", st, "--no-progress"],
                 ["export", st, "-o", tmp_path / "e.safetensors"]):
        line = _error_line(_cli(*args))
        assert line.startswith(f"error: {st}: is a safetensors file (1 tensor, "), line
    assert st.read_bytes() == before
