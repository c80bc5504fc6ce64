"""flow-eval end to end: tiny fake datasets in every on-disk layout, shared real samples, the CLI.

Ground truth and frames are written here with hand-rolled writers (struct, pypng, PIL), and the
expected numbers are computed here with NumPy from what was written, never from the code under
test.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.flow_eval import flow_eval

# --------------------------------------------------------------------------- raw writers


def _frame(path: Path, rng: np.random.Generator, h: int, w: int, grey: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w) if grey else (h, w, 3)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)


def _mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _flo(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = flow.shape[:2]
    path.write_bytes(b"PIEH" + struct.pack("<ii", w, h) + flow.astype("<f4").tobytes())


def _kitti(path: Path, flow: np.ndarray, valid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = valid.shape
    out = np.zeros((h, w, 3), np.uint16)
    out[..., :2] = np.round(flow * 64 + 2**15).astype(np.uint16)
    out[..., 2] = valid
    with open(path, "wb") as f:
        png.Writer(width=w, height=h, greyscale=False, bitdepth=16).write(f, out.reshape(h, -1))


def _pfm(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = flow.shape[:2]
    rgb = np.concatenate([flow, np.zeros((h, w, 1), np.float32)], -1)
    path.write_bytes(f"PF\n{w} {h}\n-1.0\n".encode() + rgb[::-1].astype("<f4").tobytes())


def _gt(rng: np.random.Generator, h: int, w: int, grid: bool = False) -> np.ndarray:
    flow = rng.normal(size=(h, w, 2)) * 6
    if grid:  # KITTI values live on a 1/64 grid
        flow = np.round(flow * 64) / 64
    return flow.astype(np.float32)


# --------------------------------------------------------------------- fake datasets
# Each builder writes a dataset into ``root`` and returns the list of (gt, valid, occ) in the
# pairs' evaluation order-independent form, keyed by what the metrics need.

H, W = 12, 16


def make_sintel(root: Path, scenes: dict[str, int] | None = None) -> dict:
    """Scenes with n frames each; clean and final passes; occlusions and invalid masks."""
    rng = np.random.default_rng(10)
    scenes = scenes or {"sceneA": 4, "sceneB": 3}
    truth = {"pairs": [], "frames": {}}
    t = root / "training"
    for scene, n in scenes.items():
        for k in range(1, n + 1):
            for p in ("clean", "final"):
                _frame(t / p / scene / f"frame_{k:04d}.png", rng, H, W)
        for k in range(1, n):
            gt = _gt(rng, H, W)
            inv = rng.random((H, W)) < 0.1
            occ = rng.random((H, W)) < 0.3
            _flo(t / "flow" / scene / f"frame_{k:04d}.flo", gt)
            _mask(t / "invalid" / scene / f"frame_{k:04d}.png", inv)
            _mask(t / "occlusions" / scene / f"frame_{k:04d}.png", occ)
            truth["pairs"].append({"gt": gt, "valid": ~inv, "occ": occ, "seq": scene,
                                   "frames": [t / "{p}" / scene / f"frame_{k:04d}.png",
                                              t / "{p}" / scene / f"frame_{k + 1:04d}.png"]})
    return truth


def make_kitti(root: Path, year: int) -> dict:
    rng = np.random.default_rng(year)
    images = root / "training" / ("image_2" if year == 2015 else "colored_0")
    truth = {"pairs": []}
    for i in range(2):
        _frame(images / f"{i:06d}_10.png", rng, H, W)
        _frame(images / f"{i:06d}_11.png", rng, H, W)
        gt = _gt(rng, H, W, grid=True)
        valid = rng.random((H, W)) < 0.6
        noc = valid & (rng.random((H, W)) < 0.7)
        _kitti(root / "training" / "flow_occ" / f"{i:06d}_10.png", gt, valid)
        _kitti(root / "training" / "flow_noc" / f"{i:06d}_10.png", gt, noc)
        truth["pairs"].append({"gt": gt, "valid": valid, "occ": valid & ~noc, "seq": f"{i:06d}",
                               "frames": [images / f"{i:06d}_10.png", images / f"{i:06d}_11.png"]})
    return truth


def make_chairs(root: Path) -> dict:
    rng = np.random.default_rng(3)
    truth = {"pairs": [], "split_ids": [1, 2, 1]}
    for i, sid in enumerate(truth["split_ids"], start=1):
        _frame(root / "data" / f"{i:05d}_img1.ppm", rng, H, W)
        _frame(root / "data" / f"{i:05d}_img2.ppm", rng, H, W)
        gt = _gt(rng, H, W)
        _flo(root / "data" / f"{i:05d}_flow.flo", gt)
        truth["pairs"].append({"gt": gt, "valid": np.ones((H, W), bool), "occ": None,
                               "seq": f"{i:05d}", "split": sid,
                               "frames": [root / "data" / f"{i:05d}_img1.ppm",
                                          root / "data" / f"{i:05d}_img2.ppm"]})
    (root / "FlyingChairs_train_val.txt").write_text("\n".join(map(str, truth["split_ids"])) + "\n")
    return truth


def make_things(root: Path) -> dict:
    """One TRAIN sequence, frames 6..8: future 6->7, 7->8 and past 7->6, 8->7 (4 pairs)."""
    rng = np.random.default_rng(4)
    seq = Path("TRAIN") / "A" / "0000"
    frames = root / "frames_cleanpass" / seq / "left"
    for k in (6, 7, 8):
        _frame(frames / f"{k:04d}.png", rng, H, W)
        _frame(root / "frames_cleanpass" / seq / "right" / f"{k:04d}.png", rng, H, W)
    truth = {"pairs": []}
    for direction, name, step in (("into_future", "Future", 1), ("into_past", "Past", -1)):
        for k in (6, 7, 8):
            gt = _gt(rng, H, W)
            gt[0, 0] = (np.inf, 0.0)  # a non-finite value: invalid
            flow_dir = root / "optical_flow" / seq / direction / "left"
            _pfm(flow_dir / f"OpticalFlowInto{name}_{k:04d}_L.pfm", gt)
            if (frames / f"{k + step:04d}.png").exists():
                valid = np.ones((H, W), bool)
                valid[0, 0] = False
                pair = [frames / f"{k:04d}.png", frames / f"{k + step:04d}.png"]
                truth["pairs"].append({"gt": gt, "valid": valid, "occ": None, "seq": "TRAIN/A/0000",
                                       "frames": pair})
    return truth


def make_hd1k(root: Path) -> dict:
    """Sequence 000000 with frames 0..2 and flows 0..2: pairs 0->1 and 1->2."""
    rng = np.random.default_rng(5)
    truth = {"pairs": []}
    images = root / "hd1k_input" / "image_2"
    for k in range(3):
        _frame(images / f"000000_{k:04d}.png", rng, H, W)
        gt = _gt(rng, H, W, grid=True)
        valid = rng.random((H, W)) < 0.8
        _kitti(root / "hd1k_flow_gt" / "flow_occ" / f"000000_{k:04d}.png", gt, valid)
        if k < 2:
            truth["pairs"].append({"gt": gt, "valid": valid, "occ": None, "seq": "000000",
                                   "frames": [images / f"000000_{k:04d}.png",
                                              images / f"000000_{k + 1:04d}.png"]})
    return truth


def make_middlebury(root: Path) -> dict:
    """Grey frames only (other-data-gray), .flo GT with unknown (1e10) pixels."""
    rng = np.random.default_rng(6)
    truth = {"pairs": []}
    for seq in ("Alpha", "Beta"):
        for k in (10, 11):
            _frame(root / "other-data-gray" / seq / f"frame{k}.png", rng, H, W, grey=True)
        gt = _gt(rng, H, W)
        unknown = rng.random((H, W)) < 0.2
        gt[unknown, 1] = 1e10
        _flo(root / "other-gt-flow" / seq / "flow10.flo", gt)
        truth["pairs"].append({"gt": gt, "valid": ~unknown, "occ": None, "seq": seq,
                               "frames": [root / "other-data-gray" / seq / "frame10.png",
                                          root / "other-data-gray" / seq / "frame11.png"]})
    return truth


BUILDERS = {
    "sintel": make_sintel,
    "kitti-2015": lambda r: make_kitti(r, 2015),
    "kitti-2012": lambda r: make_kitti(r, 2012),
    "chairs": make_chairs,
    "things": make_things,
    "hd1k": make_hd1k,
    "middlebury": make_middlebury,
}


def _expected(
    pairs: list[dict], pred_of, aggregation: str = "pooled", subset: str = "all"
) -> float:
    """EPE straight from the definition over the written ground truth."""
    per_image, total, count = [], 0.0, 0
    for p in pairs:
        mask = p["valid"].copy()
        if subset == "occ":
            mask &= p["occ"]
        elif subset == "noc":
            mask &= ~p["occ"]
        pred = pred_of(p).astype(np.float64)
        err = np.sqrt(((pred - p["gt"].astype(np.float64)) ** 2).sum(-1))[mask]
        if err.size:
            per_image.append(err.mean())
            total += err.sum()
            count += err.size
    return float(np.mean(per_image)) if aggregation == "per-image" else total / count


def _zero(p: dict) -> np.ndarray:
    return np.zeros_like(p["gt"])


# ----------------------------------------------------------------------- zero flow, all sets
@pytest.mark.parametrize("dataset", sorted(BUILDERS))
def test_zero_flow_on_every_layout(tmp_path: Path, dataset: str) -> None:
    truth = BUILDERS[dataset](tmp_path)
    pairs = truth["pairs"]
    if dataset == "chairs":
        pairs = [p for p in pairs if p["split"] == 1]  # train split from the split file
    rows = flow_eval(dataset, root=tmp_path, model="zero", per_sequence=True)
    main_rows = [r for r in rows if r["sequence"] is None]
    assert len(main_rows) == (2 if dataset == "sintel" else 1)
    for row in main_rows:
        assert row["epe"] == pytest.approx(_expected(pairs, _zero), rel=1e-6)
        assert row["n_pixels"] == sum(int(p["valid"].sum()) for p in pairs)
        assert row["n_images"] == len(pairs)
        assert row["aggregation"] == "pooled" and row["dataset"] == dataset
        for key in ("px1", "px3", "px5"):
            assert 0.0 <= row[key] <= 1.0
        if pairs[0]["occ"] is not None:
            assert row["epe_occ"] == pytest.approx(_expected(pairs, _zero, subset="occ"), rel=1e-6)
            assert row["epe_noc"] == pytest.approx(_expected(pairs, _zero, subset="noc"), rel=1e-6)
        else:
            assert "epe_occ" not in row
    seqs = {p["seq"] for p in pairs}
    seq_rows = [r for r in rows if r["sequence"] is not None and r["pass"] == main_rows[0]["pass"]]
    assert {r["sequence"] for r in seq_rows} == seqs
    for r in seq_rows:
        mine = [p for p in pairs if p["seq"] == r["sequence"]]
        assert r["epe"] == pytest.approx(_expected(mine, _zero), rel=1e-6)
    per_image = flow_eval(dataset, root=tmp_path, model="zero", per_image=True)
    assert per_image[0]["epe"] == pytest.approx(_expected(pairs, _zero, "per-image"), rel=1e-6)
    assert per_image[0]["aggregation"] == "per-image"


def test_chairs_val_split_and_sintel_pass_choice(tmp_path: Path) -> None:
    truth = make_chairs(tmp_path / "chairs")
    val = [p for p in truth["pairs"] if p["split"] == 2]
    rows = flow_eval("chairs", root=tmp_path / "chairs", model="zero", split="val")
    assert rows[0]["split"] == "val" and rows[0]["n_images"] == len(val)
    assert rows[0]["epe"] == pytest.approx(_expected(val, _zero), rel=1e-6)
    make_sintel(tmp_path / "sintel")
    rows = flow_eval("sintel", root=tmp_path / "sintel", model="zero", pass_name="final")
    assert [r["pass"] for r in rows] == ["final"]


# --------------------------------------------------------------------- shared real samples
def _mean_gt_magnitude_shared(shared: Path, dataset: str) -> float:
    total, count = 0.0, 0
    if dataset == "middlebury":
        for f in sorted((shared / "middlebury" / "other-gt-flow").glob("*/flow10.flo")):
            raw = np.fromfile(f, "<f4")
            w, h = np.frombuffer(raw[1:3].tobytes(), "<i4")
            flow = raw[3:].reshape(h, w, 2).astype(np.float64)
            ok = np.isfinite(flow).all(-1) & (np.abs(flow) <= 1e9).all(-1)
            total += np.sqrt((flow[ok] ** 2).sum(-1)).sum()
            count += ok.sum()
    elif dataset == "sintel":
        t = shared / "sintel" / "training"
        raw = np.fromfile(t / "flow" / "alley_1" / "frame_0002.flo", "<f4")
        w, h = np.frombuffer(raw[1:3].tobytes(), "<i4")
        flow = raw[3:].reshape(h, w, 2).astype(np.float64)
        ok = np.asarray(Image.open(t / "invalid" / "alley_1" / "frame_0002.png")) == 0
        total, count = np.sqrt((flow[ok] ** 2).sum(-1)).sum(), ok.sum()
    else:
        path = shared / "kitti2015" / "training" / "flow_occ" / "000000_10.png"
        w, h, rows, _ = png.Reader(filename=str(path)).read()
        arr = np.vstack([np.asarray(r, np.float64) for r in rows]).reshape(h, w, 3)
        ok = arr[..., 2] > 0
        flow = (arr[..., :2] - 2**15) / 64
        total, count = np.sqrt((flow[ok] ** 2).sum(-1)).sum(), ok.sum()
    return float(total / count)


SHARED = {"middlebury": "middlebury", "sintel": "sintel", "kitti-2015": "kitti2015"}


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset", sorted(SHARED))
def test_shared_zero_flow_epe_is_mean_gt_magnitude(
    shared_data: Path, dataset: str, tmp_path: Path
) -> None:
    expected = _mean_gt_magnitude_shared(shared_data, dataset)
    rows = flow_eval(dataset, root=shared_data / SHARED[dataset], model="zero",
                     save_predictions=tmp_path / "pred")
    for row in rows:
        assert abs(row["epe"] - expected) < 1e-4
    again = flow_eval(dataset, root=shared_data / SHARED[dataset], predictions=tmp_path / "pred")
    assert [{k: v for k, v in r.items() if k != "evaluated"} for r in again] == \
        [{k: v for k, v in r.items() if k != "evaluated"} for r in rows]


# ------------------------------------------------------------------------------ fake model
class PairFlowNet(torch.nn.Module):
    """flow = (10 * (R2 - R1), 5 * (G2 - G1) + 0.25): image-dependent, cheap, exactly known."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[int] = []  # batch size of every prepare_frame call
        self.estimated: list[int] = []  # batch size of every estimate_flow call

    @staticmethod
    def _flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack([10 * (b[:, 0] - a[:, 0]), 5 * (b[:, 1] - a[:, 1]) + 0.25], 1)

    def estimate_flow(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        self.estimated.append(img1.shape[0])
        return self._flow(img1, img2)


class FakeFlowNet(PairFlowNet):
    """The same flow, with the video API (per-frame preparation) as MCJEPA has it."""

    def prepare_frame(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        self.prepared.append(img.shape[0])
        return {"img": img.clone()}

    def flow_between(self, p1: dict, p2: dict) -> torch.Tensor:
        return self._flow(p1["img"], p2["img"])


def _fake_pred(pass_name: str | None = None):
    def pred_of(p: dict) -> np.ndarray:
        paths = [Path(str(f).replace("{p}", pass_name or "")) for f in p["frames"]]
        a, b = (np.asarray(Image.open(f).convert("RGB"), np.float64) / 255 for f in paths)
        return np.stack([10 * (b[..., 0] - a[..., 0]), 5 * (b[..., 1] - a[..., 1]) + 0.25], -1)
    return pred_of


def test_fake_model_sintel_reuses_each_frame_once(tmp_path: Path) -> None:
    truth = make_sintel(tmp_path, {"sceneA": 4, "sceneB": 3, "sceneC": 4})
    net = FakeFlowNet()
    rows = flow_eval("sintel", root=tmp_path, model=net, batch_size=2, per_image=True)
    for row in rows:
        expected = _expected(truth["pairs"], _fake_pred(row["pass"]), "per-image")
        assert row["epe"] == pytest.approx(expected, rel=1e-5)
        assert row["epe_occ"] == pytest.approx(
            _expected(truth["pairs"], _fake_pred(row["pass"]), "per-image", "occ"), rel=1e-5)
    # 11 frames per pass, each encoded once; sceneA and sceneC (3 pairs each) share batches
    assert sum(net.prepared) == 2 * 11 and net.estimated == []
    assert max(net.prepared) == 2
    plain = PairFlowNet()
    rows_plain = flow_eval("sintel", root=tmp_path, model=plain, batch_size=3, per_image=True)
    assert sum(plain.estimated) == 2 * 8 and plain.prepared == []
    assert [r["epe"] for r in rows_plain] == pytest.approx([r["epe"] for r in rows], rel=1e-12)


@pytest.mark.parametrize("dataset", ["kitti-2015", "things", "middlebury", "chairs", "hd1k"])
def test_fake_model_metrics_on_layouts(tmp_path: Path, dataset: str) -> None:
    truth = BUILDERS[dataset](tmp_path)
    pairs = [p for p in truth["pairs"] if p.get("split", 1) == 1]
    net = FakeFlowNet()
    rows = flow_eval(dataset, root=tmp_path, model=net, batch_size=2)
    assert rows[0]["epe"] == pytest.approx(_expected(pairs, _fake_pred()), rel=1e-5)
    if dataset == "things":  # 6->7, 7->8, 7->6, 8->7 chain as 7->8->7->6->7: 5 frames, not 8
        assert sum(net.prepared) == 5 and net.estimated == []


# ------------------------------------------------------------ save, then score predictions
@pytest.mark.parametrize("dataset", sorted(BUILDERS) + ["synthetic"])
def test_saved_predictions_score_the_same(tmp_path: Path, dataset: str) -> None:
    root = tmp_path / "data"
    kw = {"synthetic_count": 3, "synthetic_size": (24, 32)} if dataset == "synthetic" else {}
    if dataset != "synthetic":
        BUILDERS[dataset](root)
        kw["root"] = root
    out = tmp_path / "pred"
    direct = flow_eval(dataset, model=FakeFlowNet(), save_predictions=out, per_sequence=True, **kw)
    scored = flow_eval(dataset, predictions=out, per_sequence=True, **kw)
    layout = {
        "sintel": "clean/sceneA/frame_0001.flo", "kitti-2015": "flow/000000_10.png",
        "kitti-2012": "flow/000001_10.png", "chairs": "00001_flow.flo",
        "things": "clean/TRAIN/A/0000/into_past/left/OpticalFlowIntoPast_0007_L.flo",
        "hd1k": "flow/000000_0001.png", "middlebury": "Beta/flow10.flo", "synthetic": "000002.flo",
    }[dataset]
    assert (out / layout).is_file()
    assert len(direct) == len(scored)
    for a, b in zip(direct, scored, strict=True):
        assert a["sequence"] == b["sequence"] and a["n_pixels"] == b["n_pixels"]
        if dataset in ("kitti-2015", "kitti-2012", "hd1k"):
            # KITTI PNGs store flow on a 1/64 px grid: at most 1/128 px per component moves
            assert b["epe"] == pytest.approx(a["epe"], abs=math.sqrt(2) / 128)
        else:
            for key in ("epe", "px1", "px3", "px5", "fl_all", "epe_occ", "epe_noc"):
                assert a.get(key) == b.get(key), key


def test_synthetic_zero_flow_matches_the_generator() -> None:
    from mcjepa_cli.data.synthetic import SyntheticFlowPairs

    data = SyntheticFlowPairs(24, 32, 3, seed=0, split="val")
    mags = [torch.linalg.vector_norm(data[i]["flow"].double(), dim=0) for i in range(3)]
    occ = [data[i]["occlusion"] for i in range(3)]
    rows = flow_eval("synthetic", model="zero", synthetic_count=3, synthetic_size=(24, 32))
    all_mag = torch.cat([m.flatten() for m in mags])
    assert rows[0]["epe"] == pytest.approx(float(all_mag.mean()), rel=1e-9)
    occ_mag = torch.cat([m[o] for m, o in zip(mags, occ, strict=True)])
    if occ_mag.numel():
        assert rows[0]["epe_occ"] == pytest.approx(float(occ_mag.mean()), rel=1e-9)
    assert rows[0]["pass"] is None and rows[0]["split"] == "val"


# ------------------------------------------------------------------------------------- CLI
def _cli(*args: str, progress: bool = False):
    from mcjepa_cli.main import app

    return CliRunner().invoke(app, ["flow-eval", *args] + ([] if progress else ["--no-progress"]))


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in errors[0], errors[0]


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    _assert_one_line_error(_cli("--dataset", "sintel", "--root", str(missing), "--model", "zero"),
                           str(missing), "training/")
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_cli("--dataset", "kitti-2015", "--root", str(tmp_path / "empty"),
                                "--model", "zero"), "training", "expected the kitti-2015 layout")
    make_middlebury(tmp_path / "mb")
    flo = tmp_path / "mb" / "other-gt-flow" / "Beta" / "flow10.flo"
    flo.write_bytes(flo.read_bytes()[:-7])
    _assert_one_line_error(_cli("--dataset", "middlebury", "--root", str(tmp_path / "mb"),
                                "--model", "zero"), str(flo), "truncated")
    make_kitti(tmp_path / "k", 2015)
    fake_ckpt = tmp_path / "not_ours.pt"
    torch.save({"weights": torch.zeros(3)}, fake_ckpt)
    _assert_one_line_error(_cli("--dataset", "kitti-2015", "--root", str(tmp_path / "k"),
                                "--checkpoint", str(fake_ckpt)), str(fake_ckpt), "not an mcjepa")
    _assert_one_line_error(_cli("--dataset", "kitti-2015", "--root", str(tmp_path / "k"),
                                "--model", "banana"), "--model banana")
    _assert_one_line_error(_cli("--dataset", "kitti-2015", "--root", str(tmp_path / "k"),
                                "--model", "zero", "--pass", "final"), "--pass final")
    _assert_one_line_error(_cli("--dataset", "kitti-2015", "--root", str(tmp_path / "k")),
                           "exactly one")
    (tmp_path / "preds").mkdir()
    _assert_one_line_error(_cli("--dataset", "kitti-2015", "--root", str(tmp_path / "k"),
                                "--predictions", str(tmp_path / "preds")),
                           "flow/000000_10.png", "prediction file not found")
    _assert_one_line_error(_cli("--dataset", "flickr", "--model", "zero"), "--dataset flickr")


def test_frame_size_mismatch_is_a_user_error(tmp_path: Path) -> None:
    make_kitti(tmp_path, 2015)
    odd = tmp_path / "training" / "image_2" / "000001_11.png"
    _frame(odd, np.random.default_rng(0), H + 2, W)
    result = _cli("--dataset", "kitti-2015", "--root", str(tmp_path), "--model", "zero")
    assert result.exit_code == 0  # zero flow never reads frames
    net = FakeFlowNet()
    with pytest.raises(UserError, match="000001_11.png"):
        flow_eval("kitti-2015", root=tmp_path, model=net)


def test_cli_json_and_table(tmp_path: Path) -> None:
    truth = make_sintel(tmp_path / "s")
    out = tmp_path / "res" / "rows.json"
    result = _cli("--dataset", "sintel", "--root", str(tmp_path / "s"), "--model", "zero",
                  "--json", str(out), "--per-sequence", "--per-image")
    assert result.exit_code == 0, result.output
    assert "per-image" in result.output and "sintel/clean" in result.output
    rows = json.loads(out.read_text())
    assert [r["pass"] for r in rows if r["sequence"] is None] == ["clean", "final"]
    for key in ("dataset", "pass", "epe", "px1", "px3", "px5", "fl_all", "n_pixels", "aggregation",
                "epe_occ", "epe_noc", "px1_occ", "fl_all_noc"):
        assert key in rows[0], key
    assert rows[0]["epe"] == pytest.approx(_expected(truth["pairs"], _zero, "per-image"), rel=1e-6)


def test_cli_synthetic_needs_no_path(tmp_path: Path) -> None:
    result = _cli("--dataset", "synthetic", "--model", "zero", "--count", "2", "--size", "16x24",
                  "--json", str(tmp_path / "s.json"), progress=True)
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "s.json").read_text())[0]
    assert row["dataset"] == "synthetic" and row["n_pixels"] == 2 * 16 * 24


