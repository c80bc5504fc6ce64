"""Optical-flow metrics as pure functions: EPE, 1/3/5 px accuracy and KITTI Fl-all (DESIGN.md 3.1).

Definitions, over the *valid* pixels of an image (the ground truth's validity mask):

* ``epe``: mean end-point error ``||pred - gt||_2`` in pixels;
* ``px1`` / ``px3`` / ``px5``: fraction in [0, 1] of pixels with ``EPE < 1 / 3 / 5``;
* ``fl_all``: percentage of outliers, pixels with ``EPE > 3`` **and** ``EPE / ||gt|| > 0.05``
  (the KITTI 2015 devkit's definition).

Two aggregations over a dataset:

* ``pooled`` (default): every valid pixel of the dataset counts once (KITTI devkit, mmflow);
* ``per-image``: the metric is computed per image, then averaged over images (the convention
  behind most published KITTI/Sintel *EPE* tables, the MC-JEPA paper's peers included).

Where an occlusion mask is given, the same metrics are also reported on the occluded valid
pixels (suffix ``_occ``, long form ``_occluded``) and on the non-occluded valid pixels
(``_noc``, long form ``_nonoccluded``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

AGGREGATIONS = ("pooled", "per-image")
PX_THRESHOLDS = (1.0, 3.0, 5.0)  # px1, px3, px5: EPE strictly below the threshold
FL_ABS_THRESHOLD = 3.0  # Fl outlier: EPE > 3 px ...
FL_REL_THRESHOLD = 0.05  # ... and EPE > 5 % of the ground-truth magnitude
SUBSETS = ("all", "occ", "noc")
_SUFFIX = {"all": "", "occ": "_occ", "noc": "_noc"}
_LONG_SUFFIX = {"occ": "_occluded", "noc": "_nonoccluded"}
METRIC_NAMES = ("epe", "px1", "px3", "px5", "fl_all")


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def endpoint_error(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-pixel end-point error ``||pred - gt||_2`` in float64.

    Args:
        pred: (..., 2) predicted flow.
        gt: (..., 2) ground-truth flow of the same shape.

    Returns:
        (...) float64 array.
    """
    p, g = _as_numpy(pred).astype(np.float64), _as_numpy(gt).astype(np.float64)
    if p.shape != g.shape or p.shape[-1] != 2:
        raise ValueError(f"expected two flows of one shape (..., 2), got {p.shape} and {g.shape}")
    return np.sqrt(((p - g) ** 2).sum(axis=-1))


@dataclass
class SubsetCounts:
    """Sufficient statistics of one pixel subset of one or more images."""

    n: int = 0  # valid pixels in the subset
    epe_sum: float = 0.0
    below: list[int] = field(default_factory=lambda: [0] * len(PX_THRESHOLDS))  # EPE < t
    outliers: int = 0  # Fl outliers

    def add(self, other: SubsetCounts) -> None:
        self.n += other.n
        self.epe_sum += other.epe_sum
        self.below = [a + b for a, b in zip(self.below, other.below)]
        self.outliers += other.outliers

    def metrics(self) -> dict[str, float] | None:
        """The five metrics of this subset, or None when it holds no pixel."""
        if self.n == 0:
            return None
        out = {"epe": self.epe_sum / self.n}
        for t, k in zip(PX_THRESHOLDS, self.below):
            out[f"px{int(t)}"] = k / self.n
        out["fl_all"] = 100.0 * self.outliers / self.n
        return out


def _subset_counts(epe: np.ndarray, mag: np.ndarray) -> SubsetCounts:
    """Counts over 1-D arrays of per-pixel EPE and ground-truth magnitude."""
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = epe / mag  # |gt| = 0 -> inf (or nan when EPE = 0, which fails EPE > 3 anyway)
    outliers = (epe > FL_ABS_THRESHOLD) & (relative > FL_REL_THRESHOLD)
    return SubsetCounts(
        n=int(epe.size),
        epe_sum=float(epe.sum()),
        below=[int((epe < t).sum()) for t in PX_THRESHOLDS],
        outliers=int(outliers.sum()),
    )


