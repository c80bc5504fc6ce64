"""``mcjepa davis-eval``: scoring existing PNGs, propagation end to end, files and user errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.davis_eval import input_size, resolve_level
from mcjepa_cli.eval.davis_metrics import GLOBAL_COLUMNS
from mcjepa_cli.io.images import read_label_png, write_palette_png

STRIDES = (2, 4, 8, 16, 32, 64)


def _cli(*args: str):
    from mcjepa_cli.main import app

    return CliRunner().invoke(app, ["davis-eval", *args])


def _one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def davis_root(shared_data: Path) -> Path:
    return shared_data / "davis2017" / "DAVIS"


def _gt(davis_root: Path) -> list[np.ndarray]:
    folder = davis_root / "Annotations" / "480p" / "blackswan"
    return [read_label_png(p) for p in sorted(folder.glob("*.png"))]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- scoring only


def test_ground_truth_as_predictions_scores_one(davis_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _cli("--root", str(davis_root), "--predictions", str(davis_root / "Annotations" / "480p"),
               "--output", str(out), "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert list(data) == list(GLOBAL_COLUMNS)
    assert data["J&F-Mean"] == 1.0 and data["J-Mean"] == 1.0 and data["F-Mean"] == 1.0
    assert data["J-Recall"] == 1.0 and data["J-Decay"] == 0.0
    glob = _read_csv(out / "global_results-val.csv")
    assert list(glob[0]) == list(GLOBAL_COLUMNS) and glob[0]["J&F-Mean"] == "1.000"
    rows = _read_csv(out / "per-sequence_results-val.csv")
    assert rows == [{"Sequence": "blackswan_1", "J-Mean": "1.000", "F-Mean": "1.000"}]
    assert "blackswan_1" in res.output and "J&F-Mean" in res.output


def test_first_mask_copied_everywhere_scores_lower(davis_root: Path, tmp_path: Path) -> None:
    gts = _gt(davis_root)
    pred_dir = tmp_path / "copy"
    for i in range(len(gts)):
        write_palette_png(pred_dir / "blackswan" / f"{i:05d}.png", gts[0])
    res = _cli("--root", str(davis_root), "--predictions", str(pred_dir), "--json",
               str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r.json").read_text())
    # independent J: IoU of the first mask with every scored frame (1..T-2)
    first = gts[0] > 0
    ious = [np.sum(first & (g > 0)) / np.sum(first | (g > 0)) for g in gts[1:-1]]
    assert data["J-Mean"] == pytest.approx(float(np.mean(ious)), abs=1e-12)
    assert data["J&F-Mean"] < 0.95
    assert (pred_dir / "global_results-val.csv").is_file()  # default output: the PNG folder


def test_prediction_errors_name_the_file(davis_root: Path, tmp_path: Path) -> None:
    pred_dir = tmp_path / "pred"
    shutil.copytree(davis_root / "Annotations" / "480p", pred_dir)
    (pred_dir / "blackswan" / "00009.png").unlink()  # the last frame is not scored: not needed
    assert _cli("--root", str(davis_root), "--predictions", str(pred_dir)).exit_code == 0
    (pred_dir / "blackswan" / "00004.png").unlink()
    _one_error_line(_cli("--root", str(davis_root), "--predictions", str(pred_dir)),
                    str(pred_dir / "blackswan" / "00004.png"), "not found")
    shutil.copy(pred_dir / "blackswan" / "00003.png", pred_dir / "blackswan" / "00004.png")
    two = _gt(davis_root)[5].copy()
    two[two == 1] = 2
    write_palette_png(pred_dir / "blackswan" / "00005.png", two)
    _one_error_line(_cli("--root", str(davis_root), "--predictions", str(pred_dir)),
                    str(pred_dir / "blackswan" / "00005.png"), "object id 2")
    small = Image.fromarray(np.zeros((48, 64), np.uint8), mode="L")
    small.save(pred_dir / "blackswan" / "00005.png")
    _one_error_line(_cli("--root", str(davis_root), "--predictions", str(pred_dir)), "00005.png",
                    "64x48")


def test_bad_input_exits_2_with_one_line(davis_root: Path, tmp_path: Path) -> None:
    _one_error_line(_cli("--root", str(tmp_path / "nope"), "--backbone", "random"),
                    str(tmp_path / "nope"), "JPEGImages/")
    _one_error_line(_cli("--root", str(davis_root), "--subset", "test-dev", "--backbone", "random"),
                    "test-dev.txt", "not found")
    _one_error_line(_cli("--root", str(davis_root)), "--checkpoint", "--backbone random")
    _one_error_line(_cli("--root", str(davis_root), "--backbone", "random", "--level", "s3"),
                    "--level s3")
    _one_error_line(_cli("--root", str(davis_root), "--backbone", "pretrained"),
                    "--backbone pretrained")
    _one_error_line(_cli("--root", str(davis_root), "--backbone", "random", "--topk", "0"),
                    "--topk 0")
    _one_error_line(_cli("--root", str(davis_root), "--predictions", str(tmp_path / "none")),
                    str(tmp_path / "none"))
    _one_error_line(_cli("--dataset", "kinetics", "--backbone", "random"), "--dataset kinetics")
    _one_error_line(_cli("--root", str(davis_root), "--sequences", "bear", "--backbone", "random"),
                    "--sequences bear")


# ----------------------------------------------------------------------------- propagation


def test_propagation_writes_official_layout(davis_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = _cli("--root", str(davis_root), "--backbone", "random", "--size", "96", "--device", "cpu",
               "--output", str(out), "--json", str(tmp_path / "r.json"), "--quiet")
    assert res.exit_code == 0, res.output
    gts = _gt(davis_root)
    pngs = sorted((out / "blackswan").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(10)]
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (854, 480)
    np.testing.assert_array_equal(read_label_png(pngs[0]), gts[0])  # frame 0: the given mask
    assert {int(v) for v in np.unique(read_label_png(pngs[5]))} <= {0, 1}
    data = json.loads((tmp_path / "r.json").read_text())
    assert 0.3 < data["J&F-Mean"] <= 1.0
    # the written PNGs scored on their own give the same numbers (any method's results)
    res2 = _cli("--root", str(davis_root), "--predictions", str(out), "--output",
                str(tmp_path / "rescore"), "--json", str(tmp_path / "r2.json"))
    assert res2.exit_code == 0, res2.output
    assert json.loads((tmp_path / "r2.json").read_text()) == data


def test_synthetic_set_runs_without_data(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    res = _cli("--dataset", "synthetic", "--backbone", "random", "--num-sequences", "2",
               "--num-frames", "4", "--synthetic-size", "48x64", "--device", "cpu",
               "--output", str(out), "--json", str(tmp_path / "s.json"))
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (out / "synth_000").glob("*.png"))
    assert names == [f"{i:05d}.png" for i in range(4)]
    rows = _read_csv(out / "per-sequence_results-val.csv")
    assert rows and all(r["Sequence"].rsplit("_", 1)[0] in ("synth_000", "synth_001") for r in rows)
    data = json.loads((tmp_path / "s.json").read_text())
    assert list(data) == list(GLOBAL_COLUMNS)
    assert 0.0 <= data["J-Mean"] <= 1.0 and 0.0 <= data["F-Mean"] <= 1.0
    assert data["J&F-Mean"] == pytest.approx((data["J-Mean"] + data["F-Mean"]) / 2)
    res2 = _cli("--dataset", "synthetic", "--num-sequences", "2", "--num-frames", "4",
                "--synthetic-size", "48x64", "--predictions", str(out), "--json",
                str(tmp_path / "s2.json"))
    assert res2.exit_code == 0, res2.output
    assert json.loads((tmp_path / "s2.json").read_text()) == data


def test_checkpoint_propagation(quickstart_checkpoint: Path, tmp_path: Path) -> None:
    from mcjepa_cli.eval.davis_eval import davis_eval

    out = tmp_path / "ckpt"
    result = davis_eval(dataset="synthetic", checkpoint=str(quickstart_checkpoint),
                        num_sequences=1, num_frames=3, synthetic_size=(64, 64), level="s16",
                        device="cpu", output=out)
    assert result.settings["stride"] == 16 and result.settings["level"] == 3
    assert result.settings["model"] == str(quickstart_checkpoint / "checkpoints" / "last.pt")
    rows = _read_csv(out / "per-sequence_results-val.csv")
    assert [r["Sequence"] for r in rows] == [s.name for s in result.objects]
    assert result.results["J&F-Mean"] == pytest.approx(
        np.mean([s.j_stats[0] for s in result.objects]) / 2
        + np.mean([s.f_stats[0] for s in result.objects]) / 2
    )
    _one_error_line(_cli("--dataset", "synthetic", "--checkpoint", str(quickstart_checkpoint),
                         "--arch", "convnext_femto"), "--arch convnext_femto")


# ----------------------------------------------------------------------------------- units


def test_level_and_input_size() -> None:
    assert resolve_level("s8", STRIDES) == 2
    assert resolve_level("stride16", STRIDES) == 3
    assert resolve_level("2", STRIDES) == 2  # small numbers are indices
    assert resolve_level("32", STRIDES) == 4  # numbers that are no index are strides
    for bad in ("s3", "7", "x", "-1"):
        with pytest.raises(UserError):
            resolve_level(bad, STRIDES)
    assert input_size(480, 854, 480, 8) == (480, 856)
    assert input_size(480, 854, 240, 16) == (240, 432)
    assert input_size(1080, 1920, 480, 8) == (480, 856)
    assert input_size(100, 60, None, 8) == (104, 64)  # native size, rounded to the stride
