"""Pretraining data: frame pairs from the flow benchmarks' layouts, frame folders and videos;
ImageFolder two-view images; mixing with repetition counts; keyed randomness; bad data."""

from __future__ import annotations

import math
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mcjepa_cli.data.augment import (
    AugmentConfig,
    FlowAugmentConfig,
    PairAugment,
    TwoViewAugment,
    ViewParams,
    make_generator,
)
from mcjepa_cli.data.flow_pairs import build_flow_pair_dataset
from mcjepa_cli.data.image_folder import build_image_dataset
from mcjepa_cli.data.sources import FlowSource, ImageSource
from mcjepa_cli.errors import UserError

H, W = 12, 16  # size of the tiny frames written below
STEP = 10  # frame t of a sequence is a flat image of level base + STEP * t


def _flat(level: int, h: int = H, w: int = W) -> np.ndarray:
    return np.full((h, w, 3), level, dtype=np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _sequence(folder: Path, names: list[str], base: int) -> list[Path]:
    return [_save(folder / n, _flat(base + STEP * t)) for t, n in enumerate(names)]


def _levels(item: dict[str, torch.Tensor]) -> tuple[float, float]:
    """The flat level (0-255) of each frame of a flow item, checking the frames are flat."""
    out = []
    for k in ("image1", "image2"):
        img = item[k]
        assert img.dtype == torch.float32 and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        assert float(img.max() - img.min()) < 1e-6
        out.append(round(float(img.mean()) * 255))
    return out[0], out[1]


def _flow_ds(sources, **kw):
    kw.setdefault("height", 8)
    kw.setdefault("width", 10)
    kw.setdefault("seed", 0)
    return build_flow_pair_dataset(sources, **kw)


# ------------------------------------------------------------------------------ on-disk layouts
@pytest.fixture()
def sintel(tmp_path: Path) -> Path:
    root = tmp_path / "Sintel"
    for p, pass_name in enumerate(("clean", "final")):
        _sequence(
            root / "training" / pass_name / "alley_1",
            [f"frame_{i:04d}.png" for i in (1, 2, 3)],
            20 + p,
        )
        _sequence(
            root / "training" / pass_name / "bamboo_1",
            [f"frame_{i:04d}.png" for i in (1, 2)],
            100 + p,
        )
    return root


def test_sintel_layout_pairs_and_passes(sintel: Path) -> None:
    ds = _flow_ds([FlowSource("sintel", str(sintel))])
    assert len(ds) == 6  # (2 + 1) pairs x 2 passes
    got = sorted(_levels(ds[i]) for i in range(len(ds)))
    assert got == sorted([(20, 30), (30, 40), (100, 110), (21, 31), (31, 41), (101, 111)])
    clean = _flow_ds([FlowSource("sintel", str(sintel), passes=["clean"])])
    assert len(clean) == 3
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("sintel", str(sintel), passes=["albedo"])])
    assert e.value.culprit == "data.flow[0].passes"


def test_kitti_layouts_including_multiview(tmp_path: Path) -> None:
    root15 = tmp_path / "KITTI2015"
    for i, ident in enumerate(("000000", "000001")):
        _sequence(
            root15 / "training" / "image_2", [f"{ident}_10.png", f"{ident}_11.png"], 50 + 100 * i
        )
    _save(root15 / "training" / "flow_occ" / "000000_10.png", _flat(0))  # labels are ignored
    ds = _flow_ds([FlowSource("kitti-2015", str(root15))])
    src = ds.sources[0]
    assert len(ds) == 2
    assert [tuple(p.name for p in src.files(i)) for i in range(2)] == [
        ("000000_10.png", "000000_11.png"),
        ("000001_10.png", "000001_11.png"),
    ]
    assert sorted(_levels(ds[i]) for i in range(2)) == [(50, 60), (150, 160)]
    # KITTI 2012 keeps its frames in colored_0; the multi-view extension adds frames 00..20,
    # used only with multiview: true (by default the benchmark's 10 -> 11 pair alone)
    root12 = tmp_path / "KITTI2012"
    _sequence(
        root12 / "training" / "colored_0", [f"000000_{k:02d}.png" for k in (9, 10, 11, 12)], 10
    )
    _save(root12 / "training" / "colored_0" / "000000_15.png", _flat(0))  # isolated: no pair
    ds12 = _flow_ds([FlowSource("kitti-2012", str(root12))])
    assert [_levels(ds12[i]) for i in range(len(ds12))] == [(20, 30)]
    ds12 = _flow_ds([FlowSource("kitti-2012", str(root12), multiview=True)])
    assert sorted(_levels(ds12[i]) for i in range(len(ds12))) == [(10, 20), (20, 30), (30, 40)]


