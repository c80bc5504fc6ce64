"""DAVIS J / F / statistics against independent computations (naive loops, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcjepa_cli.eval.davis_metrics import (
    boundary_map,
    boundary_tolerance,
    db_statistics,
    decay_bins,
    evaluate_sequence,
    f_measure,
    global_csv,
    global_results,
    jaccard,
    per_sequence_csv,
)


def box(h: int, w: int, y0: int, x0: int, bh: int, bw: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + bh, x0 : x0 + bw] = True
    return m


def naive_boundary(seg: np.ndarray) -> np.ndarray:
    """Pixel-by-pixel boundary rule of the toolkit's seg2bmap (written as a plain loop)."""
    h, w = seg.shape
    b = np.zeros((h, w), dtype=bool)

    def at(y: int, x: int) -> bool:
        return bool(seg[y, x]) if (y < h and x < w) else False

    for y in range(h):
        for x in range(w):
            v = bool(seg[y, x])
            if y == h - 1 and x == w - 1:
                b[y, x] = False
            elif y == h - 1:
                b[y, x] = v != at(y, x + 1)
            elif x == w - 1:
                b[y, x] = v != at(y + 1, x)
            else:
                b[y, x] = v != at(y, x + 1) or v != at(y + 1, x) or v != at(y + 1, x + 1)
    return b


