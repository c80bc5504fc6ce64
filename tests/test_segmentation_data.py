"""Segmentation datasets on their real layouts, label decodings and the training geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image

from mcjepa_cli.data.segmentation import (
    ADE20K_CLASS_NAMES,
    CITYSCAPES_CLASS_NAMES,
    VOC_CLASS_NAMES,
    augment_pair,
    build_seg_splits,
    item_names,
    rescale_size,
)
from mcjepa_cli.errors import UserError
from mcjepa_cli.eval.linear_probe import window_boxes

# cityscapesScripts labels.py: (name, id, trainId), written out independently of the code.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12),
    ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]


def pypng_indices(path: Path) -> np.ndarray:
    """Independent PNG decoder (pypng): raw sample values, palette indices for 'P' images."""
    _, _, rows, _ = png.Reader(filename=str(path)).read()
    return np.array([list(r) for r in rows], dtype=np.int64)


def save_label(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)


def save_image(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


# ---------------------------------------------------------------------------------- VOC


@pytest.mark.shared_data
def test_real_voc_images_load_with_palette_labels(shared_data, tmp_path):
    root = shared_data / "voc2012" / "VOC2012"
    if not (root / "SegmentationClass").is_dir():
        pytest.skip(f"{root} is not present (two real VOC 2012 images); skipped")
    splits = build_seg_splits("voc", root, "val")
    # no ImageSets in the sample: both splits fall back to SegmentationClass/, with notes
    assert len(splits.notes) == 2 and all("not found" in n for n in splits.notes)
    sets = root / "ImageSets" / "Segmentation"
    assert splits.missing_split_files == [sets / "val.txt", sets / "train.txt"]
    assert item_names(splits.train) == item_names(splits.val)  # segment-eval refuses this
    assert splits.class_names == VOC_CLASS_NAMES and splits.num_classes == 21
    names = [splits.val[i][2] for i in range(len(splits.val))]
    assert names == ["2007_000032", "2007_000033"]
    for i, name in enumerate(names):
        image, label, _ = splits.val[i]
        expected = pypng_indices(root / "SegmentationClass" / f"{name}.png")
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert tuple(image.shape[1:]) == expected.shape
        assert np.array_equal(label.numpy(), expected)
    assert set(splits.val[0][1].unique().tolist()) == {0, 1, 15, 255}
    assert set(splits.val[1][1].unique().tolist()) == {0, 1, 255}

    # with split files (official assignment: 032 train, 033 val) the splits are disjoint
    copy = tmp_path / "VOC2012"
    shutil.copytree(root, copy)
    sets = copy / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n")
    (sets / "val.txt").write_text("2007_000033\n")
    splits = build_seg_splits("voc", copy, "val")
    assert splits.notes == [] and splits.missing_split_files == []
    assert [splits.train[0][2]] == ["2007_000032"] and len(splits.train) == 1
    assert [splits.val[0][2]] == ["2007_000033"] and len(splits.val) == 1


def make_voc(root: Path, ids_labels: dict[str, np.ndarray], folder: str = "SegmentationClass"):
    for k, (name, lab) in enumerate(ids_labels.items()):
        save_image(root / "JPEGImages" / f"{name}.jpg", *lab.shape, seed=k)
        save_label(root / folder / f"{name}.png", lab, palette=folder == "SegmentationClass")


def test_voc_segmentation_class_aug_is_used_when_present(tmp_path):
    root = tmp_path / "VOC2012"
    lab = np.zeros((8, 10), dtype=np.uint8)
    make_voc(root, {"a": lab + 1, "v": lab + 2})
    make_voc(root, {"x": lab + 3, "y": lab + 4, "v": lab + 5}, folder="SegmentationClassAug")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\n")
    (sets / "val.txt").write_text("v\n")
    splits = build_seg_splits("voc", root)
    train = {splits.train[i][2]: int(splits.train[i][1][0, 0]) for i in range(len(splits.train))}
    # train.txt ids + every SegmentationClassAug id except the val ids; labels from the right folder
    assert train == {"a": 1, "x": 3, "y": 4}
    assert [splits.val[i][2] for i in range(len(splits.val))] == ["v"]
    assert int(splits.val[0][1][0, 0]) == 2  # val reads SegmentationClass, not the Aug copy


def test_voc_label_out_of_range_names_the_file(tmp_path):
    root = tmp_path / "VOC2012"
    lab = np.zeros((6, 6), dtype=np.uint8)
    lab[2, 2] = 21
    make_voc(root, {"bad": lab})
    splits = build_seg_splits("voc", root)
    with pytest.raises(UserError, match=r"bad\.png.*0\.\.20 or 255.*21"):
        splits.val[0]


def test_voc_wrong_layout_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="JPEGImages"):
        build_seg_splits("voc", tmp_path)
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(UserError, match="SegmentationClass"):
        build_seg_splits("voc", tmp_path)
    with pytest.raises(UserError, match="not found"):
        build_seg_splits("voc", tmp_path / "nope")


# --------------------------------------------------------------------------- Cityscapes


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    ids = np.array([i for _, i, _ in CITYSCAPES_LABELS] * 2, dtype=np.uint8).reshape(4, 17)
    expected = np.array([t for _, _, t in CITYSCAPES_LABELS] * 2).reshape(4, 17)
    stem = "aachen_000000_000019"
    for split in ("train", "val"):
        save_image(tmp_path / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", 4, 17)
        save_label(tmp_path / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", ids)
    splits = build_seg_splits("cityscapes", tmp_path)
    assert splits.class_names == CITYSCAPES_CLASS_NAMES
    assert [n for n, _, t in CITYSCAPES_LABELS if t != 255] == list(CITYSCAPES_CLASS_NAMES)
    image, label, name = splits.val[0]
    assert name == "aachen_000000_000019"
    assert np.array_equal(label.numpy(), expected)

    # precomputed labelTrainIds win when present
    tid = np.full((4, 17), 255, dtype=np.uint8)
    tid[0, :] = np.arange(17)
    save_label(tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelTrainIds.png", tid)
    splits = build_seg_splits("cityscapes", tmp_path)
    assert np.array_equal(splits.val[0][1].numpy(), tid.astype(np.int64))

    # a labelId beyond 33 is refused, naming the file
    bad = ids.copy()
    bad[0, 0] = 34
    save_label(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", bad)
    splits = build_seg_splits("cityscapes", tmp_path)
    with pytest.raises(UserError, match=r"aachen_000000_000019_gtFine_labelIds\.png.*34"):
        splits.train[0]


def test_cityscapes_missing_ground_truth(tmp_path):
    save_image(tmp_path / "leftImg8bit" / "val" / "bonn" / "bonn_1_2_leftImg8bit.png", 4, 4)
    (tmp_path / "gtFine" / "val" / "bonn").mkdir(parents=True)
    (tmp_path / "leftImg8bit" / "train" / "bonn").mkdir(parents=True)
    (tmp_path / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="no <city>"):
        build_seg_splits("cityscapes", tmp_path)  # empty train split
    save_image(tmp_path / "leftImg8bit" / "train" / "bonn" / "bonn_1_3_leftImg8bit.png", 4, 4)
    with pytest.raises(UserError, match=r"bonn_1_3_gtFine_labelIds\.png: file not found"):
        build_seg_splits("cityscapes", tmp_path)


# ------------------------------------------------------------------------------- ADE20K


def test_ade20k_reduce_zero_label(tmp_path):
    raw = np.arange(151, dtype=np.uint8).reshape(1, 151)
    for folder in ("training", "validation"):
        save_image(tmp_path / "images" / folder / f"ADE_{folder}_00000001.jpg", 1, 151)
        save_label(tmp_path / "annotations" / folder / f"ADE_{folder}_00000001.png", raw)
    splits = build_seg_splits("ade20k", tmp_path, "val")
    assert len(ADE20K_CLASS_NAMES) == 150 and splits.num_classes == 150
    assert ADE20K_CLASS_NAMES[0] == "wall" and ADE20K_CLASS_NAMES[-1] == "flag"
    label = splits.val[0][1].numpy()[0]
    assert label[0] == 255
    assert np.array_equal(label[1:], np.arange(150))
    bad = raw.copy()
    bad[0, 5] = 151
    save_label(tmp_path / "annotations" / "training" / "ADE_training_00000001.png", bad)
    with pytest.raises(UserError, match=r"ADE_training_00000001\.png.*151"):
        build_seg_splits("ade20k", tmp_path).train[0]


def test_ade20k_wrong_layout(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    with pytest.raises(UserError, match="annotations/training"):
        build_seg_splits("ade20k", tmp_path)


def test_unknown_dataset():
    with pytest.raises(UserError, match="expected one of"):
        build_seg_splits("coco", None)


# ----------------------------------------------------------------------------- geometry


def test_rescale_size_matches_mmcv_keep_ratio():
    # VOC image 500x375 (W x H) into img_scale (2048, 512): factor = min(2048/500, 512/375)
    assert rescale_size(375, 500, (2048, 512)) == (512, 683)
    # Cityscapes 1024x2048 into (2048, 1024): unchanged
    assert rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    # a very wide image is limited by its long side
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)


def test_augment_identity_flip_and_padding():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 6, 8), dtype=torch.uint8)
    label = torch.randint(0, 4, (6, 8))
    im, lb = augment_pair(image, label, (6, 8), None, g, ratio_range=(1.0, 1.0),
                          cat_max_ratio=1.0, flip_prob=0.0)
    assert torch.equal(im, image) and torch.equal(lb, label)
    im, lb = augment_pair(image, label, (6, 8), None, g, ratio_range=(1.0, 1.0),
                          cat_max_ratio=1.0, flip_prob=1.0)
    assert torch.equal(im, image[:, :, torch.arange(7, -1, -1)])
    assert torch.equal(lb, label[:, torch.arange(7, -1, -1)])
    im, lb = augment_pair(image, label, (10, 12), None, g, ratio_range=(1.0, 1.0),
                          cat_max_ratio=1.0, flip_prob=0.0)
    assert im.shape == (3, 10, 12) and lb.shape == (10, 12)
    assert torch.equal(lb[:6, :8], label) and bool((lb[6:] == 255).all())
    assert bool((lb[:, 8:] == 255).all())


def test_augment_random_crops_keep_labels_and_are_reproducible():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    label = torch.randint(0, 5, (40, 50))
    label[:5] = 255
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(3)
        outs.append(augment_pair(image, label, (32, 32), (50, 40), g))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    im, lb = outs[0]
    assert im.shape == (3, 32, 32) and lb.shape == (32, 32)
    assert set(lb.unique().tolist()) <= set(range(5)) | {255}


def test_window_boxes_cover_like_mmseg_slide():
    boxes = window_boxes(512, 683, (512, 512), (341, 341))
    assert boxes == [(0, 512, 0, 512), (0, 512, 171, 683)]
    cover = np.zeros((300, 700), dtype=int)
    for y1, y2, x1, x2 in window_boxes(300, 700, (128, 128), (85, 85)):
        assert y2 - y1 == 128 and x2 - x1 == 128
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    assert window_boxes(50, 60, (128, 128), (85, 85)) == [(0, 50, 0, 60)]
