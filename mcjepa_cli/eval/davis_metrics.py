"""DAVIS 2017 semi-supervised metrics, exactly as the official davis2017-evaluation toolkit.

Reference: github.com/davisvideochallenge/davis2017-evaluation (``davis2017/metrics.py``,
``davis2017/utils.py``, ``davis2017/evaluation.py``, ``davis2017/davis.py``); Perazzi et al.,
"A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation", CVPR 2016.

Per object and per frame:
- **J** (region similarity) = |pred & gt| / |pred | gt|, and 1 when both masks are empty.
- **F** (contour accuracy) = boundary F-measure: each mask's one-pixel boundary is extracted
  with the toolkit's ``seg2bmap`` rule, dilated by a disk of radius
  ``ceil(0.008 * image diagonal)`` (``skimage.morphology.disk``); precision = fraction of the
  predicted boundary inside the dilated ground-truth boundary, recall = the converse.
Per object over a sequence (the first and last frames are not scored): Mean, Recall (fraction of
frames with a value > 0.5) and Decay (mean of the first quarter bin minus mean of the last, with
the toolkit's overlapping bins). Global numbers are means over all objects of all sequences;
J&F-Mean = (J-Mean + F-Mean) / 2.

Toolkit quirks reproduced on purpose (they change numbers):
- void pixels (255) of the ground truth count as background: ``DAVIS.get_all_masks`` maps 255 to
  0 before the void mask is taken, so the toolkit's void mask is always empty;
- the number of objects of a sequence is the largest id in its first ground-truth frame.
Deliberate differences (no effect on valid DAVIS results): a prediction that never shows some
object scores that object as empty (the toolkit stops with an error), and Decay bin indices are
plain integers where the toolkit's uint8 cast would wrap beyond 256 scored frames.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

GLOBAL_COLUMNS: tuple[str, ...] = (
    "J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay",
)
SEQUENCE_COLUMNS: tuple[str, ...] = ("Sequence", "J-Mean", "F-Mean")
BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal (toolkit default)


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray | float:
    """Region similarity J (IoU) of binary masks, 1 where both are empty (``db_eval_iou``).

    Args:
        gt: ground-truth mask(s), (H, W) or (T, H, W), any dtype (non-zero = object).
        pred: predicted mask(s), same shape.

    Returns:
        A float for (H, W) inputs, else a (T,) float array.
    """
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape} vs prediction {pred.shape}")
    inter = np.sum(gt & pred, axis=(-2, -1))
    union = np.sum(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union.astype(np.float64)
    j = np.where(union == 0, 1.0, j)
    return float(j) if j.ndim == 0 else j


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask (the toolkit's ``_seg2bmap`` at full size).

    A pixel is on the boundary when it differs from its east, south or south-east neighbour
    (neighbours outside the image count as background); on the last row only the east
    neighbour is compared, on the last column only the south one, and the bottom-right pixel
    is never a boundary. The boundary lies half a pixel towards the origin from the real edge.

    Args:
        seg: (H, W) mask, non-zero = object.

    Returns:
        (H, W) bool boundary map.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {seg.shape}")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Boundary tolerance in pixels: ``bound_th`` when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(np.asarray(shape[-2:], dtype=np.float64))))


def _dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``mask`` by ``skimage.morphology.disk(radius)``, as the toolkit's
    ``cv2.dilate(mask, disk(radius))`` (the border adds nothing).

    disk(r) holds the offsets with dy^2 + dx^2 <= r^2, so a pixel is in the dilation exactly
    when its Euclidean distance to the nearest mask pixel is <= r; the exact distance
    transform gives that faster than sliding the (2r+1)^2 disk. The sqrt of an integer d^2
    compared with an integer r is exact in floating point. Only the bounding box of the mask
    widened by r is processed: nothing outside it can be reached.
    """
    out = np.zeros_like(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return out
    h, w = mask.shape
    y0, y1 = max(0, int(ys.min()) - radius), min(h, int(ys.max()) + radius + 1)
    x0, x1 = max(0, int(xs.min()) - radius), min(w, int(xs.max()) + radius + 1)
    crop = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = ndimage.distance_transform_edt(~crop) <= radius
    return out


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of one binary prediction against one binary ground truth.

    Args:
        gt: (H, W) ground-truth mask.
        pred: (H, W) predicted mask.
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1).

    Returns:
        F in [0, 1]. Empty prediction and empty ground truth give 1; exactly one of them empty
        gives 0 (precision/recall conventions of the toolkit).
    """
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape} vs prediction {pred.shape}")
    radius = boundary_tolerance(gt.shape, bound_th)
    fg_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    n_fg = int(fg_b.sum())
    n_gt = int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision 1 / recall 0, or precision 0 / recall 1: F = 0 either way
    fg_dil = _dilate_disk(fg_b, radius)
    gt_dil = _dilate_disk(gt_b, radius)
    precision = float(np.sum(fg_b & gt_dil)) / n_fg
    recall = float(np.sum(gt_b & fg_dil)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> np.ndarray | float:
    """``f_measure`` over (H, W) or (T, H, W) masks (``db_eval_boundary``)."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape} vs prediction {pred.shape}")
    if gt.ndim == 2:
        return f_measure(gt, pred, bound_th)
    if gt.ndim == 3:
        values = [f_measure(g, p, bound_th) for g, p in zip(gt, pred, strict=True)]
        return np.array(values, dtype=np.float64)
    raise ValueError(f"expected (H, W) or (T, H, W) masks, got shape {gt.shape}")


