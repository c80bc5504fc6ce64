"""Semantic-segmentation datasets on their own layouts (VOC 2012, Cityscapes, ADE20K, synthetic).

Every dataset yields ``(image, label, name)``: image an RGB uint8 tensor (3, H, W), label an
int64 tensor (H, W) of *training* class indices in [0, C) with 255 = ignore, already mapped
from the file's own encoding (Cityscapes labelIds -> 19 trainIds, ADE20K 0 -> 255 and
1..150 -> 0..149). A label value outside the dataset's range raises ``UserError`` naming the
file. The training augmentation (mmsegmentation's random resize, ``cat_max_ratio`` crop, flip,
pad) and the test-time rescale used by the linear protocol (DESIGN.md 3.2) live here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from mcjepa_cli.data.roots import resolve_root
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.images import read_image, read_label_png

IGNORE_INDEX = 255
DATASETS = ("voc", "cityscapes", "ade20k", "synthetic")

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

CITYSCAPES_CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# Cityscapes labelIds (0..33, cityscapesScripts' labels.py) -> trainIds; ids without a trainId
# (unlabeled, ego vehicle, ..., guard rail, bridge, tunnel, polegroup, caravan, trailer) -> 255.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 (license plate, id -1, is never drawn)

# ADE20K SceneParsing (ADEChallengeData2016) 150 classes, in the order of annotation values
# 1..150 (objectInfo150; mmsegmentation's ADE20KDataset uses the same names).
ADE20K_CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


@dataclass(frozen=True)
class SegProtocol:
    """Per-dataset defaults of the linear protocol (VICRegL's mmsegmentation configs).

    Attributes:
        crop: training crop / sliding-window size (H, W).
        scale: mmseg ``img_scale`` (long side, short side) at which a crop of ``crop`` is taken;
            None = the images' own size (synthetic world).
        steps: training iterations (mmseg ``schedule_40k`` / ``schedule_160k``).
    """

    crop: tuple[int, int]
    scale: tuple[int, int] | None
    steps: int


PROTOCOLS: dict[str, SegProtocol] = {
    # linear_cnxt-*_512x512_40k_BN_voc12aug.py: Resize img_scale (2048, 512), crop 512, 40k iters
    "voc": SegProtocol(crop=(512, 512), scale=(2048, 512), steps=40_000),
    # mmseg cityscapes.py: img_scale (2048, 1024), crop 512x1024, 40k iters (linear_r50_..._40k)
    "cityscapes": SegProtocol(crop=(512, 1024), scale=(2048, 1024), steps=40_000),
    # linear_cnxt-*_512x512_160k_BN_ade20k.py: img_scale (2048, 512), crop 512, 160k iters
    "ade20k": SegProtocol(crop=(512, 512), scale=(2048, 512), steps=160_000),
    # no public protocol: native-size images, crops of the full image height
    "synthetic": SegProtocol(crop=(128, 128), scale=None, steps=4_000),
}


class SegmentationFiles(Dataset):
    """A list of (image file, label file) pairs with a dataset-specific label decoding.

    Args:
        items: (image path, label path, name) triples.
        num_classes: number of training classes C.
        class_names: C names.
        label_lut: a 256-entry lookup table raw value -> training id (255 = ignore,
            -1 = invalid value).
        valid_raw: human-readable range of accepted raw values, for error messages.
    """

    def __init__(
        self,
        items: Sequence[tuple[Path, Path, str]],
        num_classes: int,
        class_names: Sequence[str],
        label_lut: np.ndarray,
        valid_raw: str,
    ) -> None:
        self.items = list(items)
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names)
        self.label_lut = label_lut
        self.valid_raw = valid_raw

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        """The id of item ``index`` (what ``__getitem__`` returns third), without reading it."""
        return self.items[index][2]

    def decoding(self, path: Path) -> tuple[np.ndarray, str]:
        """The lookup table raw value -> training id for ``path`` and its valid raw range."""
        return self.label_lut, self.valid_raw

    def read_label(self, path: Path) -> torch.Tensor:
        """Read and decode one label file into training ids (H, W) int64."""
        lut, valid = self.decoding(path)
        raw = read_label_png(path)
        if raw.min(initial=0) < 0 or raw.max(initial=0) > 255:
            raise UserError(path, f"label values must lie in {valid}, got "
                                  f"[{raw.min()}, {raw.max()}]")
        mapped = lut[raw.astype(np.int64)]  # (H, W) training ids, -1 = invalid raw value
        if (mapped < 0).any():
            bad = np.unique(raw[mapped < 0])
            shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
            raise UserError(path, f"label values must lie in {valid}, found {shown}")
        return torch.from_numpy(mapped)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        img_path, label_path, name = self.items[index]
        image = read_image(img_path)  # (3, H, W) uint8
        label = self.read_label(label_path)  # (H, W) int64
        if tuple(image.shape[-2:]) != tuple(label.shape):
            raise UserError(label_path, f"label size {tuple(label.shape)} differs from its image "
                                        f"{img_path.name} {tuple(image.shape[-2:])}")
        return image, label, name


@dataclass
class SegSplits:
    """A dataset's training and evaluation splits with their class names.

    Attributes:
        name: dataset key (``voc``, ``cityscapes``, ``ade20k``, ``synthetic``).
        train: training split (yields image, label, name).
        val: evaluation split.
        split: name of the evaluation split.
        class_names: the C class names.
        notes: warnings worth printing (e.g. a missing split file and what was used instead).
        root: the dataset's own folder (None for the rendered synthetic set); no output may be
            written in it.
        missing_split_files: split files that were absent, so that every annotated image was
            used for that split instead (VOC); the training and evaluation splits then overlap.
    """

    name: str
    train: Dataset
    val: Dataset
    split: str
    class_names: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    root: Path | None = None
    missing_split_files: list[Path] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def item_names(ds: Dataset) -> list[str]:
    """The ids of a split's items, in order (``Subset`` s included), without reading images.

    Datasets without a ``name(index)`` method are read item by item (their third value).
    """
    if isinstance(ds, Subset):
        inner = item_names(ds.dataset)
        return [inner[i] for i in ds.indices]
    name = getattr(ds, "name", None)
    if callable(name):
        return [name(i) for i in range(len(ds))]
    return [str(ds[i][2]) for i in range(len(ds))]


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise UserError(path, f"folder not found: expected {what}")


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(path, f"cannot read split file ({e.__class__.__name__})") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _identity_lut(num_classes: int) -> np.ndarray:
    lut = np.full(256, -1, dtype=np.int64)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def voc_splits(root: Path, split: str = "val") -> SegSplits:
    """Pascal VOC 2012 segmentation, 21 classes; ``root`` holds ``JPEGImages/``.

    Training ids: ``ImageSets/Segmentation/train.txt``; when ``SegmentationClassAug/`` exists
    (the SBD-augmented "trainaug" set) its ids are added (from ``aug.txt``, ``train_aug.txt`` or
    ``trainaug.txt`` when present, else every PNG in it), minus the evaluation ids; an id's
    label is read from ``SegmentationClass/`` when it is there, else from
    ``SegmentationClassAug/``. Evaluation ids: ``ImageSets/Segmentation/<split>.txt``. When a
    split file is missing, every image of ``SegmentationClass/`` is used for that split, a
    note says so and ``missing_split_files`` lists the file (the two splits then overlap:
    ``segment_eval`` refuses to score such a split without ``allow_train_eval_overlap``).
    """
    jpeg = root / "JPEGImages"
    cls_dir = root / "SegmentationClass"
    aug_dir = root / "SegmentationClassAug"
    _require_dir(jpeg, "VOC2012/JPEGImages (pass --root pointing at the VOC2012 folder)")
    if not cls_dir.is_dir() and not aug_dir.is_dir():
        raise UserError(cls_dir, "folder not found: expected VOC2012/SegmentationClass "
                                 "(or SegmentationClassAug)")
    sets = root / "ImageSets" / "Segmentation"
    notes: list[str] = []
    missing: list[Path] = []

    def listing(split_name: str) -> list[str]:
        f = sets / f"{split_name}.txt"
        if f.is_file():
            return _read_ids(f)
        folder = cls_dir if cls_dir.is_dir() else aug_dir
        ids = sorted(p.stem for p in folder.glob("*.png"))
        notes.append(f"{f} not found: using all {len(ids)} annotated images of {folder.name}/ "
                     f"as the {split_name} split")
        missing.append(f)
        return ids

    val_ids = listing(split)
    train_ids = listing("train") if (sets / "train.txt").is_file() or not aug_dir.is_dir() else []
    if aug_dir.is_dir():
        aug_list = next((sets / n for n in ("aug.txt", "train_aug.txt", "trainaug.txt")
                         if (sets / n).is_file()), None)
        aug_ids = _read_ids(aug_list) if aug_list else sorted(p.stem for p in aug_dir.glob("*.png"))
        held_out = set(val_ids)
        seen = set(train_ids)
        train_ids = train_ids + [i for i in aug_ids if i not in seen and i not in held_out]

    def items(ids: list[str], allow_aug: bool) -> list[tuple[Path, Path, str]]:
        out = []
        for i in ids:
            img = jpeg / f"{i}.jpg"
            lab = cls_dir / f"{i}.png"
            if allow_aug and not lab.is_file() and (aug_dir / f"{i}.png").is_file():
                lab = aug_dir / f"{i}.png"
            for p in (img, lab):
                if not p.is_file():
                    raise UserError(p, f"file not found (listed in the VOC {split} or train split)")
            out.append((img, lab, i))
        return out

    lut = _identity_lut(len(VOC_CLASS_NAMES))
    valid = "0..20 or 255"
    train = SegmentationFiles(items(train_ids, True), 21, VOC_CLASS_NAMES, lut, valid)
    val = SegmentationFiles(items(val_ids, False), 21, VOC_CLASS_NAMES, lut, valid)
    return SegSplits("voc", train, val, split, VOC_CLASS_NAMES, notes,
                     missing_split_files=missing)


def cityscapes_lut() -> np.ndarray:
    """256-entry lookup table Cityscapes labelId -> trainId (255 ignore, -1 invalid value)."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[:CITYSCAPES_NUM_LABEL_IDS] = IGNORE_INDEX
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


class CityscapesFiles(SegmentationFiles):
    """Cityscapes pairs; each label file is decoded by its suffix (labelTrainIds or labelIds)."""

    def decoding(self, path: Path) -> tuple[np.ndarray, str]:
        if path.name.endswith("_labelTrainIds.png"):
            return _identity_lut(len(CITYSCAPES_CLASS_NAMES)), "0..18 or 255 (labelTrainIds)"
        return cityscapes_lut(), f"0..{CITYSCAPES_NUM_LABEL_IDS - 1} (labelIds)"


def _cityscapes_split(root: Path, split: str) -> SegmentationFiles:
    img_root = root / "leftImg8bit" / split
    gt_root = root / "gtFine" / split
    _require_dir(img_root, f"Cityscapes leftImg8bit/{split}/<city>/*_leftImg8bit.png")
    _require_dir(gt_root, f"Cityscapes gtFine/{split}/<city>/*_gtFine_labelIds.png")
    images = sorted(img_root.glob("*/*_leftImg8bit.png"))
    if not images:
        raise UserError(img_root, "no <city>/*_leftImg8bit.png images found")
    items = []
    for img in images:
        stem = img.name[: -len("_leftImg8bit.png")]
        folder = gt_root / img.parent.name
        train_ids = folder / f"{stem}_gtFine_labelTrainIds.png"
        label_ids = folder / f"{stem}_gtFine_labelIds.png"
        if train_ids.is_file():  # precomputed trainIds (cityscapesScripts) when present
            items.append((img, train_ids, stem))
        elif label_ids.is_file():
            items.append((img, label_ids, stem))
        else:
            raise UserError(label_ids, f"file not found (the ground truth of "
                                       f"{img.parent.name}/{img.name})")
    return CityscapesFiles(items, 19, CITYSCAPES_CLASS_NAMES, cityscapes_lut(), "0..33")


def cityscapes_splits(root: Path, split: str = "val") -> SegSplits:
    """Cityscapes fine annotations, 19 trainIds; ``root`` holds ``leftImg8bit/`` and ``gtFine/``.

    An image's ``*_gtFine_labelTrainIds.png`` is used when present, else its
    ``*_gtFine_labelIds.png`` is mapped to trainIds here (``CITYSCAPES_ID_TO_TRAIN_ID``).
    """
    return SegSplits("cityscapes", _cityscapes_split(root, "train"), _cityscapes_split(root, split),
                     split, CITYSCAPES_CLASS_NAMES)


def ade20k_lut() -> np.ndarray:
    """256-entry lookup table ADE20K value -> training id: 0 -> 255, 1..150 -> 0..149."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[0] = IGNORE_INDEX
    lut[1:151] = np.arange(150)
    return lut


def _ade20k_split(root: Path, folder: str) -> SegmentationFiles:
    img_root = root / "images" / folder
    ann_root = root / "annotations" / folder
    _require_dir(img_root, f"ADEChallengeData2016/images/{folder}/*.jpg")
    _require_dir(ann_root, f"ADEChallengeData2016/annotations/{folder}/*.png")
    images = sorted(img_root.glob("*.jpg"))
    if not images:
        raise UserError(img_root, "no *.jpg images found")
    items = []
    for img in images:
        lab = ann_root / f"{img.stem}.png"
        if not lab.is_file():
            raise UserError(lab, f"file not found (the annotation of {img.name})")
        items.append((img, lab, img.stem))
    return SegmentationFiles(items, 150, ADE20K_CLASS_NAMES, ade20k_lut(), "0..150")


def ade20k_splits(root: Path, split: str = "val") -> SegSplits:
    """ADE20K SceneParsing, 150 classes; ``root`` = ``ADEChallengeData2016/`` (``images/``,
    ``annotations/``)."""
    folder = {"train": "training", "val": "validation", "training": "training",
              "validation": "validation"}.get(split)
    if folder is None:
        raise UserError(f"--split {split}", "expected val or train for ade20k")
    return SegSplits("ade20k", _ade20k_split(root, "training"), _ade20k_split(root, folder),
                     split, ADE20K_CLASS_NAMES)


class SyntheticSegmentationSet(Dataset):
    """The synthetic world's class maps (texture families) as (uint8 image, label, name).

    Args:
        num_images: number of images.
        height: image height.
        width: image width.
        split: ``train`` or ``val`` (disjoint seed streams of the world).
        seed: world seed.
    """

    def __init__(self, num_images: int, height: int, width: int, split: str, seed: int = 0) -> None:
        from mcjepa_cli.data.synthetic import SYNTHETIC_CLASS_NAMES, SyntheticSegmentation

        self.inner = SyntheticSegmentation(height, width, num_images, seed=seed, split=split)
        self.class_names = tuple(SYNTHETIC_CLASS_NAMES)
        self.split = split

    def __len__(self) -> int:
        return len(self.inner)

    def name(self, index: int) -> str:
        """The id of item ``index``: its seed stream and index (train and val ids differ)."""
        return f"synthetic_{self.split}_{index:05d}"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        item = self.inner[index]
        image = (item["image"].clamp(0, 1) * 255).round().to(torch.uint8)  # (3, H, W)
        return image, item["label"].long(), self.name(index)


def synthetic_splits(
    num_train: int = 1024, num_val: int = 256, size: tuple[int, int] = (128, 160), seed: int = 0,
) -> SegSplits:
    """Synthetic world segmentation: the world's ``train`` and ``val`` seed streams."""
    h, w = size
    train = SyntheticSegmentationSet(num_train, h, w, "train", seed)
    val = SyntheticSegmentationSet(num_val, h, w, "val", seed)
    return SegSplits("synthetic", train, val, "val", train.class_names)


def build_seg_splits(
    dataset: str,
    root: str | Path | None = None,
    split: str = "val",
    *,
    synthetic_train: int = 1024,
    synthetic_val: int = 256,
    synthetic_size: tuple[int, int] = (128, 160),
    seed: int = 0,
) -> SegSplits:
    """Open a segmentation dataset by key.

    Args:
        dataset: ``voc``, ``cityscapes``, ``ade20k`` or ``synthetic``.
        root: the dataset's own folder (``--root``); None = ``$MCJEPA_DATA/<Name>``.
        split: evaluation split (``val``; ``train`` to score the training set).
        synthetic_train: synthetic training images.
        synthetic_val: synthetic evaluation images.
        synthetic_size: synthetic image size (H, W).
        seed: synthetic world seed.

    Raises:
        UserError: unknown dataset, missing folder or wrong layout.
    """
    key = dataset.lower()
    if key == "synthetic":
        return synthetic_splits(synthetic_train, synthetic_val, synthetic_size, seed)
    if split not in ("val", "train", "training", "validation"):
        raise UserError(f"--split {split}", "expected val or train")
    if key == "voc":
        path = resolve_root("voc", root, "JPEGImages/ and SegmentationClass/")
        splits = voc_splits(path, split)
    elif key == "cityscapes":
        path = resolve_root("cityscapes", root, "leftImg8bit/ and gtFine/")
        splits = cityscapes_splits(path, "train" if split == "training" else
                                   "val" if split == "validation" else split)
    elif key == "ade20k":
        path = resolve_root("ade20k", root, "images/ and annotations/")
        splits = ade20k_splits(path, split)
    else:
        raise UserError(f"--dataset {dataset}", f"expected one of {', '.join(DATASETS)}")
    splits.root = path
    return splits


# ----------------------------------------------------------------------------------------------
# Geometry: mmsegmentation's Resize (keep ratio), RandomCrop (cat_max_ratio), RandomFlip, Pad.


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Size after a keep-ratio rescale into ``scale`` = (long side, short side) (mmcv imrescale)."""
    long_side, short_side = max(scale), min(scale)
    factor = min(long_side / max(h, w), short_side / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def resize_pair(
    image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize a uint8 image (3, H, W) bilinearly and its label (H, W) by nearest neighbour."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    img = img[0].round().clamp_(0, 255).to(torch.uint8)
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img, label


# mmseg pads *normalised* images with 0, i.e. with the ImageNet mean colour; so do we (uint8).
PAD_RGB = (124, 116, 104)


def pad_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pad a (..., 3, H, W) image at the bottom/right to ``size`` with the ImageNet mean colour."""
    h, w = image.shape[-2:]
    ph, pw = size[0] - h, size[1] - w
    if ph <= 0 and pw <= 0:
        return image
    out = torch.empty((*image.shape[:-2], max(h, size[0]), max(w, size[1])), dtype=image.dtype,
                      device=image.device)
    scale = 1.0 if image.dtype == torch.uint8 else 1.0 / 255.0
    for c in range(3):
        out[..., c, :, :] = PAD_RGB[c] * scale
    out[..., :h, :w] = image
    return out


def random_crop_box(
    label: torch.Tensor, crop: tuple[int, int], cat_max_ratio: float, generator: torch.Generator,
    ignore_index: int = IGNORE_INDEX, tries: int = 10,
) -> tuple[int, int]:
    """Top-left corner of a random crop; retried (up to ``tries``) while one class fills more
    than ``cat_max_ratio`` of its labelled pixels (mmseg's RandomCrop)."""
    h, w = label.shape
    ch, cw = crop
    y = x = 0
    for _ in range(tries if cat_max_ratio < 1.0 else 1):
        y = int(torch.randint(0, max(h - ch, 0) + 1, (1,), generator=generator))
        x = int(torch.randint(0, max(w - cw, 0) + 1, (1,), generator=generator))
        window = label[y : y + ch, x : x + cw]
        counts = torch.bincount(window[window != ignore_index].reshape(-1))
        counts = counts[counts > 0]
        if counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio:
            break
    return y, x


def augment_pair(
    image: torch.Tensor,
    label: torch.Tensor,
    crop: tuple[int, int],
    scale: tuple[int, int] | None,
    generator: torch.Generator,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training view: random rescale, crop, horizontal flip, pad (mmseg's train pipeline).

    Args:
        image: (3, H, W) uint8.
        label: (H, W) int64 training ids with 255 = ignore.
        crop: output size (H, W); smaller results are padded (mean colour, label 255).
        scale: (long, short) rescale target before the ratio; None = the image's own size.
        generator: random source.
        ratio_range: the rescale target is multiplied by a ratio drawn uniformly from it.
        cat_max_ratio: a crop in which one class covers more than this share is redrawn.
        flip_prob: probability of a horizontal flip.

    Returns:
        (3, crop_h, crop_w) uint8 image and (crop_h, crop_w) int64 label.
    """
    h, w = label.shape
    lo, hi = ratio_range
    ratio = lo + (hi - lo) * float(torch.rand((), generator=generator))
    base = scale if scale is not None else (max(h, w), min(h, w))
    target = (int(base[0] * ratio), int(base[1] * ratio))
    image, label = resize_pair(image, label, rescale_size(h, w, target))
    y, x = random_crop_box(label, crop, cat_max_ratio, generator)
    image = image[:, y : y + crop[0], x : x + crop[1]]
    label = label[y : y + crop[0], x : x + crop[1]]
    if float(torch.rand((), generator=generator)) < flip_prob:
        image, label = image.flip(-1), label.flip(-1)
    ph, pw = crop[0] - label.shape[0], crop[1] - label.shape[1]
    if ph > 0 or pw > 0:
        image = pad_image(image, crop)
        label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
    return image.contiguous(), label.contiguous()


def eval_size(h: int, w: int, scale: tuple[int, int] | None) -> tuple[int, int]:
    """Evaluation resolution of an (h, w) image: keep-ratio rescale into ``scale`` (or as is)."""
    return (h, w) if scale is None else rescale_size(h, w, scale)


def scaled_protocol_scale(protocol: SegProtocol, crop: tuple[int, int]) -> tuple[int, int] | None:
    """``protocol.scale`` shrunk or grown with the crop, so that a smaller crop (CPU preset)
    sees the same share of the image as the protocol's crop does."""
    if protocol.scale is None:
        return None
    f = min(crop) / min(protocol.crop)
    return (max(1, math.ceil(protocol.scale[0] * f)), max(1, math.ceil(protocol.scale[1] * f)))