def naive_f(gt: np.ndarray, pred: np.ndarray, r: int) -> float:
    """Boundary F by brute force: a boundary pixel matches when the other mask has a boundary
    pixel within Euclidean distance r (what dilation by a radius-r disk means)."""
    bg = np.argwhere(naive_boundary(gt)).astype(np.int64)
    bp = np.argwhere(naive_boundary(pred)).astype(np.int64)
    if len(bg) == 0 and len(bp) == 0:
        return 1.0
    if len(bg) == 0 or len(bp) == 0:
        return 0.0
    d2 = ((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1)  # (P, G) squared distances
    precision = float(np.mean((d2 <= r * r).any(axis=1)))
    recall = float(np.mean((d2 <= r * r).any(axis=0)))
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------- J


@pytest.mark.parametrize("dx", [0, 1, 3, 7, 12])
def test_jaccard_shifted_boxes_closed_form(dx: int) -> None:
    bh, bw = 10, 20
    gt = box(40, 60, 5, 10, bh, bw)
    pred = box(40, 60, 5, 10 + dx, bh, bw)
    inter = bh * max(0, bw - dx)
    union = 2 * bh * bw - inter
    assert jaccard(gt, pred) == pytest.approx(inter / union)


def test_jaccard_diagonal_shift_and_stack() -> None:
    gt = box(30, 30, 4, 4, 10, 10)
    pred = box(30, 30, 6, 7, 10, 10)  # overlap 8 x 7
    expected = 56 / (200 - 56)
    assert jaccard(gt, pred) == pytest.approx(expected)
    stacked = jaccard(np.stack([gt, gt]), np.stack([pred, gt]))
    np.testing.assert_allclose(stacked, [expected, 1.0])


def test_jaccard_empty_cases() -> None:
    empty = np.zeros((8, 9), dtype=bool)
    obj = box(8, 9, 2, 2, 3, 3)
    assert jaccard(empty, empty) == 1.0  # both empty: 1 by definition
    assert jaccard(obj, empty) == 0.0  # object missed entirely
    assert jaccard(empty, obj) == 0.0  # false positive on an absent object
    np.testing.assert_allclose(jaccard(np.stack([empty, obj]), np.stack([empty, obj])), [1.0, 1.0])


# ---------------------------------------------------------------------------------------- F


def test_boundary_map_matches_naive_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        seg = rng.random((13, 17)) > 0.6
        np.testing.assert_array_equal(boundary_map(seg), naive_boundary(seg))
    edge = np.zeros((6, 7), dtype=bool)
    edge[2:, 3:] = True  # touches the bottom and right borders
    np.testing.assert_array_equal(boundary_map(edge), naive_boundary(edge))


def test_tolerance_is_ceil_of_diagonal_fraction() -> None:
    assert boundary_tolerance((480, 854)) == math.ceil(0.008 * math.hypot(480, 854)) == 8
    assert boundary_tolerance((100, 100)) == math.ceil(0.008 * math.hypot(100, 100)) == 2
    assert boundary_tolerance((50, 60), bound_th=3) == 3  # >= 1 means pixels, as the toolkit


@pytest.mark.parametrize("r", [1, 2, 3])
def test_f_shift_inside_and_just_outside_tolerance(r: int) -> None:
    gt = box(40, 50, 8, 10, 15, 20)
    inside = box(40, 50, 8, 10 + r, 15, 20)  # every boundary pixel moved by exactly r
    outside = box(40, 50, 8, 10 + r + 1, 15, 20)
    assert f_measure(gt, inside, bound_th=r) == pytest.approx(1.0)
    assert naive_f(gt, inside, r) == pytest.approx(1.0)
    f_out = f_measure(gt, outside, bound_th=r)
    assert f_out < 1.0
    assert f_out == pytest.approx(naive_f(gt, outside, r))


def test_f_default_tolerance_at_davis_resolution() -> None:
    h, w = 480, 854  # tolerance ceil(0.008 * 979.6) = 8 px
    gt = box(h, w, 100, 200, 120, 160)
    assert f_measure(gt, box(h, w, 100, 208, 120, 160)) == pytest.approx(1.0)
    assert f_measure(gt, box(h, w, 108, 200, 120, 160)) == pytest.approx(1.0)
    shifted = box(h, w, 100, 209, 120, 160)
    f9 = f_measure(gt, shifted)
    assert f9 < 1.0
    assert f9 == pytest.approx(naive_f(gt, shifted, 8))


def test_f_random_shapes_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:36, :44]
    for _ in range(4):
        cy, cx, rad = rng.uniform(10, 26), rng.uniform(10, 34), rng.uniform(4, 9)
        gt = (yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2
        dy, dx = rng.uniform(-4, 4, size=2)
        pred = (yy - cy - dy) ** 2 / 1.3 + (xx - cx - dx) ** 2 <= rad**2  # shifted ellipse
        r = int(rng.integers(1, 4))
        assert f_measure(gt, pred, bound_th=r) == pytest.approx(naive_f(gt, pred, r))


@pytest.mark.parametrize("r", [0, 1, 3, 8])
def test_disk_dilation_equals_the_toolkits_structuring_element(r: int) -> None:
    morphology = pytest.importorskip("skimage.morphology")
    from scipy import ndimage

    from mcjepa_cli.eval.davis_metrics import _dilate_disk

    rng = np.random.default_rng(r)
    for density in (0.002, 0.02):
        mask = rng.random((41, 57)) < density
        mask[0, 3] = mask[40, 56] = True  # reach the borders
        ref = ndimage.binary_dilation(mask, structure=morphology.disk(r).astype(bool))
        np.testing.assert_array_equal(_dilate_disk(mask, r), ref)


def test_f_empty_cases() -> None:
    empty = np.zeros((30, 40), dtype=bool)
    obj = box(30, 40, 5, 5, 8, 8)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(obj, empty) == 0.0  # empty prediction: precision 1, recall 0
    assert f_measure(empty, obj) == 0.0  # prediction on an absent object: precision 0


# ---------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("n", "bins"),
    [
        # ids = round(linspace(1, n, 5) + 1e-10) - 1, worked by hand; bin i = [ids[i], ids[i+1]]
        (1, [(0, 1)] * 4),
        (3, [(0, 2), (1, 2), (1, 3), (2, 3)]),  # linspace 1,1.5,2,2.5,3 -> 1,2,2,3,3
        (4, [(0, 2), (1, 3), (2, 3), (2, 4)]),  # 1,1.75,2.5,3.25,4 -> 1,2,3,3,4
        (10, [(0, 3), (2, 6), (5, 8), (7, 10)]),  # 1,3.25,5.5,7.75,10 -> 1,3,6,8,10
        (100, [(0, 26), (25, 51), (50, 75), (74, 100)]),  # 1,25.75,50.5,75.25,100
    ],
)
def test_decay_bins_hand_computed(n: int, bins: list[tuple[int, int]]) -> None:
    assert decay_bins(n) == bins