def _kitti_multiview(root: Path, scenes: int, frames: range) -> None:
    """KITTI 2015 with the multi-view extension unpacked into training/image_2 (tiny PNGs)."""
    for s in range(scenes):
        _sequence(root / "training" / "image_2", [f"{s:06d}_{k:02d}.png" for k in frames],
                  s * 7)


def test_kitti_multiview_frames_are_listed_only_on_request(tmp_path: Path) -> None:
    merged = tmp_path / "KITTI2015"
    _kitti_multiview(merged, scenes=2, frames=range(21))  # 000000_00.png ... 000001_20.png
    ds = _flow_ds([FlowSource("kitti-2015", str(merged))])
    src = ds.sources[0]
    # the benchmark's pair per scene, as the recipes' repeat counts assume (not 20 per scene)
    assert [tuple(p.name for p in src.files(i)) for i in range(len(ds))] == [
        ("000000_10.png", "000000_11.png"), ("000001_10.png", "000001_11.png")]
    every = _flow_ds([FlowSource("kitti-2015", str(merged), multiview=True)])
    names = [tuple(p.name for p in every.sources[0].files(i)) for i in range(len(every))]
    assert len(names) == 2 * 20 and names[0] == ("000000_00.png", "000000_01.png")
    assert names[19] == ("000000_19.png", "000000_20.png")
    assert _levels(every[0]) == (0, 10)
    # repeat counts the listing: 3 x 2 pairs, 3 x 40 with multiview
    assert len(_flow_ds([FlowSource("kitti-2015", str(merged), repeat=3)])) == 6
    assert len(_flow_ds([FlowSource("kitti-2015", str(merged), repeat=3, multiview=True)])) == 120

    # root pointed at a multi-view folder without the benchmark's 10 / 11 frames: one line
    # saying how to use it
    only_mv = tmp_path / "multiview"
    _kitti_multiview(only_mv, scenes=1, frames=range(0, 5))
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("kitti-2015", str(only_mv))])
    assert "data.flow[0].multiview: true" in e.value.expected
    assert len(_flow_ds([FlowSource("kitti-2015", str(only_mv), multiview=True)])) == 4
    # multiview is a KITTI option only
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("synthetic", multiview=True)])
    assert e.value.culprit == "data.flow[0].multiview"