def image_stats(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
    occ: np.ndarray | torch.Tensor | None = None,
) -> dict[str, SubsetCounts]:
    """Sufficient statistics of one image.

    Args:
        pred: (H, W, 2) predicted flow.
        gt: (H, W, 2) ground-truth flow.
        valid: (H, W) bool, True where the ground truth is valid (default: every finite pixel).
            Pixels whose ground truth is non-finite are never counted.
        occ: optional (H, W) bool, True where the pixel is occluded.

    Returns:
        ``{"all": counts}``, plus ``"occ"`` and ``"noc"`` when ``occ`` is given.
    """
    p, g = _as_numpy(pred), _as_numpy(gt)
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape != g.shape:
        raise ValueError(
            f"expected pred and gt of one shape (H, W, 2), got {p.shape} and {g.shape}"
        )
    mask = np.isfinite(g).all(axis=-1)
    if valid is not None:
        v = _as_numpy(valid)
        if v.shape != mask.shape:
            raise ValueError(f"valid mask: expected shape {mask.shape}, got {v.shape}")
        mask &= v.astype(bool)
    occ_mask = None
    if occ is not None:
        occ_mask = _as_numpy(occ)
        if occ_mask.shape != mask.shape:
            raise ValueError(f"occlusion mask: expected shape {mask.shape}, got {occ_mask.shape}")
        occ_mask = occ_mask.astype(bool)[mask]  # (N,) over valid pixels
    pv = p[mask].astype(np.float64)  # (N, 2)
    gv = g[mask].astype(np.float64)  # (N, 2)
    epe = endpoint_error(pv, gv)  # (N,)
    mag = np.sqrt((gv**2).sum(axis=-1))  # (N,)
    stats = {"all": _subset_counts(epe, mag)}
    if occ_mask is not None:
        stats["occ"] = _subset_counts(epe[occ_mask], mag[occ_mask])
        stats["noc"] = _subset_counts(epe[~occ_mask], mag[~occ_mask])
    return stats


class FlowMetricAccumulator:
    """Accumulates flow metrics image by image; ``summary`` pools or averages per image.

    Usage::

        acc = FlowMetricAccumulator()
        for pred, gt, valid in pairs:  # (H, W, 2), (H, W, 2), (H, W)
            acc.update(pred, gt, valid)
        acc.summary("pooled")["epe"]
    """

    def __init__(self) -> None:
        self.pooled = {s: SubsetCounts() for s in SUBSETS}
        self.per_image: dict[str, list[dict[str, float]]] = {s: [] for s in SUBSETS}
        self.n_images = 0
        self.n_images_with_occ = 0

    def update(
        self,
        pred: np.ndarray | torch.Tensor,
        gt: np.ndarray | torch.Tensor,
        valid: np.ndarray | torch.Tensor | None = None,
        occ: np.ndarray | torch.Tensor | None = None,
    ) -> dict[str, SubsetCounts]:
        """Add one image (see ``image_stats`` for the arguments); returns its statistics."""
        stats = image_stats(pred, gt, valid, occ)
        self.add(stats)
        return stats

    def add(self, stats: dict[str, SubsetCounts]) -> None:
        """Add one image's precomputed statistics (lets one image feed several accumulators)."""
        self.n_images += 1
        if "occ" in stats:
            self.n_images_with_occ += 1
        for subset, counts in stats.items():
            self.pooled[subset].add(counts)
            m = counts.metrics()
            if m is not None:  # an image without pixels in a subset does not vote for it
                self.per_image[subset].append(m)

    def summary(self, aggregation: str = "pooled") -> dict[str, float | int | str | None]:
        """The metrics over everything added so far.

        Args:
            aggregation: ``pooled`` (every valid pixel counts once) or ``per-image`` (mean over
                images of each image's metric; images without valid pixels are skipped).

        Returns:
            ``epe``, ``px1``, ``px3``, ``px5``, ``fl_all`` (None when no pixel was valid),
            ``n_pixels``, ``n_images``, ``aggregation``; when every image came with an
            occlusion mask, the same metrics and ``n_pixels`` with suffixes ``_occ`` and
            ``_noc`` and their long forms ``_occluded`` / ``_nonoccluded``.
        """
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        subsets = ["all"]
        if self.n_images > 0 and self.n_images_with_occ == self.n_images:
            subsets += ["occ", "noc"]
        out: dict[str, float | int | str | None] = {}
        for subset in subsets:
            if aggregation == "pooled":
                metrics = self.pooled[subset].metrics()
            else:
                rows = self.per_image[subset]
                metrics = None
                if rows:
                    metrics = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}
            suffixes = [_SUFFIX[subset]]
            if subset in _LONG_SUFFIX:
                suffixes.append(_LONG_SUFFIX[subset])
            for suffix in suffixes:
                for k in METRIC_NAMES:
                    out[k + suffix] = None if metrics is None else float(metrics[k])
                out["n_pixels" + suffix] = self.pooled[subset].n
        out["n_images"] = self.n_images
        out["aggregation"] = aggregation
        return out


def describe_aggregation(aggregation: str) -> str:
    """One line saying how the numbers were aggregated, printed beside them."""
    if aggregation == "pooled":
        return (
            "pooled: every valid pixel of the dataset counts once (KITTI devkit / mmflow "
            "convention)"
        )
    if aggregation == "per-image":
        return (
            "per-image: metrics averaged over images (the convention of published KITTI EPE "
            "numbers, the MC-JEPA paper's included)"
        )
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


__all__ = [
    "AGGREGATIONS",
    "FlowMetricAccumulator",
    "SubsetCounts",
    "describe_aggregation",
    "endpoint_error",
    "image_stats",
]