def test_statistics_short_and_long_sequences() -> None:
    v4 = np.array([0.9, 0.7, 0.4, 0.2])
    m, rec, d = db_statistics(v4)
    assert m == pytest.approx(0.55)
    assert rec == pytest.approx(0.5)  # 0.9 and 0.7 are > 0.5
    assert d == pytest.approx((0.9 + 0.7) / 2 - (0.4 + 0.2) / 2)
    assert db_statistics([0.8]) == pytest.approx((0.8, 1.0, 0.0))
    v = np.linspace(1.0, 0.0, 100)
    m, rec, d = db_statistics(v)
    assert m == pytest.approx(0.5)
    assert rec == pytest.approx(50 / 100)  # values > 0.5: the first 50 (0.5 itself excluded)
    assert d == pytest.approx(v[0:26].mean() - v[74:100].mean())
    assert db_statistics(np.array([0.6, 0.5, 0.5000001]))[1] == pytest.approx(2 / 3)


def test_sequence_scoring_excludes_first_and_last_and_treats_void_as_background() -> None:
    t, h, w = 6, 24, 32
    gt = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 4:12, 4:12] = 1
    gt[:, 14:20, 18:28] = 2
    gt[:, 0:2, :] = 255  # void band: the toolkit counts it as background
    pred = np.where(gt == 255, 0, gt).astype(np.uint8)
    pred[0] = 0  # first and last frames are never scored
    pred[-1] = 0
    pred[3][pred[3] == 2] = 0  # object 2 missed in one scored frame
    scores = evaluate_sequence("seq", gt, pred)
    assert [s.name for s in scores] == ["seq_1", "seq_2"]
    np.testing.assert_allclose(scores[0].j, np.ones(4))
    np.testing.assert_allclose(scores[1].j, [1, 1, 0, 1])
    np.testing.assert_allclose(scores[1].f, [1, 1, 0, 1])
    pred_void = pred.copy()
    pred_void[1:-1, 0:2, 4:12] = 1  # predicting object 1 on void pixels is penalised
    j1 = evaluate_sequence("seq", gt, pred_void)[0].j
    assert j1[0] == pytest.approx(64 / (64 + 16))
    with pytest.raises(ValueError, match="object id 3"):
        evaluate_sequence("seq", gt, np.full_like(pred, 3))


def test_global_numbers_and_csv_text() -> None:
    t, h, w = 5, 20, 20
    gt = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 2:8, 2:8] = 1
    gt[:, 10:18, 10:18] = 2
    pred = gt.copy()
    pred[1:-1][:, 10:18, 10:18] = 0  # object 2 never found: J = F = 0 on the scored frames
    scores = evaluate_sequence("s", gt, pred)
    res = global_results(scores)
    assert res["J-Mean"] == pytest.approx(0.5)
    assert res["F-Mean"] == pytest.approx(0.5)
    assert res["J&F-Mean"] == pytest.approx(0.5)
    assert res["J-Recall"] == pytest.approx(0.5)
    assert res["J-Decay"] == pytest.approx(0.0)
    assert global_csv(res).splitlines() == [
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay",
        "0.500,0.500,0.500,0.000,0.500,0.500,0.000",
    ]
    assert per_sequence_csv(scores).splitlines() == [
        "Sequence,J-Mean,F-Mean", "s_1,1.000,1.000", "s_2,0.000,0.000",
    ]
