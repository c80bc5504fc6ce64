"""Build the two pretraining datasets (frame pairs, two-view images) from a recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from mcjepa_cli.config import Recipe


class _PairImagesOnly(Dataset):
    """Keeps only ``image1`` / ``image2`` of a flow dataset's items (labels are not used)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.keyed_items = _is_keyed(ds)

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: Any) -> dict[str, Any]:
        item = self.ds[i]
        return {"image1": item["image1"], "image2": item["image2"]}


def _is_keyed(ds: Dataset) -> bool:
    from mcjepa_cli.data.mixing import MixedDataset

    return isinstance(ds, MixedDataset) or bool(getattr(ds, "keyed_items", False))


@dataclass
class DataStats:
    """Counters the trainer logs (samples skipped under ``data.on_error: skip``)."""

    datasets: list[Any] = field(default_factory=list)

    def skipped(self) -> int:
        total = 0
        for ds in self.datasets:
            fn = getattr(ds, "skipped", None)
            total += int(fn() if callable(fn) else fn or 0)
        return total


def build_pretrain_datasets(recipe: Recipe) -> tuple[Dataset | None, Dataset | None, DataStats]:
    """(frame-pair dataset or None, two-view image dataset or None, counters)."""
    from mcjepa_cli.data.flow_pairs import build_flow_pair_dataset
    from mcjepa_cli.data.image_folder import build_image_dataset

    d = recipe.data
    stats = DataStats()
    flow_ds = None
    if d.flow:
        h, w = d.flow_size
        flow_ds = _PairImagesOnly(build_flow_pair_dataset(
            d.flow, height=h, width=w, seed=recipe.train.seed, on_error=d.on_error,
            augment=d.flow_augment, synthetic_cfg=d.synthetic, video_cache_mb=d.video_cache_mb))
        stats.datasets.append(flow_ds.ds)
    image_ds = None
    if recipe.model.content and d.images:
        image_ds = build_image_dataset(
            d.images, crop_size=d.image_size, seed=recipe.train.seed, on_error=d.on_error,
            augment_cfg=d.augment, synthetic_cfg=d.synthetic)
        image_ds.keyed_items = _is_keyed(image_ds)
        stats.datasets.append(image_ds)
    return flow_ds, image_ds, stats


__all__ = ["ConcatDataset", "DataStats", "build_pretrain_datasets"]
