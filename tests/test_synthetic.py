"""Tests of the procedural synthetic world: determinism, sizes, exact flow, occlusion, labels."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from mcjepa_cli.data.synthetic import (
    NUM_CLASSES,
    SYNTHETIC_CLASS_NAMES,
    SyntheticClip,
    SyntheticConfig,
    SyntheticFlowPairs,
    SyntheticImages,
    SyntheticSegmentation,
    SyntheticVideos,
    SyntheticWorld,
)
from mcjepa_cli.errors import UserError

# photometric effects off: frame t+1 warped by the true flow must reproduce frame t
CLEAN = SyntheticConfig(lighting_change=0.0, noise_std=0.0, blur_prob=0.0)


def _warp_back(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward-warp img (C, H, W) by flow (2, H, W): out(x) = img(x + flow(x)), bilinear.

    Written with plain NumPy indexing, independent of the library's grid_sample code; the
    target is clamped to the image (the occlusion mask covers targets that leave it).
    """
    _, h, w = img.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    tx = np.clip(xs + flow[0], 0, w - 1)
    ty = np.clip(ys + flow[1], 0, h - 1)
    x0 = np.floor(tx).astype(np.int64)
    y0 = np.floor(ty).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = tx - x0
    wy = ty - y0
    return (
        img[:, y0, x0] * (1 - wx) * (1 - wy)
        + img[:, y0, x1] * wx * (1 - wy)
        + img[:, y1, x0] * (1 - wx) * wy
        + img[:, y1, x1] * wx * wy
    )