def test_chairs_layout_and_split_file(tmp_path: Path) -> None:
    root = tmp_path / "FlyingChairs"
    for i in range(1, 4):
        _save(root / "data" / f"{i:05d}_img1.ppm", _flat(10 * i))
        _save(root / "data" / f"{i:05d}_img2.ppm", _flat(10 * i + 5))
        (root / "data" / f"{i:05d}_flow.flo").write_bytes(b"PIEH")  # ignored
    assert sorted(_levels(x) for x in _flow_ds([FlowSource("chairs", str(root))])) == [
        (10, 15),
        (20, 25),
        (30, 35),
    ]
    (root / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
    train = _flow_ds([FlowSource("chairs", str(root))])
    val = _flow_ds([FlowSource("chairs", str(root), split="val")])
    assert sorted(_levels(x) for x in train) == [(10, 15), (30, 35)]
    assert [_levels(x) for x in val] == [(20, 25)]


def test_things_layout_both_cameras(tmp_path: Path) -> None:
    root = tmp_path / "FlyingThings3D"
    seq = root / "frames_cleanpass" / "TRAIN" / "A" / "0000"
    _sequence(seq / "left", ["0006.png", "0007.png", "0008.png"], 10)
    _sequence(seq / "right", ["0006.png", "0007.png"], 100)
    _sequence(
        root / "frames_cleanpass" / "TEST" / "A" / "0000" / "left", ["0006.png", "0007.png"], 200
    )
    ds = _flow_ds([FlowSource("things", str(root))])  # no frames_finalpass/: that pass is skipped
    assert sorted(_levels(x) for x in ds) == [(10, 20), (20, 30), (100, 110)]
    test = _flow_ds([FlowSource("things", str(root), split="test")])
    assert [_levels(x) for x in test] == [(200, 210)]


def test_hd1k_layout_never_pairs_across_sequences(tmp_path: Path) -> None:
    root = tmp_path / "HD1K"
    image_2 = root / "hd1k_input" / "image_2"
    _sequence(image_2, ["000000_0000.png", "000000_0001.png", "000000_0002.png"], 10)
    _sequence(image_2, ["000001_0000.png", "000001_0001.png"], 150)
    ds = _flow_ds([FlowSource("hd1k", str(root))])
    assert sorted(_levels(x) for x in ds) == [(10, 20), (20, 30), (150, 160)]


def test_frame_folders_natural_order(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    names = [f"frame_{k}.jpg" for k in range(1, 12)]  # frame_10 sorts after frame_9
    for t, n in enumerate(names):
        _save(root / "walk" / n, _flat(5 + STEP * t))  # JPEG of a flat image stays flat
    _sequence(root / "zoom", ["a.png", "b.png"], 200)
    ds = _flow_ds([FlowSource("frames", str(root))])
    assert len(ds) == 11  # 10 + 1
    levels = [_levels(ds[i]) for i in range(len(ds))]
    assert levels[:10] == [(5 + STEP * t, 5 + STEP * (t + 1)) for t in range(10)]
    assert levels[10] == (200, 210)


def test_video_source_pairs(tmp_path: Path) -> None:
    path = tmp_path / "videos" / "clip.mp4"
    path.parent.mkdir()
    writer = imageio.get_writer(str(path), format="FFMPEG", fps=10, quality=10, macro_block_size=16)
    for t in range(6):
        writer.append_data(_flat(40 + 20 * t, 32, 48))
    writer.close()
    (tmp_path / "videos" / "readme.txt").write_text("not a video")
    ds = _flow_ds([FlowSource("video", str(path.parent))], height=16, width=16)
    assert len(ds) == 5
    for i in range(5):
        item = ds[i]
        m1, m2 = (float(item[k].mean()) * 255 for k in ("image1", "image2"))
        assert abs(m1 - (40 + 20 * i)) < 3 and abs(m2 - m1 - 20) < 3  # image2 = the next frame
    # a tight cache budget (20971 B for 6 x 32 x 48 x 3 = 27648 B) downscales the cached
    # frames by sqrt(20971 / 27648) = 0.871 -> 28 x 42; a budget below the crop size is an error
    small = _flow_ds([FlowSource("video", str(path))], height=16, width=20, video_cache_mb=0.02)
    assert tuple(small.sources[0].frames[0].shape[-3:]) == (3, 28, 42)
    assert small[0]["image1"].shape == (3, 16, 20)
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("video", str(path))], height=16, width=20, video_cache_mb=0.005)
    assert e.value.culprit == str(path) and "cache limit" in e.value.expected


def test_synthetic_source_keeps_images_only() -> None:
    ds = _flow_ds([FlowSource("synthetic", length=3)], height=16, width=24)
    item = ds[(1, 5)]
    assert set(item) == {"image1", "image2"}
    assert item["image1"].shape == (3, 16, 24) and item["image1"].dtype == torch.float32
    assert not torch.equal(item["image1"], item["image2"])  # two different frames