def test_cli_ends_with_the_files_it_wrote(tmp_path: Path) -> None:
    small = ("--dataset", "synthetic", "--model", "zero", "--count", "2", "--size", "16x24")
    preds, out = tmp_path / "preds", tmp_path / "rows.json"
    result = _cli(*small, "--save-predictions", str(preds), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"wrote {preds} (2 prediction file(s)), {out}"
    assert sorted(p.name for p in preds.iterdir()) == ["000000.flo", "000001.flo"]
    # --json -: stdout holds the JSON alone; the table and the wrote line go to stderr
    result = _cli(*small, "--save-predictions", str(tmp_path / "p2"), "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["n_images"] == 2
    assert result.stderr.splitlines()[-1] == f"wrote {tmp_path / 'p2'} (2 prediction file(s))"
    result = _cli(*small)  # nothing written, nothing said
    assert result.exit_code == 0 and "wrote" not in result.output


# -------------------------------------------------------------- trained quickstart checkpoint
@pytest.mark.shared_data
def test_quickstart_checkpoint_evaluates_quickly(
    request: pytest.FixtureRequest, shared_data: Path
) -> None:
    """The quickstart model scores the Middlebury sample in under a minute of CPU time.

    CPU time of this process (all its threads), not wall time: a busy shared CI machine
    stretches wall time but not the work done.
    """
    import time

    try:
        ckpt = request.getfixturevalue("quickstart_checkpoint")
    except pytest.FixtureLookupError:
        pytest.skip("the quickstart_checkpoint fixture is not available")
    start = time.process_time()
    rows = flow_eval(
        "middlebury", root=shared_data / "middlebury", checkpoint=str(ckpt), device="cpu"
    )
    assert time.process_time() - start < 60
    assert rows[0]["n_images"] == 4 and math.isfinite(rows[0]["epe"])