def decay_bins(n: int) -> list[tuple[int, int]]:
    """The toolkit's 4 Decay bins over ``n`` per-frame values, as [start, stop) index pairs.

    ``ids = round(linspace(1, n, 5) + 1e-10) - 1``; bin i = values[ids[i] : ids[i+1] + 1]
    (neighbouring bins share their edge frame). The toolkit casts ``ids`` to uint8, which
    wraps for sequences longer than 256 scored frames; plain integers are used here (no DAVIS
    sequence comes close).
    """
    if n < 1:
        return [(0, 0)] * 4
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(ids[i]), int(ids[i + 1]) + 1) for i in range(4)]


def db_statistics(per_frame: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall (fraction > 0.5) and Decay of one object's per-frame J or F values.

    Args:
        per_frame: (T,) values of the scored frames (first and last frames already removed).

    Returns:
        (mean, recall, decay); NaN values are ignored by the means as in the toolkit.
    """
    v = np.asarray(per_frame, dtype=np.float64).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v)) if v.size else math.nan
        recall = float(np.nanmean(v > 0.5)) if v.size else math.nan
        bins = [v[a:b] for a, b in decay_bins(v.size)]
        first = float(np.nanmean(bins[0])) if bins[0].size else math.nan
        last = float(np.nanmean(bins[3])) if bins[3].size else math.nan
    return mean, recall, first - last


def split_objects(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """(T, H, W) or (H, W) index maps -> (N, ...) bool masks for object ids 1..num_objects."""
    labels = np.asarray(labels)
    ids = np.arange(1, num_objects + 1).reshape((-1,) + (1,) * labels.ndim)
    return labels[None] == ids


@dataclass
class ObjectScore:
    """Per-frame J and F of one object of one sequence, and their statistics."""

    name: str  # "<sequence>_<object id>", as in the toolkit's per-sequence CSV
    j: np.ndarray  # (T,) per scored frame
    f: np.ndarray  # (T,)
    j_stats: tuple[float, float, float] = field(init=False)  # (mean, recall, decay)
    f_stats: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.j_stats = db_statistics(self.j)
        self.f_stats = db_statistics(self.f)


def evaluate_sequence(
    name: str,
    gt: np.ndarray,
    pred: np.ndarray,
    num_objects: int | None = None,
    bound_th: float = BOUND_TH,
) -> list[ObjectScore]:
    """Score one sequence's predictions per object, as the toolkit's semi-supervised task.

    Args:
        name: sequence name (objects are reported as ``<name>_<id>``).
        gt: (T, H, W) ground-truth index maps of *every* frame (255 = void, counted as
            background as the toolkit does).
        pred: (T, H, W) predicted index maps of every frame, or (T - 2, H, W) for the scored
            frames only; values 1..num_objects are objects, 0 background.
        num_objects: objects to score; default = the largest id in the first ground-truth frame.
        bound_th: boundary tolerance (fraction of the diagonal, or pixels when >= 1).

    Returns:
        One ``ObjectScore`` per object id 1..num_objects (frames 1..T-2 scored).

    Raises:
        ValueError: fewer than 3 frames, mismatching shapes, or a predicted id above
            ``num_objects``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3 or gt.shape[0] < 3:
        raise ValueError(f"{name}: need (T, H, W) ground truth with T >= 3, got shape {gt.shape}")
    gt = np.where(gt == 255, 0, gt)  # void -> background, as davis2017 DAVIS.get_all_masks
    if num_objects is None:
        num_objects = int(gt[0].max())
    gt = gt[1:-1]
    if pred.shape[0] == gt.shape[0] + 2:
        pred = pred[1:-1]
    if pred.shape != gt.shape:
        raise ValueError(
            f"{name}: prediction shape {pred.shape} does not match ground truth {gt.shape}"
        )
    if pred.size and int(pred.max()) > num_objects:
        raise ValueError(f"{name}: predicted object id {int(pred.max())} > {num_objects} objects")
    scores = []
    for k in range(1, num_objects + 1):
        g = gt == k
        p = pred == k
        j = np.atleast_1d(jaccard(g, p))
        scores.append(ObjectScore(f"{name}_{k}", j, boundary_f(g, p, bound_th)))
    return scores


def global_results(scores: Sequence[ObjectScore]) -> dict[str, float]:
    """Global DAVIS numbers (means over all objects) keyed by the toolkit's CSV column names."""
    if not scores:
        raise ValueError("no objects to average")
    jm, jr, jd = (float(np.mean([s.j_stats[i] for s in scores])) for i in range(3))
    fm, fr, fd = (float(np.mean([s.f_stats[i] for s in scores])) for i in range(3))
    values = ((jm + fm) / 2.0, jm, jr, jd, fm, fr, fd)
    return dict(zip(GLOBAL_COLUMNS, values, strict=True))


def global_csv(results: dict[str, float]) -> str:
    """The toolkit's ``global_results-<subset>.csv`` text (3 decimals)."""
    header = ",".join(GLOBAL_COLUMNS)
    row = ",".join(f"{results[c]:.3f}" for c in GLOBAL_COLUMNS)
    return f"{header}\n{row}\n"


def per_sequence_csv(scores: Sequence[ObjectScore]) -> str:
    """The toolkit's ``per-sequence_results-<subset>.csv`` text: one row per object."""
    lines = [",".join(SEQUENCE_COLUMNS)]
    lines += [f"{s.name},{s.j_stats[0]:.3f},{s.f_stats[0]:.3f}" for s in scores]
    return "\n".join(lines) + "\n"