def test_small_grey_rgba_16bit_frames_are_enlarged_to_the_crop(tmp_path: Path) -> None:
    root = tmp_path / "frames" / "seq"
    root.mkdir(parents=True)
    Image.fromarray(np.full((5, 6), 60, np.uint8), mode="L").save(root / "0.png")
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 70, 0
    Image.fromarray(rgba, mode="RGBA").save(root / "1.png")
    Image.fromarray(np.full((5, 6), 80 * 257, np.uint16)).save(root / "2.png")  # 16-bit 80/255
    ds = _flow_ds([FlowSource("frames", str(root.parent))], height=9, width=14)
    assert [_levels(ds[i]) for i in range(2)] == [(60, 70), (70, 80)]
    assert ds[0]["image1"].shape == (3, 9, 14)


# ------------------------------------------------------------------------------ mixing
def test_repetition_counts(sintel: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    _sequence(frames / "s", ["0.png", "1.png", "2.png", "3.png"], 0)  # 3 pairs
    ds = _flow_ds(
        [FlowSource("sintel", str(sintel), repeat=3), FlowSource("frames", str(frames), repeat=2)]
    )
    assert len(ds) == 6 * 3 + 3 * 2
    hits: dict[tuple[int, int], int] = {}
    for g in range(len(ds)):  # naive count of how often each (source, sample) is served
        key = ds.locate(g)
        hits[key] = hits.get(key, 0) + 1
    assert hits == {**{(0, j): 3 for j in range(6)}, **{(1, j): 2 for j in range(3)}}
    assert [r["repeat"] for r in ds.source_counts()] == [3, 2]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_bad_source_entries() -> None:
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("sintel", "/nonexistent/Sintel")])
    assert e.value.culprit == "/nonexistent/Sintel" and "training/" in e.value.expected
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("flyingchairs", "/tmp")])
    assert e.value.culprit == "data.flow[0].name"
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("synthetic", repeat=0)])
    assert e.value.culprit == "data.flow[0].repeat"
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("synthetic")], on_error="ignore")
    assert e.value.culprit == "data.on_error"
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("frames")])
    assert e.value.culprit == "data.flow[0].root"
    with pytest.raises(UserError):
        _flow_ds([])


def test_empty_dataset_folders_name_path_and_layout(tmp_path: Path) -> None:
    (tmp_path / "training" / "clean").mkdir(parents=True)
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("sintel", str(tmp_path))])
    assert e.value.culprit == str(tmp_path) and "training/{clean,final}/<scene>" in e.value.expected
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("frames", str(empty))])
    assert e.value.culprit == str(empty) and "no frame pairs" in e.value.expected
    with pytest.raises(UserError) as e:
        build_image_dataset([ImageSource("imagefolder", str(empty))], crop_size=8, seed=0)
    assert e.value.culprit == str(empty) and "no images" in e.value.expected
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("video", str(empty))])
    assert e.value.culprit == str(empty) and "no video" in e.value.expected


