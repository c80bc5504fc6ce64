"""mIoU / pixel accuracy against an independent per-class loop (mmseg definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcjepa_cli.eval.seg_metrics import (
    ConfusionMeter,
    confusion_matrix,
    scores_from_confusion,
)


def naive_scores(preds, gts, num_classes, ignore=255):
    """Reference: explicit loops over classes and images, sums over the whole split."""
    inter = [0] * num_classes
    union = [0] * num_classes
    correct = 0
    labelled = 0
    for pred, gt in zip(preds, gts, strict=True):
        valid = gt != ignore
        for c in range(num_classes):
            in_gt = (gt == c) & valid
            in_pred = (pred == c) & valid
            inter[c] += int(np.logical_and(in_gt, in_pred).sum())
            union[c] += int(np.logical_or(in_gt, in_pred).sum())
        correct += int(((pred == gt) & valid).sum())
        labelled += int(valid.sum())
    ious = [inter[c] / union[c] if union[c] > 0 else None for c in range(num_classes)]
    present = [v for v in ious if v is not None]
    miou = sum(present) / len(present)
    return miou, correct / labelled, ious


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_matches_independent_loops(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    preds, gts = [], []
    meter = ConfusionMeter(num_classes)
    for _ in range(4):
        h, w = rng.integers(5, 30, size=2)
        # ground truth never uses classes 5 and 6; predictions never use class 6 -> class 6
        # has zero union (excluded), class 5 appears only in predictions (IoU 0).
        gt = rng.integers(0, 5, size=(h, w))
        gt[rng.random((h, w)) < 0.2] = 255
        pred = rng.integers(0, 6, size=(h, w))
        agree = rng.random((h, w)) < 0.5
        pred[agree & (gt != 255)] = gt[agree & (gt != 255)]
        preds.append(pred)
        gts.append(gt)
        meter.update(torch.from_numpy(pred), torch.from_numpy(gt))
    ref_miou, ref_acc, ref_ious = naive_scores(preds, gts, num_classes)
    s = meter.scores()
    assert s.miou == pytest.approx(ref_miou, abs=1e-12)
    assert s.pixel_acc == pytest.approx(ref_acc, abs=1e-12)
    for c in range(num_classes):
        if ref_ious[c] is None:
            assert math.isnan(s.iou[c])
        else:
            assert s.iou[c] == pytest.approx(ref_ious[c], abs=1e-12)
    assert math.isnan(s.iou[6]) and s.iou[5] == 0.0


def mmseg_style_scores(preds, gts, num_classes, ignore=255):
    """Second reference, written like mmseg's ``intersect_and_union``: per image, drop the
    ignored pixels, histogram (``np.bincount``) the agreeing predictions, the predictions and the
    labels, and sum the areas over the split. It shares no code with ``confusion_matrix``."""
    area_i = np.zeros(num_classes, dtype=np.int64)
    area_p = np.zeros(num_classes, dtype=np.int64)
    area_l = np.zeros(num_classes, dtype=np.int64)
    for pred, gt in zip(preds, gts, strict=True):
        keep = gt != ignore
        p, g = pred[keep].ravel(), gt[keep].ravel()
        area_i += np.bincount(p[p == g], minlength=num_classes)[:num_classes]
        area_p += np.bincount(p, minlength=num_classes)[:num_classes]
        area_l += np.bincount(g, minlength=num_classes)[:num_classes]
    union = area_p + area_l - area_i
    iou = np.full(num_classes, np.nan)
    iou[union > 0] = area_i[union > 0] / union[union > 0]
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: ground truth
    for pred, gt in zip(preds, gts, strict=True):
        keep = gt != ignore
        np.add.at(conf, (gt[keep], pred[keep]), 1)
    return float(np.nanmean(iou)), area_i.sum() / area_l.sum(), iou, conf


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_miou_matches_mmseg_style_bincount(seed):
    """Random label maps of different sizes with ignore pixels everywhere (including where the
    prediction is some class), a class only in the ground truth (never predicted, IoU 0), a class
    only predicted (IoU 0), a class in neither (left out of the mean) and one image that is
    entirely ignored."""
    rng = np.random.default_rng(seed)
    num_classes = 9
    only_gt, only_pred, absent = 6, 7, 8
    preds, gts = [], []
    meter = ConfusionMeter(num_classes)
    for k in range(5):
        h, w = rng.integers(3, 40, size=2)
        gt = rng.integers(0, 7, size=(h, w))  # 0..6: class 6 only ever in the ground truth
        pred = rng.choice([0, 1, 2, 3, 4, 5, 7], size=(h, w))  # 7 only ever predicted
        agree = rng.random((h, w)) < 0.6
        pred[agree & (gt != only_gt)] = gt[agree & (gt != only_gt)]
        gt[rng.random((h, w)) < 0.25] = 255
        if k == 2:
            gt[:] = 255  # an image with nothing labelled adds nothing
        preds.append(pred)
        gts.append(gt)
        meter.update(torch.from_numpy(pred), torch.from_numpy(gt))
    ref_miou, ref_acc, ref_iou, ref_conf = mmseg_style_scores(preds, gts, num_classes)
    s = meter.scores()
    assert np.array_equal(meter.matrix.numpy(), ref_conf)
    assert s.miou == pytest.approx(ref_miou, abs=1e-12)
    assert s.pixel_acc == pytest.approx(ref_acc, abs=1e-12)
    assert np.array_equal(np.isnan(s.iou), np.isnan(ref_iou))
    assert np.allclose(s.iou[~np.isnan(ref_iou)], ref_iou[~np.isnan(ref_iou)], rtol=0, atol=1e-12)
    assert s.iou[only_gt] == 0.0 and s.iou[only_pred] == 0.0 and math.isnan(s.iou[absent])
    # the absent class does not enter the mean; the two zero-IoU classes do
    present = [v for c, v in enumerate(s.iou) if c != absent]
    assert s.miou == pytest.approx(sum(present) / (num_classes - 1), abs=1e-12)
    # the same numbers from the matrix alone (the function segment_eval reports with)
    again = scores_from_confusion(ref_conf)
    assert again.miou == pytest.approx(ref_miou, abs=1e-12)


def test_split_accumulation_is_not_per_image_average():
    # image 1: class 0 perfect (1 px); image 2: class 0 mostly wrong (large). Pooled IoU differs
    # from the mean of per-image IoUs.
    gt1, pr1 = np.array([[0]]), np.array([[0]])
    gt2, pr2 = np.array([[0, 0, 0, 1]]), np.array([[1, 1, 0, 1]])
    meter = ConfusionMeter(2)
    meter.update(pr1, gt1)
    meter.update(pr2, gt2)
    s = meter.scores()
    # class 0: I = 1 + 1 = 2, U = 1 + 3 = 4; class 1: I = 1, U = 3
    assert s.iou[0] == pytest.approx(0.5)
    assert s.iou[1] == pytest.approx(1 / 3)
    assert s.miou == pytest.approx((0.5 + 1 / 3) / 2)
    assert s.pixel_acc == pytest.approx(3 / 5)


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    gt = np.array([[0, 255, 255], [1, 1, 255]])
    pred = np.array([[0, 1, 0], [1, 0, 1]])
    m = confusion_matrix(pred, gt, 2)
    assert m.tolist() == [[1, 0], [1, 1]]
    assert int(m.sum()) == 3


def test_confusion_matrix_layout_rows_are_ground_truth():
    m = confusion_matrix(torch.tensor([2, 2, 0]), torch.tensor([1, 2, 0]), 3)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[1, 2] = 1
    expected[2, 2] = 1
    expected[0, 0] = 1
    assert np.array_equal(m.numpy(), expected)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="sizes differ"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(np.zeros((2,)), np.array([0, 7]), 3)
    with pytest.raises(ValueError, match="predicted classes"):
        confusion_matrix(np.array([0, 9]), np.zeros((2,)), 3)


def test_empty_split_gives_nan():
    s = scores_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(s.miou) and math.isnan(s.pixel_acc)
