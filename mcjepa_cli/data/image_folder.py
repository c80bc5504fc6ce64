"""Still images for the content (VICReg) branch of pretraining: ImageFolder-layout folders
(ImageNet's ``train/<wnid>/*.JPEG``, labels ignored) and the synthetic world, mixed with
per-source repetition counts; each item is VICReg's pair of augmented views.

Items are tuples ``(view1, view2)`` of float (3, S, S) tensors in [0, 1] (the model normalises
its input itself).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mcjepa_cli.data.augment import AugmentConfig, TwoViewAugment
from mcjepa_cli.data.mixing import MixedDataset, PathTable, check_on_error
from mcjepa_cli.data.roots import resolve_root
from mcjepa_cli.data.sources import IMAGE_SOURCE_NAMES, ImageSource
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.images import IMAGE_EXTENSIONS, read_image

IMAGE_LAYOUT = (
    "<split>/<class>/<image> (ImageNet: train/n01440764/n01440764_10026.JPEG), "
    "<class>/<image>, or images directly in the folder"
)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan(base: Path) -> list[str]:
    """Image paths relative to ``base``: files in it, then in each immediate sub-folder."""
    rel: list[str] = []
    with os.scandir(base) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and _is_image_name(entry.name):
            rel.append(entry.name)
        elif entry.is_dir():
            with os.scandir(entry.path) as sub:
                names = sorted(e.name for e in sub if _is_image_name(e.name) and e.is_file())
            rel += [f"{entry.name}/{n}" for n in names]
    return rel


def _base_folder(root: Path, split: str | None) -> Path:
    return root / split if split and (root / split).is_dir() else root


def list_image_files(root: str | Path, split: str | None = "train") -> tuple[Path, list[Path]]:
    """The images of an ImageFolder-layout folder, labels ignored.

    The folder searched is ``root/<split>`` when it exists, else ``root`` itself; images directly
    in it and in its immediate sub-folders (one per class) are listed, sorted by folder then
    file name. Hidden files and folders are skipped.

    Returns:
        ``(folder searched, files)``.
    """
    base = _base_folder(Path(root), split)
    return base, [base / r for r in _scan(base)]


class ImageFileSource:
    """Image files; ``load`` gives RGB uint8 (3, H, W) (grey, RGBA, CMYK, 16-bit handled)."""

    scan_skipped = 0

    def __init__(self, name: str, base: Path, relative: Sequence[str]) -> None:
        self.name = name
        self.base = base
        self._files = PathTable(base, relative)

    def __len__(self) -> int:
        return len(self._files)

    def describe(self) -> str:
        return str(self.base)

    def file(self, index: int) -> Path:
        return self._files[index]

    def load(self, index: int) -> torch.Tensor:
        return read_image(self._files[index])  # UserError naming a corrupt file


class SyntheticImageSource:
    """Single frames of the procedural world (``SyntheticImages``), float (3, s, s)."""

    scan_skipped = 0

    def __init__(self, size: int, length: int, seed: int, cfg=None) -> None:
        from mcjepa_cli.data.synthetic import SyntheticImages

        self.name = "synthetic"
        self.dataset = SyntheticImages(size, size, length, seed=seed, split="train", cfg=cfg)

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self) -> str:
        return f"procedural world, {len(self)} images per epoch"

    def load(self, index: int) -> torch.Tensor:
        return self.dataset[index]


class TwoViewDataset(MixedDataset):
    """The mixed content dataset: items ``(view1, view2)`` float (3, S, S) in [0, 1]."""

    stream = 2


def build_image_source(
    src: ImageSource, *, seed: int, synthetic_cfg=None, key: str = "data.images[0]"
):
    """Build one image source from its recipe entry (``name``, ``root``, ``split``, ``length``,
    ``source_size``).

    Raises:
        UserError: unknown name, missing root, or no image found (naming the folder and layout).
    """
    name = str(src.name).lower()
    if name not in IMAGE_SOURCE_NAMES:
        raise UserError(
            f"{key}.name", f"expected one of {', '.join(IMAGE_SOURCE_NAMES)}, got {src.name!r}"
        )
    if name == "synthetic":
        return SyntheticImageSource(int(src.source_size), int(src.length), seed, synthetic_cfg)
    if name == "imagefolder" and not src.root:
        raise UserError(
            f"{key}.root", f"required for an imagefolder source: a folder holding {IMAGE_LAYOUT}"
        )
    root = resolve_root("imagenet", src.root, IMAGE_LAYOUT)
    base = _base_folder(root, src.split)
    relative = _scan(base)  # ImageNet: 1.28 M names, kept as strings, never as Path objects
    if not relative:
        raise UserError(
            base,
            f"no images found (expected {IMAGE_LAYOUT}; extensions {', '.join(IMAGE_EXTENSIONS)})",
        )
    return ImageFileSource(name, base, relative)


def build_image_dataset(
    sources: Sequence[ImageSource],
    *,
    crop_size: int,
    seed: int,
    on_error: str = "stop",
    augment_cfg: AugmentConfig | None = None,
    synthetic_cfg=None,
    key: str = "data.images",
) -> TwoViewDataset:
    """Build the mixed two-view dataset of the content (VICReg) branch.

    Args:
        sources: recipe entries, each repeated ``repeat`` times in the mix.
        crop_size: side of the square views (VICReg: 224; the quickstart uses 64-96).
        seed: seed of the per-sample augmentation randomness and of the synthetic world.
        on_error: ``stop`` (an unreadable image stops the run: ``UserError`` naming the file) or
            ``skip`` (replaced by the next image and counted in ``skipped()``).
        augment_cfg: VICReg's two-view augmentation parameters (their values when None).
        synthetic_cfg: ``SyntheticConfig`` for ``synthetic`` sources.
        key: recipe key of the list, quoted in error messages.

    Returns:
        A ``TwoViewDataset``; index it with the step sampler's ``(index, key)`` pairs for exactly
        resumable augmentation (see ``mcjepa_cli.data.mixing``).
    """
    check_on_error(on_error)
    if not sources:
        raise UserError(key, "expected at least one image source")
    built, repeats = [], []
    for i, src in enumerate(sources):
        k = f"{key}[{i}]"
        if isinstance(src.repeat, bool) or not isinstance(src.repeat, int) or src.repeat < 1:
            raise UserError(f"{k}.repeat", f"expected an integer >= 1, got {src.repeat!r}")
        repeats.append(src.repeat)
        built.append(build_image_source(src, seed=seed, synthetic_cfg=synthetic_cfg, key=k))
    return TwoViewDataset(
        built, repeats, TwoViewAugment(crop_size, augment_cfg), seed=seed, on_error=on_error
    )