# ------------------------------------------------------------------------------ bad data
@pytest.fixture()
def kitti_with_corrupt_frame(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "KITTI"
    for i, ident in enumerate(("000000", "000001", "000002")):
        _sequence(
            root / "training" / "image_2", [f"{ident}_10.png", f"{ident}_11.png"], 20 + 50 * i
        )
    bad = root / "training" / "image_2" / "000001_11.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated PNG
    return root, bad


def test_corrupt_frame_stops_naming_the_file(kitti_with_corrupt_frame) -> None:
    root, bad = kitti_with_corrupt_frame
    ds = _flow_ds([FlowSource("kitti-2015", str(root))])
    assert _levels(ds[0]) == (20, 30)
    with pytest.raises(UserError) as e:
        ds[1]
    assert e.value.culprit == str(bad)
    # same error, still a one-line UserError, from inside a DataLoader worker process
    batches = iter(DataLoader(ds, batch_sampler=[[(1, 0)]], num_workers=1))
    caught = None
    try:
        next(batches)
    except UserError as err:
        caught = (err.culprit, err.expected, err.one_line())
        # break the traceback's reference cycle so the worker shuts down now, not when the
        # garbage collector finds the iterator (that path waits 5 s for the worker)
        err.__traceback__ = None
    del batches
    assert caught is not None
    assert caught[0] == str(bad) and "cannot decode" in caught[1] and "Traceback" not in caught[2]


def test_corrupt_frame_skipped_and_counted(kitti_with_corrupt_frame) -> None:
    root, bad = kitti_with_corrupt_frame
    ds = _flow_ds([FlowSource("kitti-2015", str(root))], on_error="skip")
    assert _levels(ds[1]) == (120, 130)  # the next readable pair is served instead
    assert ds.skipped() == 1
    loader = DataLoader(ds, batch_sampler=[[(0, 1), (1, 2)], [(1, 3)]], num_workers=2)
    batches = list(loader)
    assert [b["image1"].shape[0] for b in batches] == [2, 1]
    assert ds.skipped() == 3  # counts made in worker processes reach the main process


def test_corrupt_image_in_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _save(root / "cat" / "a.png", _flat(10))
    bad = root / "cat" / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError) as e:
        build_image_dataset([ImageSource("imagefolder", str(root))], crop_size=8, seed=0)[1]
    assert e.value.culprit == str(bad)
    ds = build_image_dataset(
        [ImageSource("imagefolder", str(root))], crop_size=8, seed=0, on_error="skip"
    )
    v1, _ = ds[1]
    assert v1.shape == (3, 8, 8) and ds.skipped() == 1


