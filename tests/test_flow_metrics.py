"""Flow metrics against an independent per-pixel NumPy computation, in both aggregations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcjepa_cli.eval.flow_metrics import FlowMetricAccumulator, describe_aggregation, image_stats

METRICS = ("epe", "px1", "px3", "px5", "fl_all")


def _naive_image(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float] | None:
    """Per-pixel loop, straight from the definitions (DESIGN.md 3.1)."""
    errors, outliers = [], 0
    h, w = valid.shape
    for y in range(h):
        for x in range(w):
            if not valid[y, x]:
                continue
            du = float(pred[y, x, 0]) - float(gt[y, x, 0])
            dv = float(pred[y, x, 1]) - float(gt[y, x, 1])
            e = math.hypot(du, dv)
            mag = math.hypot(float(gt[y, x, 0]), float(gt[y, x, 1]))
            if e > 3.0 and (mag == 0.0 or e / mag > 0.05):
                outliers += 1
            errors.append(e)
    if not errors:
        return None
    n = len(errors)
    return {
        "epe": sum(errors) / n,
        "px1": sum(e < 1 for e in errors) / n,
        "px3": sum(e < 3 for e in errors) / n,
        "px5": sum(e < 5 for e in errors) / n,
        "fl_all": 100.0 * outliers / n,
        "n": n,
        "sums": (sum(errors), sum(e < 1 for e in errors), sum(e < 3 for e in errors),
                 sum(e < 5 for e in errors), outliers),
    }


def _naive_dataset(images: list[tuple], mask_of, aggregation: str) -> dict[str, float] | None:
    per = [_naive_image(p, g, mask_of(v, o)) for p, g, v, o in images]
    per = [r for r in per if r is not None]
    if not per:
        return None
    if aggregation == "per-image":
        return {k: float(np.mean([r[k] for r in per])) for k in METRICS}
    n = sum(r["n"] for r in per)
    s = [sum(r["sums"][i] for r in per) for i in range(5)]
    return {"epe": s[0] / n, "px1": s[1] / n, "px3": s[2] / n, "px5": s[3] / n,
            "fl_all": 100 * s[4] / n}


def _random_images(seed: int, n: int = 5) -> list[tuple]:
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        h, w = rng.integers(3, 9), rng.integers(3, 11)
        gt = (rng.normal(size=(h, w, 2)) * rng.uniform(0.5, 20)).astype(np.float32)
        gt[rng.random((h, w)) < 0.1] = 0.0  # some zero-magnitude ground truth
        pred = (gt + rng.normal(size=(h, w, 2)) * rng.uniform(0.2, 6)).astype(np.float32)
        valid = rng.random((h, w)) > 0.25
        if k == 2:
            valid[:] = False  # an image without valid pixels
        occ = rng.random((h, w)) > 0.7
        images.append((pred, gt, valid, occ))
    return images


@pytest.mark.parametrize("aggregation", ["pooled", "per-image"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_naive_numpy(seed: int, aggregation: str) -> None:
    images = _random_images(seed)
    acc = FlowMetricAccumulator()
    for pred, gt, valid, occ in images:
        acc.update(pred, gt, valid, occ)
    out = acc.summary(aggregation)
    subsets = {
        "": lambda v, o: v,
        "_occ": lambda v, o: v & o,
        "_noc": lambda v, o: v & ~o,
        "_occluded": lambda v, o: v & o,
        "_nonoccluded": lambda v, o: v & ~o,
    }
    for suffix, mask_of in subsets.items():
        ref = _naive_dataset(images, mask_of, aggregation)
        assert ref is not None
        for k in ("epe", "px1", "px3", "px5", "fl_all"):
            assert out[k + suffix] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), (k + suffix)
        assert out["n_pixels" + suffix] == sum(int(mask_of(v, o).sum()) for _, _, v, o in images)
    assert out["aggregation"] == aggregation
    assert out["n_images"] == len(images)
    assert 0.0 <= out["px1"] <= out["px3"] <= out["px5"] <= 1.0


def test_thresholds_are_strict_and_fl_uses_both_conditions() -> None:
    gt = np.zeros((1, 5, 2), np.float32)
    gt[0, :, 0] = [0.0, 10.0, 100.0, 0.0, 59.0]
    pred = gt.copy()
    pred[0, 0, 0] += 1.0  # EPE exactly 1: not < 1
    pred[0, 1, 1] += 3.0  # EPE exactly 3: not < 3, not > 3 -> no outlier
    pred[0, 2, 1] += 4.0  # EPE 4 > 3 but 4/100 = 4% < 5% -> no outlier
    pred[0, 3, 0] += 3.5  # |gt| = 0, EPE 3.5 -> outlier
    pred[0, 4, 1] += 5.0  # EPE 5: not < 5; 5/59 > 5% -> outlier
    acc = FlowMetricAccumulator()
    acc.update(torch.from_numpy(pred), torch.from_numpy(gt))  # tensors are accepted too
    out = acc.summary()
    assert out["epe"] == pytest.approx((1 + 3 + 4 + 3.5 + 5) / 5)
    assert out["px1"] == 0.0
    assert out["px3"] == pytest.approx(1 / 5)
    assert out["px5"] == pytest.approx(4 / 5)
    assert out["fl_all"] == pytest.approx(100 * 2 / 5)
    assert "epe_occ" not in out  # no occlusion mask, no split


def test_pooled_and_per_image_differ_as_defined() -> None:
    acc = FlowMetricAccumulator()
    gt = np.zeros((2, 2, 2), np.float32)
    acc.update(gt + 1.0, gt)  # 4 pixels of EPE sqrt(2)
    gt1 = np.zeros((1, 1, 2), np.float32)
    acc.update(gt1 + np.float32([3.0, 4.0]), gt1)  # 1 pixel of EPE 5
    assert acc.summary("pooled")["epe"] == pytest.approx((4 * math.sqrt(2) + 5) / 5)
    assert acc.summary("per-image")["epe"] == pytest.approx((math.sqrt(2) + 5) / 2)
    assert acc.summary("pooled")["n_pixels"] == acc.summary("per-image")["n_pixels"] == 5


def test_non_finite_ground_truth_is_never_counted_and_empty_is_none() -> None:
    gt = np.array([[[np.nan, 0.0], [1.0, 1.0]]], np.float32)
    stats = image_stats(np.zeros_like(gt), gt)
    assert stats["all"].n == 1
    acc = FlowMetricAccumulator()
    acc.update(np.zeros_like(gt), gt, valid=np.zeros((1, 2), bool))
    out = acc.summary("per-image")
    assert out["epe"] is None and out["n_pixels"] == 0


def test_split_keys_need_masks_on_every_image_and_bad_inputs_raise() -> None:
    acc = FlowMetricAccumulator()
    z = np.zeros((2, 2, 2), np.float32)
    acc.update(z, z, occ=np.ones((2, 2), bool))
    acc.update(z, z)
    assert "epe_occ" not in acc.summary()
    with pytest.raises(ValueError, match="aggregation"):
        acc.summary("mean")
    with pytest.raises(ValueError, match="shape"):
        image_stats(np.zeros((2, 2, 2)), np.zeros((2, 3, 2)))
    assert "per-image" in describe_aggregation("per-image")
