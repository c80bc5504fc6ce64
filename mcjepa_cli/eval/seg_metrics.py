"""Semantic-segmentation metrics over a whole split: confusion matrix, per-class IoU, mIoU.

Definitions follow mmsegmentation (the toolkit VICRegL and MC-JEPA report with): intersection
and union per class are summed over every pixel of the split (not averaged per image), pixels
labelled ``ignore_index`` (255) are left out, IoU_c = I_c / U_c, and mIoU is the mean over the
classes whose union is non-zero (a class absent from both prediction and ground truth does not
count). Pixel accuracy is correct / labelled pixels over the split (mmseg's ``aAcc``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = 255


def confusion_matrix(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Count (ground truth, prediction) pairs over the labelled pixels.

    Args:
        pred: predicted class indices, any shape, values in [0, num_classes).
        target: ground-truth indices, same shape, values in [0, num_classes) or ``ignore_index``.
        num_classes: number of classes C.
        ignore_index: label of pixels that are left out.

    Returns:
        (C, C) int64 tensor ``m`` with ``m[t, p]`` = number of pixels of class t predicted as p.

    Raises:
        ValueError: shapes differ, or a value lies outside its range.
    """
    pred_t = torch.as_tensor(pred).reshape(-1).long()
    target_t = torch.as_tensor(target).reshape(-1).long()
    if pred_t.shape != target_t.shape:
        raise ValueError(
            f"prediction and target sizes differ: {tuple(torch.as_tensor(pred).shape)} vs "
            f"{tuple(torch.as_tensor(target).shape)}"
        )
    keep = target_t != ignore_index
    pred_t, target_t = pred_t[keep], target_t[keep]
    if target_t.numel():
        if int(target_t.min()) < 0 or int(target_t.max()) >= num_classes:
            raise ValueError(
                f"target values must lie in [0, {num_classes}) or equal {ignore_index}, got "
                f"[{int(target_t.min())}, {int(target_t.max())}]"
            )
        if int(pred_t.min()) < 0 or int(pred_t.max()) >= num_classes:
            raise ValueError(
                f"predicted classes must lie in [0, {num_classes}), got "
                f"[{int(pred_t.min())}, {int(pred_t.max())}]"
            )
    flat = target_t * num_classes + pred_t  # (N,) index into the flattened C x C matrix
    counts = torch.bincount(flat.cpu(), minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


@dataclass
class SegScores:
    """Scores of one split.

    Attributes:
        miou: mean IoU over classes with non-zero union (NaN when no class has any pixel).
        pixel_acc: correctly classified / labelled pixels (NaN when nothing is labelled).
        iou: per-class IoU, NaN for classes with zero union, shape (C,).
        acc: per-class accuracy (recall) I_c / |gt_c|, NaN for classes without ground truth.
        intersection: per-class intersection counts, shape (C,).
        union: per-class union counts, shape (C,).
        labelled_pixels: number of non-ignored pixels.
    """

    miou: float
    pixel_acc: float
    iou: np.ndarray
    acc: np.ndarray
    intersection: np.ndarray
    union: np.ndarray
    labelled_pixels: int


def scores_from_confusion(conf: torch.Tensor | np.ndarray) -> SegScores:
    """Per-class IoU, mIoU and pixel accuracy from a (C, C) confusion matrix (gt rows)."""
    m = np.asarray(torch.as_tensor(conf).cpu().numpy(), dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {m.shape}")
    intersection = np.diag(m)  # (C,)
    gt_count = m.sum(axis=1)  # (C,) pixels of each ground-truth class
    pred_count = m.sum(axis=0)  # (C,) pixels predicted as each class
    union = gt_count + pred_count - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
        acc = np.where(gt_count > 0, intersection / np.maximum(gt_count, 1), np.nan)
    present = union > 0
    miou = float(iou[present].mean()) if present.any() else math.nan
    total = float(m.sum())
    pixel_acc = float(intersection.sum() / total) if total > 0 else math.nan
    return SegScores(
        miou=miou, pixel_acc=pixel_acc, iou=iou, acc=acc,
        intersection=intersection.astype(np.int64), union=union.astype(np.int64),
        labelled_pixels=int(total),
    )


class ConfusionMeter:
    """Accumulates a confusion matrix over a split, one prediction at a time.

    Args:
        num_classes: number of classes C.
        ignore_index: label of pixels that are left out.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one prediction / ground-truth pair (any matching shapes)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def scores(self) -> SegScores:
        """Scores of everything added so far."""
        return scores_from_confusion(self.matrix)