def _assert_clip_equal(a: SyntheticClip, b: SyntheticClip) -> None:
    for name in ("frames", "flow", "occlusion", "instances", "classes", "layer_classes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_class_names() -> None:
    assert NUM_CLASSES == len(SYNTHETIC_CLASS_NAMES)
    assert 6 <= NUM_CLASSES <= 10
    assert len(set(SYNTHETIC_CLASS_NAMES)) == NUM_CLASSES


def test_deterministic_and_independent_of_call_order_and_global_rng() -> None:
    a = SyntheticWorld(seed=7).clip(5, 3, 24, 32)
    world = SyntheticWorld(seed=7)
    for i in range(3):  # other clips first, and an advanced global RNG
        world.clip(i, 2, 24, 32)
    torch.rand(3)
    np.random.random(3)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    b = world.clip(5, 3, 24, 32)
    _assert_clip_equal(a, b)
    # the global RNGs are neither read nor advanced
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    # another index, another seed: other content
    assert not torch.equal(world.clip(6, 3, 24, 32).frames, a.frames)
    assert not torch.equal(SyntheticWorld(seed=8).clip(5, 3, 24, 32).frames, a.frames)


def test_bitwise_identical_across_thread_counts() -> None:
    """A DataLoader worker (1 thread) and the main process (N threads) render the same clip."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = SyntheticWorld(SyntheticConfig(blur_prob=1.0), seed=2).clip(1, 2, 128, 160)
        torch.set_num_threads(2)
        two = SyntheticWorld(SyntheticConfig(blur_prob=1.0), seed=2).clip(1, 2, 128, 160)
    finally:
        torch.set_num_threads(before)
    _assert_clip_equal(one, two)


@pytest.mark.parametrize("size", [(1, 1), (5, 9), (31, 47), (64, 33)])
@pytest.mark.parametrize("num_frames", [1, 2, 3])
def test_any_resolution_shapes_and_ranges(size: tuple[int, int], num_frames: int) -> None:
    h, w = size
    for index in range(3):
        clip = SyntheticWorld(seed=1).clip(index, num_frames, h, w)
        t = num_frames
        assert clip.frames.shape == (t, 3, h, w) and clip.frames.dtype == torch.float32
        assert clip.flow.shape == (t - 1, 2, h, w) and clip.flow.dtype == torch.float32
        assert clip.occlusion.shape == (t - 1, h, w) and clip.occlusion.dtype == torch.bool
        assert clip.instances.shape == (t, h, w) and clip.instances.dtype == torch.int64
        assert clip.classes.shape == (t, h, w) and clip.classes.dtype == torch.int64
        assert 0.0 <= float(clip.frames.min()) and float(clip.frames.max()) <= 1.0
        assert torch.isfinite(clip.flow).all()
        assert int(clip.classes.min()) >= 0 and int(clip.classes.max()) < NUM_CLASSES
        num_layers = len(clip.layer_classes)
        assert int(clip.instances.min()) >= 0 and int(clip.instances.max()) < num_layers


def test_flow_is_exact_for_unoccluded_pixels() -> None:
    """Warping frame t+1 back by the true flow reproduces frame t (photometrics off).

    The residual is only the bilinear re-interpolation of frame t+1: tiny next to the error
    of zero flow, and smaller than with the flow nudged by a quarter pixel or scaled by 10%
    (which a convention slip, e.g. a half-pixel offset, would not survive).
    """
    cfg = SyntheticConfig(
        lighting_change=0.0, noise_std=0.0, blur_prob=0.0, subpixel_fraction=0.0
    )
    world = SyntheticWorld(cfg, seed=3)
    nudges = {
        "+x": lambda f: f + np.array([0.25, 0.0])[:, None, None],
        "-x": lambda f: f - np.array([0.25, 0.0])[:, None, None],
        "+y": lambda f: f + np.array([0.0, 0.25])[:, None, None],
        "-y": lambda f: f - np.array([0.0, 0.25])[:, None, None],
        "x1.1": lambda f: f * 1.1,
        "x0.9": lambda f: f * 0.9,
    }
    errors: dict[str, list[float]] = {name: [] for name in ["true", "zero", *nudges]}
    for index in range(8):
        clip = world.clip(index, 3, 48, 64)
        frames = clip.frames.double().numpy()
        for t in range(2):
            keep = ~clip.occlusion[t].numpy()
            flow = clip.flow[t].double().numpy()

            def err(f: np.ndarray, t: int = t, keep: np.ndarray = keep) -> float:
                return float(np.abs(_warp_back(frames[t + 1], f) - frames[t]).mean(0)[keep].mean())

            errors["true"].append(err(flow))
            errors["zero"].append(err(np.zeros_like(flow)))
            for name, nudge in nudges.items():
                errors[name].append(err(nudge(flow)))
    e = {name: np.array(v) for name, v in errors.items()}
    assert e["true"].mean() < 0.25 * e["zero"].mean(), e
    assert (e["true"] < 0.5 * e["zero"]).all(), e
    for name in nudges:
        assert e[name].mean() > 1.15 * e["true"].mean(), (name, e)
        assert (e[name] > e["true"]).all(), (name, e)


def test_subpixel_motion_and_small_motion_exactness() -> None:
    """Sub-pixel motions stay under a pixel and their flow is still the best warp.

    For shifts this small the bilinear re-interpolation error is comparable to the motion's
    own, so the check is relative: the true flow beats zero flow and beats the true flow
    nudged by a quarter pixel in any direction.
    """
    cfg = SyntheticConfig(
        lighting_change=0.0, noise_std=0.0, blur_prob=0.0, subpixel_fraction=1.0
    )
    world = SyntheticWorld(cfg, seed=4)
    for index in range(6):
        clip = world.clip(index, 2, 40, 56)
        # each motion is under a pixel; the camera's and a layer's add up to at most two
        assert float(clip.flow.norm(dim=1).max()) < 2.0
        frames = clip.frames.double().numpy()
        keep = ~clip.occlusion[0].numpy()
        flow = clip.flow[0].double().numpy()

        def err(f: np.ndarray, frames: np.ndarray = frames, keep: np.ndarray = keep) -> float:
            return float(np.abs(_warp_back(frames[1], f) - frames[0]).mean(0)[keep].mean())

        best = err(flow)
        assert best < err(np.zeros_like(flow))
        for dx, dy in ((0.25, 0), (-0.25, 0), (0, 0.25), (0, -0.25)):
            assert best < err(flow + np.array([dx, dy], dtype=np.float64)[:, None, None])
    no_camera = SyntheticWorld(
        SyntheticConfig(subpixel_fraction=1.0, camera_motion=0.0), seed=4
    )
    for index in range(6):
        assert float(no_camera.clip(index, 2, 40, 56).flow.norm(dim=1).max()) < 1.0


def test_flow_is_one_affine_field_per_instance() -> None:
    """Within one layer the forward flow is affine in (x, y): a least-squares fit is exact."""
    world = SyntheticWorld(seed=5)
    checked = 0
    for index in range(4):
        clip = world.clip(index, 2, 40, 52)
        ys, xs = np.mgrid[0:40, 0:52]
        for k in torch.unique(clip.instances[0]).tolist():
            sel = (clip.instances[0] == k).numpy()
            if sel.sum() < 6:
                continue
            design = np.stack([xs[sel], ys[sel], np.ones(sel.sum())], 1).astype(np.float64)
            for c in range(2):
                target = clip.flow[0, c].double().numpy()[sel]
                coef, *_ = np.linalg.lstsq(design, target, rcond=None)
                assert np.abs(design @ coef - target).max() < 1e-3
            checked += 1
    assert checked >= 8


def test_occlusion_mask_is_consistent() -> None:
    world = SyntheticWorld(seed=6)
    agree, total, covered_hits, covered_total = 0, 0, 0, 0
    for index in range(10):
        clip = world.clip(index, 2, 48, 64)
        h, w = 48, 64
        flow = clip.flow[0].double().numpy()
        occ = clip.occlusion[0].numpy()
        ys, xs = np.mgrid[0:h, 0:w]
        tx, ty = xs + flow[0], ys + flow[1]
        outside = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
        assert occ[outside].all()  # targets leaving the image are occluded
        inst0 = clip.instances[0].numpy()
        inst1 = clip.instances[1].numpy()
        # the four pixels around each target in frame t+1
        x0 = np.clip(np.floor(tx), 0, w - 1).astype(int)
        y0 = np.clip(np.floor(ty), 0, h - 1).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        around = np.stack([inst1[y0, x0], inst1[y0, x1], inst1[y1, x0], inst1[y1, x1]])
        # unoccluded pixels land on their own layer
        visible = ~occ
        agree += (around == inst0[None]).any(0)[visible].sum()
        total += visible.sum()
        # a target surrounded by a nearer layer is occluded
        nearer = (around > inst0[None]).all(0) & ~outside
        covered_hits += occ[nearer].sum()
        covered_total += nearer.sum()
        assert 0 < occ.mean() < 0.5
    assert agree / total > 0.995
    assert covered_total > 20 and covered_hits / covered_total > 0.97


def test_instances_and_classes_follow_the_layers() -> None:
    world = SyntheticWorld(seed=9)
    for index in range(6):
        clip = world.clip(index, 4, 40, 48)
        lc = clip.layer_classes
        assert lc.dtype == torch.int64 and int(lc.min()) >= 0 and int(lc.max()) < NUM_CLASSES
        # a pixel's class is its layer's texture family, in every frame
        assert torch.equal(clip.classes, lc[clip.instances])
        # instance ids are stable: one class per id across the clip
        for k in torch.unique(clip.instances).tolist():
            assert torch.unique(clip.classes[clip.instances == k]).numel() == 1
    # background only: one instance, one class
    bg_only = SyntheticWorld(SyntheticConfig(min_layers=0, max_layers=0), seed=1)
    clip = bg_only.clip(0, 2, 20, 24)
    assert int(clip.instances.max()) == 0 and torch.unique(clip.classes).numel() == 1
    # layer counts respect the config, and all texture families occur
    cfg = SyntheticConfig(min_layers=3, max_layers=3)
    families = set()
    for index in range(12):
        clip = SyntheticWorld(cfg, seed=2).clip(index, 1, 32, 32)
        assert len(clip.layer_classes) == 4
        families.update(clip.layer_classes.tolist())
    assert families == set(range(NUM_CLASSES))


def _instance_hues(cfg: SyntheticConfig, n_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """(hue in turns, class) of every visible layer's mean colour over ``n_clips`` clips."""
    import colorsys

    world = SyntheticWorld(cfg, seed=11)
    hues, classes = [], []
    for index in range(n_clips):
        clip = world.clip(index, 1, 32, 40)
        for k, c in enumerate(clip.layer_classes.tolist()):
            sel = clip.instances[0] == k
            if sel.sum() >= 10:
                r, g, b = clip.frames[0][:, sel].mean(1).tolist()
                h, s, _ = colorsys.rgb_to_hsv(r, g, b)
                if s > 0.15:  # hue is meaningless for greys
                    hues.append(h)
                    classes.append(c)
    return np.array(hues), np.array(classes)


def _nearest_class_hue_accuracy(hues: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy of guessing the class as the one whose own hue (k / NUM_CLASSES) is nearest."""
    centres = np.arange(NUM_CLASSES) / NUM_CLASSES
    d = np.abs(hues[:, None] - centres[None])
    d = np.minimum(d, 1 - d)  # circular distance
    return float((d.argmin(1) == classes).mean())


def test_colour_tells_the_class_only_in_part() -> None:
    """Classes have their own colour statistics (hue about k/8 of the wheel) with wide jitter:
    colour alone beats chance (1/8) clearly but does not decide the class."""
    hues, classes = _instance_hues(SyntheticConfig(), 60)
    assert len(hues) >= 100
    acc = _nearest_class_hue_accuracy(hues, classes)
    assert 0.3 < acc < 0.8, acc
    # class_hue_spread >= 1: hues at random, colour says nothing about the class
    hues, classes = _instance_hues(SyntheticConfig(class_hue_spread=1.0), 60)
    assert _nearest_class_hue_accuracy(hues, classes) < 0.25


def test_class_shapes_and_colours_can_be_switched_off() -> None:
    """class_hue_spread >= 1 and class_shape_prob = 0 draw exactly what the world drew
    before classes had colours and outlines: the texture RNG stream is then untouched, so the
    same clip comes out whatever class_hue_spread above 1 is given."""
    def clip(spread: float) -> object:
        cfg = SyntheticConfig(class_hue_spread=spread, class_shape_prob=0.0)
        return SyntheticWorld(cfg, seed=3).clip(0, 2, 40, 48)

    a, b = clip(1.0), clip(5.0)
    c = SyntheticWorld(SyntheticConfig(), seed=3).clip(0, 2, 40, 48)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)


def test_long_clips_are_temporally_coherent() -> None:
    clip = SyntheticWorld(CLEAN, seed=12).clip(0, 5, 40, 52)
    frames = clip.frames.double().numpy()
    for t in range(4):
        keep = ~clip.occlusion[t].numpy()
        warped = _warp_back(frames[t + 1], clip.flow[t].double().numpy())
        err = np.abs(warped - frames[t]).mean(0)[keep].mean()
        zero = np.abs(frames[t + 1] - frames[t]).mean(0)[keep].mean()
        assert err < 0.5 * zero or zero < 1e-3
    # the same layers throughout
    ids = [set(torch.unique(clip.instances[t]).tolist()) for t in range(5)]
    assert len(set.intersection(*ids)) >= 2


def test_photometric_effects_change_frames_but_not_geometry() -> None:
    clean = SyntheticWorld(CLEAN, seed=13).clip(2, 2, 32, 40)
    full = SyntheticWorld(
        SyntheticConfig(lighting_change=0.2, noise_std=0.05, blur_prob=1.0), seed=13
    ).clip(2, 2, 32, 40)
    # same geometry (the photometric draws come last), different pixels
    assert torch.equal(clean.flow, full.flow) and torch.equal(clean.instances, full.instances)
    assert float((clean.frames - full.frames).abs().mean()) > 0.01


def test_datasets_items_and_splits() -> None:
    pairs = SyntheticFlowPairs(24, 30, length=5, seed=0)
    assert len(pairs) == 5
    item = pairs[1]
    assert set(item) == {"image1", "image2", "flow", "valid", "occlusion"}
    assert item["image1"].shape == (3, 24, 30) and item["image2"].shape == (3, 24, 30)
    assert item["flow"].shape == (2, 24, 30) and item["valid"].all()
    assert item["valid"].dtype == torch.bool and item["occlusion"].dtype == torch.bool
    again = SyntheticFlowPairs(24, 30, length=5, seed=0)[1]
    assert all(torch.equal(item[k], again[k]) for k in item)
    val = SyntheticFlowPairs(24, 30, length=5, seed=0, split="val")[1]
    assert not torch.equal(item["image1"], val["image1"])
    with pytest.raises(IndexError):
        pairs[5]

    images = SyntheticImages(20, 20, length=3, seed=0)
    assert len(images) == 3 and images[0].shape == (3, 20, 20)
    assert not torch.equal(images[0], SyntheticImages(20, 20, 3, seed=0, split="val")[0])

    seg = SyntheticSegmentation(20, 22, length=4, seed=0)
    s = seg[2]
    assert s["image"].shape == (3, 20, 22) and s["label"].shape == (20, 22)
    assert s["label"].dtype == torch.int64
    assert int(s["label"].min()) >= 0 and int(s["label"].max()) < NUM_CLASSES
    assert not (s["label"] == 255).any()

    with pytest.raises(UserError, match="split"):
        SyntheticFlowPairs(8, 8, length=1, split="test")


def test_videos_are_davis_like() -> None:
    videos = SyntheticVideos(num_sequences=3, num_frames=6, height=32, width=40, seed=0)
    assert len(videos) == 3
    for i in range(3):
        item = videos[i]
        assert item["name"] == f"synth_{i:03d}"
        frames, inst = item["frames"], item["instances"]
        assert frames.shape == (6, 3, 32, 40) and inst.shape == (6, 32, 40)
        assert inst.dtype == torch.int64
        k = int(inst.max())
        assert 1 <= k <= 4
        for t in range(6):
            counts = torch.bincount(inst[t].reshape(-1), minlength=k + 1)
            assert (counts[1:] >= 1).all()  # every object stays at least partly visible
        first = torch.bincount(inst[0].reshape(-1), minlength=k + 1)[1:]
        assert (first >= 0.005 * 32 * 40).all()
    again = SyntheticVideos(3, 6, 32, 40, seed=0)[1]
    assert torch.equal(again["frames"], videos[1]["frames"])


def test_bad_values_are_user_errors() -> None:
    with pytest.raises(UserError, match="data.synthetic.max_layers"):
        SyntheticConfig(min_layers=4, max_layers=2)
    with pytest.raises(UserError, match="data.synthetic.noise_std"):
        SyntheticConfig(noise_std=-0.1)
    with pytest.raises(UserError, match="data.synthetic.blur_prob"):
        SyntheticConfig(blur_prob=1.5)
    with pytest.raises(UserError, match="seed"):
        SyntheticWorld(seed=-1)
    with pytest.raises(UserError, match="height"):
        SyntheticWorld().clip(0, 2, 0, 10)


def test_throughput_is_reported() -> None:
    """Measured, not asserted (speed belongs to benchmarks): printed with ``pytest -s``."""
    pairs = SyntheticFlowPairs(128, 160, length=8, seed=0)
    images = SyntheticImages(96, 96, length=8, seed=0)
    pairs[0], images[0]  # warm-up
    start = time.perf_counter()
    for i in range(1, 8):
        assert pairs[i]["flow"].shape == (2, 128, 160)
    pair_rate = 7 / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(1, 8):
        assert images[i].shape == (3, 96, 96)
    image_rate = 7 / (time.perf_counter() - start)
    print(
        f"synthetic world: {pair_rate:.0f} pairs/s at 128x160, {image_rate:.0f} images/s at 96x96"
    )
