"""``mcjepa datasets check``: found / layout / counts / first problem, on real and written data.

Expected counts are taken here by listing the files with ``glob`` (independently of the listings
under test); small datasets are written here with hand-rolled writers (PIL, struct, pypng) in
the benchmarks' exact on-disk formats.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcjepa_cli.data.check import check_dataset, dataset_names
from mcjepa_cli.errors import UserError
from mcjepa_cli.main import app

runner = CliRunner()
H, W = 12, 16


def _cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["datasets", "check", *args], env={"COLUMNS": "200", **(env or {})})


def _json_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict]]:
    r = _cli(*args, "--json", "-", env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.exit_code, json.loads(r.stdout)  # stdout holds the JSON only


# ----------------------------------------------------------------------------- raw writers
def _frame(path: Path, seed: int = 0, grey: bool = False, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if grey else (*size, 3)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)


def _flo(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flow = np.ones((h, w, 2), "<f4")
    path.write_bytes(b"PIEH" + struct.pack("<ii", w, h) + flow.tobytes())


def _kitti(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.full((h, w, 3), 2**15, np.uint16)
    out[..., 2] = 1
    with open(path, "wb") as f:
        png.Writer(width=w, height=h, greyscale=False, bitdepth=16).write(f, out.reshape(h, -1))


def _pfm(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((H, W, 3), "<f4")
    path.write_bytes(f"PF\n{W} {H}\n-1.0\n".encode() + rgb.tobytes())


def _label(path: Path, value: int, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.full((H, W), value, np.uint8), mode="L")
    if palette:  # an indexed PNG: the value is the palette index
        img = Image.frombytes("P", (W, H), np.full((H, W), value, np.uint8).tobytes())
        img.putpalette([c for i in range(256) for c in (i, 255 - i, 0)])
    img.save(path)


# ------------------------------------------------------------------ real samples (shared)
def _shared(shared_data: Path, sub: str) -> Path:
    path = shared_data / sub
    if not path.is_dir():
        pytest.skip(f"{path} is not present; skipped")
    return path


def _expect_middlebury(root: Path) -> dict:
    seqs = sorted(p.parent.name for p in root.glob("other-gt-flow/*/flow10.flo"))
    frames = [f for s in seqs for f in root.glob(f"other-data/{s}/frame1[01].png")]
    return {"pairs": len(seqs), "frames": len(frames), "flows": len(seqs), "masks": 0}


def _expect_sintel(root: Path) -> dict:
    t = root / "training"
    flows = sorted(t.glob("flow/*/*.flo"))
    passes = [p for p in ("clean", "final") if (t / p).is_dir()]
    frames = {f for p in passes for f in t.glob(f"{p}/*/*.png")}
    pretrain = sum(len(list(s.glob("*.png"))) - 1 for p in passes for s in (t / p).iterdir())
    masks = len(list(t.glob("occlusions/*/*.png"))) + len(list(t.glob("invalid/*/*.png")))
    return {"pairs": len(flows) * len(passes), "frames": len(frames), "flows": len(flows),
            "masks": masks, "pretrain_pairs": pretrain}


def _expect_kitti(root: Path) -> dict:
    flows = sorted(root.glob("training/flow_occ/*_10.png"))
    images = sorted(root.glob("training/image_2/*.png"))
    ids = {p.name[:6] for p in images if p.name.endswith("_10.png")}
    pretrain = sum((root / "training" / "image_2" / f"{i}_11.png").is_file() for i in ids)
    return {"pairs": len(flows), "frames": len(images), "flows": len(flows),
            "masks": len(list(root.glob("training/flow_noc/*.png"))), "pretrain_pairs": pretrain}


def _expect_davis(root: Path) -> dict:
    seqs = (root / "ImageSets" / "2017" / "val.txt").read_text().split()
    return {
        "sequences": len(seqs),
        "frames": sum(len(list(root.glob(f"JPEGImages/480p/{s}/*.jpg"))) for s in seqs),
        "annotations": sum(len(list(root.glob(f"Annotations/480p/{s}/*.png"))) for s in seqs),
        "split_files": len(list(root.glob("ImageSets/2017/*.txt"))),
    }


def _expect_voc(root: Path) -> dict:
    labels = list(root.glob("SegmentationClass/*.png"))
    split_files = len(list(root.glob("ImageSets/Segmentation/*.txt")))
    return {"train_images": len(labels), "val_images": len(labels), "labels": len(labels),
            "split_files": split_files}


SHARED = {  # name -> (folder under ../shared/data, expected counts, layout fragment, status)
    "middlebury": ("middlebury", _expect_middlebury, "other-data/ + other-gt-flow/", "ok"),
    "sintel": ("sintel", _expect_sintel, "training/{clean,final} + flow/", "ok"),
    "kitti-2015": ("kitti2015", _expect_kitti, "training/image_2/ + flow_occ/", "ok"),
    "davis": ("davis2017/DAVIS", _expect_davis, "JPEGImages/480p/ + Annotations/480p/", "ok"),
    # the sample ships no ImageSets/Segmentation: usable (all images as both splits), warned
    "voc": ("voc2012/VOC2012", _expect_voc, "JPEGImages/ + SegmentationClass/", "warning"),
}
MCJEPA_NAMES = {"middlebury": "Middlebury", "sintel": "Sintel", "kitti-2015": "KITTI2015",
                "davis": "DAVIS", "voc": "VOC2012"}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(SHARED))
def test_shared_samples_are_found_with_layout_and_counts(shared_data: Path, name: str) -> None:
    sub, expect, layout, status = SHARED[name]
    root = _shared(shared_data, sub)
    c = check_dataset(name, root)
    assert c.status == status, c.problem
    assert c.root == str(root)
    assert c.layout.startswith(layout), c.layout
    expected = expect(root)
    assert {k: c.counts[k] for k in expected} == expected
    assert all(v > 0 for k, v in expected.items() if k not in ("masks", "split_files"))
    if status == "warning":
        assert "ImageSets/Segmentation/val.txt not found" in c.problem


@pytest.mark.shared_data
def test_shared_samples_through_mcjepa_data_and_the_cli(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name, (sub, *_rest) in SHARED.items():
        (data / MCJEPA_NAMES[name]).symlink_to(_shared(shared_data, sub), target_is_directory=True)
    code, rows = _json_cli(env={"MCJEPA_DATA": str(data)})
    assert code == 0
    by_name = {r["name"]: r for r in rows}
    assert list(by_name) == dataset_names()
    for name, (_, expect, _, status) in SHARED.items():
        assert by_name[name]["status"] == status
        assert by_name[name]["root"] == str(data / MCJEPA_NAMES[name])
        expected = expect(data / MCJEPA_NAMES[name])
        assert {k: by_name[name]["counts"][k] for k in expected} == expected
    others = [r for n, r in by_name.items() if n not in SHARED]
    assert others and all(r["status"] == "not found" for r in others)
    # the table: one row per dataset, statuses shown
    r = _cli(env={"MCJEPA_DATA": str(data)})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    for name in dataset_names():
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "4 ok, 1 warning" in r.stdout


# ----------------------------------------------------------------- broken copies (shared)
def _broken_copy(shared_data: Path, sub: str, tmp_path: Path) -> Path:
    copy = tmp_path / Path(sub).name
    shutil.copytree(_shared(shared_data, sub), copy)
    return copy


@pytest.mark.shared_data
def test_missing_ground_truth_folder_is_named_exit_1(shared_data: Path, tmp_path: Path) -> None:
    root = _broken_copy(shared_data, "kitti2015", tmp_path)
    shutil.rmtree(root / "training" / "flow_occ")
    code, rows = _json_cli("kitti-2015", "--root", str(root))
    assert code == 1
    assert rows[0]["status"] == "broken"
    assert rows[0]["problem"].startswith("training/flow_occ: folder not found")


@pytest.mark.shared_data
def test_corrupt_first_frame_is_named_exit_1(shared_data: Path, tmp_path: Path) -> None:
    root = _broken_copy(shared_data, "middlebury", tmp_path)
    first = sorted((root / "other-gt-flow").iterdir())[0].name  # the first sequence listed
    (root / "other-data" / first / "frame10.png").write_bytes(b"not a png")
    code, rows = _json_cli("middlebury", "--root", str(root))
    assert code == 1 and rows[0]["status"] == "broken"
    assert rows[0]["problem"].startswith(f"other-data/{first}/frame10.png: cannot decode image")


@pytest.mark.shared_data
def test_truncated_flow_and_missing_mask_are_named(shared_data: Path, tmp_path: Path) -> None:
    root = _broken_copy(shared_data, "sintel", tmp_path)
    flo = sorted((root / "training" / "flow").glob("*/*.flo"))[0]
    flo.write_bytes(flo.read_bytes()[:100])
    c = check_dataset("sintel", root)
    assert c.status == "broken" and c.problem.startswith(flo.relative_to(root).as_posix())
    _flo(flo, 436, 1024)  # whole again; now an invalid/ mask goes missing
    mask = sorted((root / "training" / "invalid").glob("*/*.png"))[0]
    mask.unlink()
    c = check_dataset("sintel", root)
    assert c.status == "broken" and mask.relative_to(root).as_posix() in c.problem
    assert "file not found" in c.problem


@pytest.mark.shared_data
def test_missing_split_file(shared_data: Path, tmp_path: Path) -> None:
    root = _broken_copy(shared_data, "davis2017/DAVIS", tmp_path)
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    code, rows = _json_cli("davis", "--root", str(root))
    assert code == 1 and rows[0]["status"] == "broken"
    assert rows[0]["problem"].startswith("ImageSets/2017/val.txt: subset file")
    assert rows[0]["counts"]["split_files"] == 0


@pytest.mark.shared_data
def test_missing_annotation_and_corrupt_label(shared_data: Path, tmp_path: Path) -> None:
    davis = _broken_copy(shared_data, "davis2017/DAVIS", tmp_path)
    last = sorted((davis / "Annotations" / "480p").glob("*/*.png"))[-1]
    last.unlink()
    c = check_dataset("davis", davis)
    assert c.status == "broken" and c.problem.startswith(last.relative_to(davis).as_posix())
    assert c.counts["annotations"] == c.counts["frames"] - 1
    voc = _broken_copy(shared_data, "voc2012/VOC2012", tmp_path)
    first = sorted((voc / "SegmentationClass").glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:60])  # truncated PNG
    c = check_dataset("voc", voc)
    assert c.status == "broken"
    assert c.problem.startswith(f"SegmentationClass/{first.name}: cannot decode image")


@pytest.mark.shared_data
def test_a_broken_root_fails_the_whole_listing(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    kitti = _broken_copy(shared_data, "kitti2015", data)
    kitti.rename(data / "KITTI2015")
    (data / "KITTI2015" / "training" / "image_2" / "000000_11.png").unlink()
    (data / "Middlebury").symlink_to(_shared(shared_data, "middlebury"))
    code, rows = _json_cli(env={"MCJEPA_DATA": str(data)})
    by_name = {r["name"]: r for r in rows}
    assert code == 1
    assert by_name["middlebury"]["status"] == "ok"
    assert by_name["kitti-2015"]["status"] == "broken"
    assert by_name["kitti-2015"]["problem"].startswith("training/image_2/000000_11.png: file not")


# ------------------------------------------------------------- datasets written here (cheap)
def test_chairs_with_and_without_split_file(tmp_path: Path) -> None:
    root = tmp_path / "FlyingChairs_release"
    for i in (1, 2, 3):
        _frame(root / "data" / f"{i:05d}_img1.ppm", i)
        _frame(root / "data" / f"{i:05d}_img2.ppm", i + 10)
        _flo(root / "data" / f"{i:05d}_flow.flo")
    (root / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
    c = check_dataset("chairs", root)
    assert c.status == "ok", c.problem
    assert c.counts == {"pairs": 3, "frames": 6, "flows": 3, "masks": 0, "split_files": 1,
                        "val_pairs": 1, "pretrain_pairs": 2}
    (root / "FlyingChairs_train_val.txt").unlink()
    c = check_dataset("chairs", root)
    assert c.status == "warning" and "FlyingChairs_train_val.txt not found" in c.problem
    assert c.counts["pairs"] == 3 and c.counts["pretrain_pairs"] == 3


def test_kitti_2012_grey_cameras_and_flow_noc(tmp_path: Path) -> None:
    root = tmp_path / "kitti2012"
    for i in range(2):
        for f in (10, 11):
            _frame(root / "training" / "image_0" / f"{i:06d}_{f}.png", i + f, grey=True)
        _kitti(root / "training" / "flow_occ" / f"{i:06d}_10.png")
        _kitti(root / "training" / "flow_noc" / f"{i:06d}_10.png")
    c = check_dataset("kitti-2012", root)
    assert c.status == "ok", c.problem
    assert c.layout == "training/image_0/ + flow_occ/ + flow_noc/"
    assert c.counts == {"pairs": 2, "frames": 4, "flows": 2, "masks": 2, "pretrain_pairs": 2}
    _frame(root / "training" / "image_0" / "000000_10.png", size=(H + 2, W))  # wrong size
    c = check_dataset("kitti-2012", root)
    assert c.status == "broken" and "000000_11.png: size" in c.problem


def test_kitti_multiview_frames_are_counted_apart(tmp_path: Path) -> None:
    """The multi-view extension unpacked into training/image_2: the counts agree with the
    pretraining listing (the 10 -> 11 pair per scene) and name the multi-view pairs apart."""
    root = tmp_path / "kitti2015"
    for i in range(2):
        for f in range(21):  # 000000_00.png ... 000000_20.png
            _frame(root / "training" / "image_2" / f"{i:06d}_{f:02d}.png", i + f)
        _kitti(root / "training" / "flow_occ" / f"{i:06d}_10.png")
    c = check_dataset("kitti-2015", root)
    assert c.status == "ok", c.problem
    assert c.counts == {"pairs": 2, "frames": 4, "flows": 2, "masks": 0, "pretrain_pairs": 2,
                        "multiview_pairs": 40}
    assert any("multiview: true uses all 40" in n for n in c.notes), c.notes


def test_things_and_hd1k(tmp_path: Path) -> None:
    things = tmp_path / "things"
    seq = Path("TRAIN") / "A" / "0000"
    for k in (6, 7, 8):
        for cam in ("left", "right"):
            _frame(things / "frames_cleanpass" / seq / cam / f"{k:04d}.png", k)
        _pfm(things / "optical_flow" / seq / "into_future" / "left"
             / f"OpticalFlowIntoFuture_{k:04d}_L.pfm")
        _pfm(things / "optical_flow" / seq / "into_past" / "left"
             / f"OpticalFlowIntoPast_{k:04d}_L.pfm")
    c = check_dataset("things", things)
    assert c.status == "ok", c.problem
    # flow-eval: 6->7, 7->8 (future) and 7->6, 8->7 (past); pretraining: both cameras, 2 each
    assert c.counts == {"pairs": 4, "frames": 3, "flows": 4, "masks": 0, "pretrain_pairs": 4}
    assert c.layout.startswith("frames_{clean}pass/TRAIN")

    hd1k = tmp_path / "hd1k"
    for k in range(3):
        _frame(hd1k / "hd1k_input" / "image_2" / f"000000_{k:04d}.png", k)
        _kitti(hd1k / "hd1k_flow_gt" / "flow_occ" / f"000000_{k:04d}.png")
    c = check_dataset("hd1k", hd1k)
    assert c.status == "ok", c.problem
    assert c.counts == {"pairs": 2, "frames": 3, "flows": 2, "masks": 0, "pretrain_pairs": 2}
    shutil.rmtree(hd1k / "hd1k_flow_gt")
    c = check_dataset("hd1k", hd1k)
    assert c.status == "broken" and c.problem.startswith("hd1k_flow_gt/flow_occ: folder not found")


def test_middlebury_grey_frames(tmp_path: Path) -> None:
    root = tmp_path / "mb"
    for seq in ("Alpha", "Beta"):
        for k in (10, 11):
            _frame(root / "other-data-gray" / seq / f"frame{k}.png", k, grey=True)
        _flo(root / "other-gt-flow" / seq / "flow10.flo")
    c = check_dataset("middlebury", root)
    assert c.status == "ok" and c.layout == "other-data-gray/ + other-gt-flow/ (grey frames)"
    assert c.counts == {"pairs": 2, "frames": 4, "flows": 2, "masks": 0}


def test_cityscapes_and_ade20k(tmp_path: Path) -> None:
    cs = tmp_path / "cityscapes"
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            _frame(cs / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", i)
            _label(cs / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", 7)
    c = check_dataset("cityscapes", cs)
    assert c.status == "ok", c.problem
    assert c.counts == {"train_images": 2, "val_images": 1, "labels": 3}
    assert c.layout == "leftImg8bit/ + gtFine/ (labelIds)"

    ade = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        _frame(ade / "images" / split / f"ADE_{split}_1.jpg")
        _label(ade / "annotations" / split / f"ADE_{split}_1.png", 3)
    c = check_dataset("ade20k", ade)
    assert c.status == "ok" and c.counts == {"train_images": 1, "val_images": 1, "labels": 2}
    _label(ade / "annotations" / "validation" / "ADE_validation_1.png", 200)
    c = check_dataset("ade20k", ade)
    assert c.status == "broken"
    assert c.problem.startswith("annotations/validation/ADE_validation_1.png: label values must")


def test_voc_with_split_files_and_palette_labels(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for n in names:
            _frame(root / "JPEGImages" / f"{n}.jpg")
            _label(root / "SegmentationClass" / f"{n}.png", 15, palette=True)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    c = check_dataset("voc", root)
    assert c.status == "ok", c.problem
    assert c.counts == {"train_images": 2, "val_images": 1, "labels": 3, "split_files": 2}
    assert c.layout == "JPEGImages/ + SegmentationClass/ + ImageSets/Segmentation/"
    (root / "JPEGImages" / "c.jpg").unlink()  # listed in val.txt, image gone
    c = check_dataset("voc", root)
    assert c.status == "broken" and c.problem.startswith("JPEGImages/c.jpg: file not found")


def test_image_folders_and_frame_folders(tmp_path: Path) -> None:
    imagenet = tmp_path / "ImageNet"
    for wnid, n in (("n01", 2), ("n02", 3)):
        for k in range(n):
            _frame(imagenet / "train" / wnid / f"{wnid}_{k}.JPEG", k)
    c = check_dataset("imagenet", imagenet)
    assert (c.status, c.layout, c.counts) == ("ok", "train/<class>/<image>",
                                               {"images": 5, "classes": 2})
    clips = tmp_path / "clips"
    for seq, n in (("a", 3), ("b", 2)):
        for k in range(n):
            _frame(clips / seq / f"frame_{k}.png", k)
    c = check_dataset("frames", clips)
    assert (c.status, c.counts) == ("ok", {"pretrain_pairs": 3, "sequences": 2})
    assert check_dataset("imagefolder", clips).counts == {"images": 5, "classes": 2}
    _frame(clips / "b" / "frame_1.png", size=(H, W + 4))  # a pair of different sizes
    c = check_dataset("frames", clips)
    assert c.status == "ok"  # the first pair (a/frame_0 -> frame_1) is fine: only it is opened
    c = check_dataset("frames", clips / "b")
    assert c.status == "broken" and c.problem.startswith("frame_1.png: frame size")


# ---------------------------------------------------------------------- the command itself
def test_nothing_found_is_not_a_failure(tmp_path: Path) -> None:
    code, rows = _json_cli(env={"MCJEPA_DATA": str(tmp_path)})
    assert code == 0 and [r["name"] for r in rows] == dataset_names()
    assert {r["status"] for r in rows} == {"not found"}
    needs_root = {r["name"] for r in rows if r["root"] is None}
    assert needs_root == {"frames", "video", "imagefolder"}


def test_requested_missing_dataset_exits_1(tmp_path: Path) -> None:
    code, rows = _json_cli("sintel", "--root", str(tmp_path / "nowhere"))
    assert code == 1 and rows[0]["status"] == "not found"
    assert rows[0]["problem"] == "folder not found"
    code, rows = _json_cli("davis", env={"MCJEPA_DATA": str(tmp_path)})
    assert code == 1 and rows[0]["root"] == str(tmp_path / "DAVIS")
    code, rows = _json_cli("video")
    assert code == 1 and "--root" in rows[0]["problem"]


def test_bad_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    r = _cli("kitti")
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [r.output.strip()]
    assert r.output.startswith("error: kitti: unknown dataset; expected one of sintel, kitti-2015")
    r = _cli("--root", str(tmp_path))
    assert r.exit_code == 2 and "needs a dataset NAME" in r.output
    with pytest.raises(UserError):
        check_dataset("synthetic")


def test_json_file_and_help(tmp_path: Path) -> None:
    root = tmp_path / "mb"
    for k in (10, 11):
        _frame(root / "other-data" / "Seq" / f"frame{k}.png", k)
    _flo(root / "other-gt-flow" / "Seq" / "flow10.flo")
    out = tmp_path / "report.json"
    r = _cli("middlebury", "--root", str(root), "--json", str(out))
    assert r.exit_code == 0, r.output
    assert "middlebury" in r.stdout and "other-data/ + other-gt-flow/" in r.stdout
    assert r.stdout.splitlines()[-1] == f"wrote {out}"
    rows = json.loads(out.read_text())
    assert rows[0]["status"] == "ok" and rows[0]["used_by"] == ["flow-eval"]
    r = _cli("middlebury", "--root", str(root), "--json", "-")
    assert json.loads(r.stdout) == rows and "wrote" not in r.output
    assert set(rows[0]) == {"name", "used_by", "status", "root", "layout", "counts", "problem",
                            "warnings", "notes"}
    for args in (["datasets", "--help"], ["datasets", "check", "--help"]):
        h = runner.invoke(app, args, env={"COLUMNS": "120"})
        assert h.exit_code == 0 and "Usage:" in h.output