def test_corrupt_video_skipped_or_named(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    writer = imageio.get_writer(
        str(folder / "a.mp4"), format="FFMPEG", fps=5, quality=8, macro_block_size=16
    )
    for t in range(3):
        writer.append_data(_flat(50 * t, 16, 16))
    writer.close()
    (folder / "b.mp4").write_bytes(b"\x00" * 2000)
    with pytest.raises(UserError) as e:
        _flow_ds([FlowSource("video", str(folder))])
    assert e.value.culprit == str(folder / "b.mp4")
    ds = _flow_ds([FlowSource("video", str(folder))], on_error="skip")
    assert len(ds) == 2 and ds.skipped() == 1


# ------------------------------------------------------------------------------ randomness
def _pattern_pair(seed: int, h: int = H, w: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    img1 = rng.integers(0, 200, (3, h, w), dtype=np.uint8)
    return torch.from_numpy(img1), torch.from_numpy(img1 + 40)  # image2 = image1 + 40 levels


def _find_window(big: np.ndarray, small: np.ndarray) -> list[tuple[int, int, bool]]:
    """Naive search: every (top, left, flipped) where ``small`` equals a window of ``big``."""
    found = []
    _, hh, ww = small.shape
    for flipped in (False, True):
        src = big[:, :, ::-1] if flipped else big
        for t in range(big.shape[1] - hh + 1):
            for left in range(big.shape[2] - ww + 1):
                if np.array_equal(src[:, t : t + hh, left : left + ww], small):
                    found.append((t, left, flipped))
    return found


def test_pair_augment_same_geometry_on_both_frames() -> None:
    img1, img2 = _pattern_pair(0)
    aug = PairAugment(7, 9, FlowAugmentConfig(hflip=0.5))
    flips = 0
    for key in range(12):
        out1, out2 = aug(img1, img2, make_generator(3, key))
        a1 = np.round(out1.numpy() * 255).astype(np.uint8)
        a2 = np.round(out2.numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(a2.astype(int) - a1.astype(int), 40)  # same window, same flip
        where = _find_window(img1.numpy(), a1)
        assert len(where) == 1  # a genuine window of the input (random content: unique)
        flips += where[0][2]
    assert 0 < flips < 12
    swapped = PairAugment(7, 9, FlowAugmentConfig(hflip=0.0, swap=1.0))
    o1, o2 = swapped(img1, img2, make_generator(0))
    assert torch.allclose(o1 - o2, torch.full_like(o1, 40 / 255), atol=1e-6)


def test_keyed_determinism_and_epochs(sintel: Path) -> None:
    big = sintel / "big"
    rng = np.random.default_rng(1)
    for t in range(2):
        _save(big / "s" / f"{t}.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    make = lambda: _flow_ds([FlowSource("frames", str(big))], height=16, width=16, seed=7)  # noqa: E731
    a, b = make(), make()
    assert torch.equal(a[(0, 11)]["image1"], b[(0, 11)]["image1"])  # same (seed, key): same sample
    crops = {a[(0, k)]["image1"].numpy().tobytes() for k in range(8)}
    assert len(crops) > 1  # other keys: other crops of the same pair
    other_seed = _flow_ds([FlowSource("frames", str(big))], height=16, width=16, seed=8)
    assert not all(torch.equal(a[(0, k)]["image1"], other_seed[(0, k)]["image1"]) for k in range(4))
    e0 = a[0]["image1"]
    assert torch.equal(e0, a[0]["image1"])
    a.set_epoch(1)
    assert not all(torch.equal(e0, (a.set_epoch(e), a[0]["image1"])[1]) for e in range(1, 5))


def test_worker_processes_give_the_same_items(sintel: Path) -> None:
    ds = build_image_dataset(
        [ImageSource("imagefolder", str(sintel / "training"), split="clean")], crop_size=8, seed=3
    )
    items = [(i % len(ds), 100 + i) for i in range(6)]
    direct = [ds[it] for it in items]
    loader = DataLoader(ds, batch_sampler=[items[:3], items[3:]], num_workers=2)
    batched = [v for b1, b2 in loader for v in zip(b1, b2, strict=True)]
    for (d1, d2), (l1, l2) in zip(direct, batched, strict=True):
        assert torch.equal(d1, l1) and torch.equal(d2, l2)


# ------------------------------------------------------------------------------ two views
def test_image_folder_layouts(tmp_path: Path) -> None:
    root = tmp_path / "ImageNet"
    _save(root / "train" / "n01440764" / "n01440764_1.JPEG", _flat(30, 20, 24))
    _save(root / "train" / "n01443537" / "n01443537_2.JPEG", _flat(90, 10, 30))
    _save(root / "val" / "ILSVRC2012_val_00000001.JPEG", _flat(200))
    ds = build_image_dataset([ImageSource("imagenet", str(root))], crop_size=16, seed=0)
    assert len(ds) == 2
    val = build_image_dataset(
        [ImageSource("imagefolder", str(root), split="val", repeat=3)], crop_size=16, seed=0
    )
    assert len(val) == 3
    flat_classes = build_image_dataset(
        [ImageSource("imagefolder", str(root / "train"), split="")], crop_size=16, seed=0
    )
    assert len(flat_classes) == 2
    v1, v2 = ds[(0, 0)]
    assert v1.shape == v2.shape == (3, 16, 16) and v1.dtype == torch.float32
    assert float(v1.min()) >= 0.0 and float(v1.max()) <= 1.0


def test_two_view_probabilities_match_vicreg() -> None:
    aug = TwoViewAugment(32, AugmentConfig())
    n = 600
    counts = np.zeros((2, 5))
    areas, ratios = [], []
    for i in range(n):
        gen = make_generator(0, i)
        for view in (0, 1):
            p = aug.sample_params(view, 60, 80, gen)
            counts[view] += [
                p.flip,
                p.jitter is not None,
                p.grayscale,
                p.blur_sigma is not None,
                p.solarize,
            ]
            top, left, h, w = p.crop
            assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
            areas.append(h * w / (60 * 80))
            ratios.append(w / h)
    expected = np.array([[0.5, 0.8, 0.2, 1.0, 0.0], [0.5, 0.8, 0.2, 0.1, 0.2]])
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts / n - expected) <= 4 * sigma + 1e-9), counts / n
    # independent NumPy simulation of RandomResizedCrop's rejection sampling on a 60 x 80 image
    rng = np.random.default_rng(0)
    sim = []
    for _ in range(4000):
        for _ in range(10):
            a = 4800 * rng.uniform(0.08, 1.0)
            r = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(a * r)), round(math.sqrt(a / r))
            if 0 < w <= 80 and 0 < h <= 60:
                sim.append(w * h / 4800)
                break
        else:
            sim.append(1.0)
    assert 0.07 <= min(areas) and max(areas) <= 1.0
    assert np.mean(areas) == pytest.approx(np.mean(sim), abs=0.03)
    assert min(ratios) >= 0.70 and max(ratios) <= 1.40  # [3/4, 4/3] up to pixel rounding
    sig = aug.blur_sigma
    assert sig == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))


def test_two_view_pixel_ops_against_numpy() -> None:
    aug = TwoViewAugment(6)
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (3, 6, 6), dtype=np.uint8))
    x = img.numpy().astype(np.float64) / 255
    full = (0, 0, 6, 6)
    plain = aug.apply(img, ViewParams(full, False, None, False, None, False))
    np.testing.assert_allclose(plain.numpy(), x, atol=1e-6)  # full-image crop at the same size
    flipped = aug.apply(img, ViewParams(full, True, None, False, None, False))
    np.testing.assert_allclose(flipped.numpy(), x[:, :, ::-1], atol=1e-6)
    grey = aug.apply(img, ViewParams(full, False, None, True, None, False))
    lum = 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    for c in range(3):
        np.testing.assert_allclose(grey[c].numpy(), lum, atol=2e-3)
    sol = aug.apply(img, ViewParams(full, False, None, False, None, True))
    np.testing.assert_allclose(sol.numpy(), np.where(x >= 128 / 255, 1 - x, x), atol=1e-6)
    bright = aug.apply(img, ViewParams(full, False, ([0], 0.5, 1.0, 1.0, 0.0), False, None, False))
    np.testing.assert_allclose(bright.numpy(), x * 0.5, atol=1e-6)
    crop = aug.apply(img, ViewParams((1, 2, 3, 3), False, None, False, None, False))  # 3x3 -> 6x6
    assert crop.shape == (3, 6, 6)


def test_two_views_deterministic_and_different(tmp_path: Path) -> None:
    root = tmp_path / "imgs" / "c"
    rng = np.random.default_rng(2)
    _save(root / "a.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    ds = build_image_dataset([ImageSource("imagefolder", str(root.parent))], crop_size=16, seed=5)
    v1, v2 = ds[(0, 9)]
    w1, w2 = ds[(0, 9)]
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.equal(v1, v2)
    assert not torch.equal(v1, ds[(0, 10)][0])


def test_bad_augment_values_are_user_errors() -> None:
    with pytest.raises(UserError) as e:
        TwoViewAugment(16, AugmentConfig(crop_scale=[0.5, 0.2]))
    assert e.value.culprit == "data.augment.crop_scale"
    with pytest.raises(UserError) as e:
        TwoViewAugment(16, AugmentConfig(solarize_prob=[0.0, 1.5]))
    assert e.value.culprit == "data.augment.solarize_prob"
    with pytest.raises(UserError):
        PairAugment(8, 8, FlowAugmentConfig(hflip=2.0))


# ------------------------------------------------------------------------------ real samples
def test_real_sintel_and_kitti_pairs(shared_data: Path) -> None:
    sintel = shared_data / "sintel"
    frames = {
        p: [
            np.asarray(
                Image.open(sintel / "training" / p / "alley_1" / f"frame_000{k}.png").convert("RGB")
            )
            for k in (2, 3)
        ]
        for p in ("clean", "final")
    }
    ds = _flow_ds(
        [FlowSource("sintel", str(sintel))],
        height=436,
        width=1024,
        augment=FlowAugmentConfig(hflip=0.0),
    )
    assert len(ds) == 2
    for i, p in enumerate(("clean", "final")):
        item = ds[i]  # full-size crop, no flip: exactly frames 2 and 3
        for k, name in enumerate(("image1", "image2")):
            np.testing.assert_allclose(
                item[name].permute(1, 2, 0).numpy(), frames[p][k] / 255.0, atol=1e-6
            )
    kitti = shared_data / "kitti2015"
    kds = _flow_ds(
        [FlowSource("kitti-2015", str(kitti), repeat=4)],
        height=64,
        width=96,
        augment=FlowAugmentConfig(hflip=0.0),
    )
    assert len(kds) == 4
    f10, f11 = (
        np.asarray(
            Image.open(kitti / "training" / "image_2" / f"000000_{k}.png").convert("RGB")
        ).transpose(2, 0, 1)
        for k in (10, 11)
    )
    for key in range(3):
        item = kds[(key, key)]
        a1, a2 = (np.round(item[k].numpy() * 255).astype(np.uint8) for k in ("image1", "image2"))
        assert a1.shape == (3, 64, 96)
        # where does the crop come from? candidates share its top-left pixel, then full check
        first = np.all(f10[:, : 375 - 63, : 1242 - 95] == a1[:, :1, :1], axis=0)
        hits = [
            (t, x)
            for t, x in np.argwhere(first)
            if np.array_equal(f10[:, t : t + 64, x : x + 96], a1)
        ]
        assert len(hits) == 1
        t, x = hits[0]
        np.testing.assert_array_equal(f11[:, t : t + 64, x : x + 96], a2)  # same window of frame 11


def test_real_frames_and_video(shared_data: Path) -> None:
    video = shared_data / "video"
    ds = _flow_ds(
        [
            FlowSource("frames", str(video / "bedroom_frames")),
            FlowSource("video", str(video / "bedroom.mp4")),
        ],
        height=64,
        width=96,
        video_cache_mb=32,
    )  # the 540p clip is cached downscaled to fit 32 MB
    assert [r["items"] for r in ds.source_counts()] == [4, 199]
    cached = ds.sources[1].frames[0]
    assert cached.shape[0] == 200 and cached.numel() <= 32 * 2**20 * 1.05
    assert math.isclose(cached.shape[3] / cached.shape[2], 960 / 540, rel_tol=0.02)
    jpg = [np.asarray(Image.open(video / "bedroom_frames" / f"0000{k}.jpg")) for k in range(2)]
    src = ds.sources[0]
    f1, f2 = src.load(0)
    np.testing.assert_array_equal(f1.permute(1, 2, 0).numpy(), jpg[0])
    np.testing.assert_array_equal(f2.permute(1, 2, 0).numpy(), jpg[1])
    item = ds[(len(ds) - 1, 0)]
    assert item["image1"].shape == (3, 64, 96)


def test_resume_with_the_step_sampler_replays_the_same_batches(tmp_path: Path) -> None:
    from mcjepa_cli.engine.sampling import StepBatchSampler

    root = tmp_path / "imgs" / "c"
    rng = np.random.default_rng(4)
    for k in range(5):
        _save(root / f"{k}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    ds = build_image_dataset([ImageSource("imagefolder", str(root.parent))], crop_size=8, seed=1)

    def batches(start: int) -> list[torch.Tensor]:
        sampler = StepBatchSampler(len(ds), 3, seed=9, start_step=start, total_steps=6)
        return [v1 for v1, _ in DataLoader(ds, batch_sampler=sampler)]

    full, resumed = batches(0), batches(4)
    assert len(full) == 6 and len(resumed) == 2
    for a, b in zip(full[4:], resumed, strict=True):
        assert torch.equal(a, b)
    # 18 draws of 5 images: repeated images get new views (the key differs), not the same crop
    assert len({x.numpy().tobytes() for batch in full for x in batch}) == 18
