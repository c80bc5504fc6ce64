"""Consecutive frame pairs for the flow branch of pretraining (labels ignored): the flow
benchmarks' on-disk layouts (Sintel, KITTI 2015/2012, FlyingChairs, FlyingThings3D, HD1K, as in
torchvision.datasets but rooted at the dataset's own folder, DESIGN.md section 6), folders of
frame folders, video files, and the synthetic world, mixed with per-source repetition counts.

Items are dicts ``{"image1": (3, H, W), "image2": (3, H, W)}`` float in [0, 1] at the training
crop size, ``image2`` being the frame after ``image1`` (unless the optional swap augmentation
reversed them).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mcjepa_cli.data.augment import FlowAugmentConfig, PairAugment
from mcjepa_cli.data.mixing import MixedDataset, PathTable, check_on_error
from mcjepa_cli.data.roots import resolve_root
from mcjepa_cli.data.sources import FLOW_SOURCE_NAMES, FlowSource
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.images import read_image
from mcjepa_cli.io.video import (
    VIDEO_EXTENSIONS,
    is_image_file,
    is_video_file,
    iter_frames,
    natural_key,
    video_info,
)

log = logging.getLogger("mcjepa_cli.data")

# what each source's root folder must hold (quoted in error messages and docs/datasets.md)
FLOW_LAYOUTS: dict[str, str] = {
    "sintel": "training/{clean,final}/<scene>/frame_0001.png (test/ for split test)",
    "kitti-2015": "training/image_2/000000_10.png and 000000_11.png (testing/ for split test)",
    "kitti-2012": "training/colored_0/000000_10.png and 000000_11.png (or image_0/; testing/ "
    "for split test)",
    "chairs": "data/00001_img1.ppm and data/00001_img2.ppm (+ FlyingChairs_train_val.txt)",
    "things": "frames_cleanpass/TRAIN/A/0000/left/0006.png (frames_finalpass/ for pass final)",
    "hd1k": "hd1k_input/image_2/000000_0000.png (hd1k_challenge/image_2/ for split test)",
    "frames": "<sequence>/<frames> (one folder of frames per sequence, sorted naturally)",
    "video": "a video file (" + ", ".join(VIDEO_EXTENSIONS) + ") or a folder of them",
}

PASSES = ("clean", "final")


def _split(name: str, split: str, key: str) -> str:
    """Normalise a split name per dataset ("training"/"train", "test"/"testing", ...)."""
    s = split.lower()
    table: dict[str, dict[str, str]] = {
        "sintel": {"training": "training", "train": "training", "test": "test", "testing": "test"},
        "kitti-2015": {
            "training": "training",
            "train": "training",
            "test": "testing",
            "testing": "testing",
        },
        "kitti-2012": {
            "training": "training",
            "train": "training",
            "test": "testing",
            "testing": "testing",
        },
        "chairs": {
            "training": "train",
            "train": "train",
            "val": "val",
            "validation": "val",
            "all": "all",
        },
        "things": {"training": "TRAIN", "train": "TRAIN", "test": "TEST", "testing": "TEST"},
        "hd1k": {
            "training": "hd1k_input",
            "train": "hd1k_input",
            "test": "hd1k_challenge",
            "testing": "hd1k_challenge",
        },
    }
    if name not in table:
        return s  # frames / video / synthetic: no split
    if s not in table[name]:
        raise UserError(
            f"{key}.split",
            f"expected one of {', '.join(sorted(set(table[name])))} for {name}, got {split!r}",
        )
    return table[name][s]


def _passes(passes: Sequence[str], key: str) -> list[str]:
    out = [str(p).lower() for p in passes]
    bad = [p for p in out if p not in PASSES]
    if bad or not out:
        raise UserError(
            f"{key}.passes", f"expected a non-empty list of {', '.join(PASSES)}, got {list(passes)}"
        )
    return list(dict.fromkeys(out))


def _images_in(folder: Path, pattern: str = "") -> list[Path]:
    """Image files directly in ``folder`` (optionally matching a regex), natural order."""
    if not folder.is_dir():
        return []
    rx = re.compile(pattern) if pattern else None
    with os.scandir(folder) as it:
        files = [
            Path(e.path)
            for e in it
            if e.is_file() and is_image_file(e.name) and (rx is None or rx.fullmatch(e.name))
        ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    with os.scandir(folder) as it:
        dirs = [Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")]
    return sorted(dirs, key=lambda p: natural_key(p.name))


def _consecutive(frames: Sequence[Path]) -> list[tuple[Path, Path]]:
    return [(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]


# ---------------------------------------------------------------------------------- listings
# Each lister returns the (frame t, frame t+1) file pairs of one dataset, following the file
# lists of torchvision.datasets (Sintel, KittiFlow, FlyingChairs, FlyingThings3D, HD1K) but
# rooted at the dataset's own folder and without the flow files.


def list_sintel_pairs(
    root: Path, split: str = "training", passes: Sequence[str] = PASSES
) -> list[tuple[Path, Path]]:
    """``root/<split>/<pass>/<scene>/frame_XXXX.png``: consecutive frames of each scene."""
    pairs: list[tuple[Path, Path]] = []
    for pass_name in passes:
        for scene in _subdirs(root / split / pass_name):
            pairs += _consecutive(_images_in(scene, r".*\.png"))
    return pairs


_KITTI_NAME = r"(\d+)_(\d+)\.png"
KITTI_PAIR = (10, 11)  # the two-frame benchmark's frames of each scene (flow is given for 10)


def list_kitti_pairs(
    root: Path, split: str = "training", image_dir: str = "image_2", multiview: bool = False
) -> list[tuple[Path, Path]]:
    """``root/<split>/<image_dir>/<id>_<frame>.png``: the 10 -> 11 pair of every id.

    The two-frame benchmark ships frames 10 and 11 of each scene (torchvision's KittiFlow
    pairs): ~200 pairs per KITTI version, what the recipes' ``repeat`` counts assume. The
    multi-view extension (``data_scene_flow_multiview.zip``, ``data_stereo_flow_multiview.zip``)
    ships frames 00 ... 20 of each scene; found in the same folder (unpacked into it, or
    ``root`` pointed at it) they are left out, so that a merged folder does not give 20 pairs
    per scene and multiply the source's share of the mix.

    Args:
        root: the dataset's own folder (holding ``training/``).
        split: ``training`` or ``testing``.
        image_dir: ``image_2`` (2015), ``colored_0`` or ``image_0`` (2012).
        multiview: use every consecutive pair of each scene (00 -> 01 ... 19 -> 20, where
            both frames exist) instead: ~20x the pairs; lower the source's ``repeat`` to match.
    """
    by_id: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in _images_in(root / split / image_dir, _KITTI_NAME):
        m = re.fullmatch(_KITTI_NAME, path.name)
        assert m is not None
        by_id[m.group(1)][int(m.group(2))] = path
    pairs = []
    first, second = KITTI_PAIR
    for ident in sorted(by_id, key=natural_key):
        frames = by_id[ident]
        if multiview:
            pairs += [(frames[k], frames[k + 1]) for k in sorted(frames) if k + 1 in frames]
        elif first in frames and second in frames:
            pairs.append((frames[first], frames[second]))
    return pairs


def list_chairs_pairs(root: Path, split: str = "train") -> list[tuple[Path, Path]]:
    """``root/data/<id>_img1.ppm, <id>_img2.ppm``; ``split`` train/val reads
    ``root/FlyingChairs_train_val.txt`` (1 = train, 2 = val) when present (train without it:
    every pair; val without it: an error), ``all`` uses every pair."""
    data = root / "data"
    firsts = _images_in(data, r".*_img1\.ppm")
    pairs = [(p, p.with_name(p.name[: -len("img1.ppm")] + "img2.ppm")) for p in firsts]
    pairs = [(a, b) for a, b in pairs if b.is_file()]
    split_file = root / "FlyingChairs_train_val.txt"
    if split == "all" or (split == "train" and not split_file.is_file()):
        return pairs
    if not split_file.is_file():
        raise UserError(
            split_file, "needed for FlyingChairs split val (one line per pair: 1 train, 2 val)"
        )
    try:
        ids = np.loadtxt(split_file, dtype=np.int64).reshape(-1)
    except ValueError as e:
        raise UserError(split_file, f"expected one integer (1 or 2) per line ({e})") from None
    if len(ids) != len(pairs):
        raise UserError(
            split_file, f"has {len(ids)} lines but data/ holds {len(pairs)} image pairs"
        )
    wanted = 1 if split == "train" else 2
    return [pair for pair, i in zip(pairs, ids, strict=True) if i == wanted]


def list_things_pairs(
    root: Path, split: str = "TRAIN", passes: Sequence[str] = PASSES
) -> list[tuple[Path, Path]]:
    """``root/frames_<pass>pass/<SPLIT>/<letter>/<seq>/<left|right>/NNNN.png``: consecutive
    frames of each sequence and camera (both cameras; the into-past direction is the same pairs
    reversed, which the two-direction flow loss already covers)."""
    pairs: list[tuple[Path, Path]] = []
    for pass_name in passes:
        for letter in _subdirs(root / f"frames_{pass_name}pass" / split):
            for seq in _subdirs(letter):
                for camera in ("left", "right"):
                    pairs += _consecutive(_images_in(seq / camera, r".*\.png"))
    return pairs


_HD1K_NAME = r"(\d+)_(\d+)\.png"


def list_hd1k_pairs(root: Path, split: str = "hd1k_input") -> list[tuple[Path, Path]]:
    """``root/<hd1k_input|hd1k_challenge>/image_2/<seq>_<frame>.png``: consecutive frames of each
    sequence (sequences never pair across their boundary, as in torchvision's HD1K)."""
    by_seq: dict[str, list[Path]] = defaultdict(list)
    for path in _images_in(root / split / "image_2", _HD1K_NAME):
        by_seq[path.name.split("_")[0]].append(path)
    pairs = []
    for seq in sorted(by_seq, key=natural_key):
        pairs += _consecutive(by_seq[seq])
    return pairs


def list_frame_folder_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``root/<sequence>/<frames>``: consecutive frames (natural order) of each sub-folder; image
    files directly in ``root`` form one more sequence."""
    pairs = _consecutive(_images_in(root))
    for seq in _subdirs(root):
        pairs += _consecutive(_images_in(seq))
    return pairs


# ---------------------------------------------------------------------------------- sources
class FramePairSource:
    """Pairs of image files; ``load`` returns both frames as uint8 (3, H, W)."""

    scan_skipped = 0

    def __init__(self, name: str, root: Path, pairs: Sequence[tuple[Path, Path]]) -> None:
        self.name = name
        self.root = root
        flat = [p for pair in pairs for p in pair]
        self._files = PathTable.from_paths(root, flat)  # 2 entries per pair

    def __len__(self) -> int:
        return len(self._files) // 2

    def describe(self) -> str:
        return str(self.root)

    def files(self, index: int) -> tuple[Path, Path]:
        """The two image files of pair ``index``."""
        return self._files[2 * index], self._files[2 * index + 1]

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        p1, p2 = self.files(index)
        img1, img2 = read_image(p1), read_image(p2)  # UserError naming a corrupt file
        if img1.shape != img2.shape:
            raise UserError(
                p2,
                f"frame size {tuple(img2.shape[1:])} differs from that of the frame "
                f"before it, {p1} {tuple(img1.shape[1:])}",
            )
        return img1, img2


class VideoPairSource:
    """Consecutive frames of video files, decoded once at construction into memory.

    Random access into compressed video costs a seek from the previous keyframe (about 0.3 s a
    frame on a 2-core CPU for a 540p H.264 clip), so frames are decoded once and kept as uint8
    tensors: at native size when the whole cache fits ``cache_mb``, else downscaled uniformly,
    but never below the training crop (``min_size``).

    Args:
        root: a video file or a folder holding video files (not searched recursively).
        min_size: (H, W) the cached frames must still cover.
        cache_mb: memory budget for all decoded frames together.
        on_error: ``skip`` drops an undecodable video (counted in ``scan_skipped``).
    """

    def __init__(
        self, root: Path, min_size: tuple[int, int], cache_mb: float, on_error: str
    ) -> None:
        self.name = "video"
        self.root = root
        self.scan_skipped = 0
        if root.is_file():
            videos = [root]
        else:
            with os.scandir(root) as it:
                videos = sorted(
                    (Path(e.path) for e in it if e.is_file() and is_video_file(e.name)),
                    key=lambda p: natural_key(p.name),
                )
        if not videos:
            raise UserError(root, f"no video found (expected {FLOW_LAYOUTS['video']})")
        infos = []
        for path in videos:
            try:
                infos.append((path, video_info(path)))
            except UserError as err:
                if on_error == "stop":
                    raise
                self._skip(err)
        est_bytes = sum(3 * i.height * i.width * (i.num_frames or 0) for _, i in infos)
        budget = cache_mb * 2**20
        scale = min(1.0, math.sqrt(budget / est_bytes)) if est_bytes else 1.0
        self.frames: list[torch.Tensor] = []  # per video: (T, 3, h, w) uint8
        self.names: list[Path] = []
        for path, info in infos:
            s = min(1.0, max(scale, min_size[0] / info.height, min_size[1] / info.width))
            size = (
                None
                if s >= 1.0
                else (
                    max(min_size[0], round(info.height * s)),
                    max(min_size[1], round(info.width * s)),
                )
            )
            try:
                clip = torch.stack(list(iter_frames(path, size=size)))  # (T, 3, h, w)
            except UserError as err:
                if on_error == "stop":
                    raise
                self._skip(err)
                continue
            if clip.shape[0] >= 2:
                self.frames.append(clip)
                self.names.append(path)
        used = sum(c.numel() for c in self.frames)
        if used > budget * 1.05:
            raise UserError(
                root,
                f"decoded frames need {used / 2**20:.0f} MB even at the training crop "
                f"size, over the video cache limit of {cache_mb:.0f} MB; use shorter "
                f"videos, extract frames to a 'frames' source, or raise the limit",
            )
        counts = [c.shape[0] - 1 for c in self.frames]
        self._starts = np.cumsum([0, *counts])  # pair index -> video via searchsorted
        if self._starts[-1] == 0:
            raise UserError(
                root,
                f"no video with at least two decodable frames (expected {FLOW_LAYOUTS['video']})",
            )

    def _skip(self, err: UserError) -> None:
        self.scan_skipped += 1
        log.warning("skipping unreadable video (on_error=skip): %s: %s", err.culprit, err.expected)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def describe(self) -> str:
        return f"{self.root} ({len(self.frames)} videos)"

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = int(np.searchsorted(self._starts, index, side="right")) - 1
        t = index - int(self._starts[v])
        return self.frames[v][t], self.frames[v][t + 1]


class SyntheticPairSource:
    """Frame pairs of the procedural world (``SyntheticFlowPairs``); flow labels dropped."""

    scan_skipped = 0

    def __init__(self, height: int, width: int, length: int, seed: int, cfg=None) -> None:
        from mcjepa_cli.data.synthetic import SyntheticFlowPairs

        self.name = "synthetic"
        self.dataset = SyntheticFlowPairs(height, width, length, seed=seed, split="train", cfg=cfg)

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self) -> str:
        return f"procedural world, {len(self)} pairs per epoch"

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.dataset[index]
        return item["image1"], item["image2"]


# ---------------------------------------------------------------------------------- builder
class FlowPairDataset(MixedDataset):
    """The mixed flow-pair dataset: items ``{"image1", "image2"}`` float (3, H, W) in [0, 1]."""

    stream = 1


class _PairItem:
    """Transform of the flow dataset (a class, not a closure, so spawned workers can pickle it)."""

    def __init__(self, augment: PairAugment) -> None:
        self.augment = augment

    def __call__(
        self, raw: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        image1, image2 = self.augment(raw[0], raw[1], gen)  # (3, H, W) each
        return {"image1": image1, "image2": image2}


def _check_repeat(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}.repeat", f"expected an integer >= 1, got {value!r}")
    return value


def build_flow_source(
    src: FlowSource,
    *,
    height: int,
    width: int,
    seed: int,
    on_error: str = "stop",
    synthetic_cfg=None,
    video_cache_mb: float = 2048,
    key: str = "data.flow[0]",
):
    """Build one source of frame pairs from its recipe entry.

    Args:
        src: the recipe entry (``name``, ``root``, ``split``, ``passes``, ``length``,
            ``multiview``).
        height: training crop height (synthetic frames are rendered at this size).
        width: training crop width.
        seed: seed of the synthetic world.
        on_error: ``stop`` or ``skip`` (undecodable videos are dropped at construction).
        synthetic_cfg: ``SyntheticConfig`` of the synthetic world (None = defaults).
        video_cache_mb: memory budget of a video source's decoded frames.
        key: recipe key quoted in error messages.

    Raises:
        UserError: unknown name, missing root, bad split/passes, or no pair found (naming the
            folder and the layout it should hold).
    """
    name = str(src.name).lower()
    if name not in FLOW_SOURCE_NAMES:
        raise UserError(
            f"{key}.name", f"expected one of {', '.join(FLOW_SOURCE_NAMES)}, got {src.name!r}"
        )
    if src.multiview and name not in ("kitti-2015", "kitti-2012"):
        raise UserError(f"{key}.multiview", f"only for kitti-2015 and kitti-2012, not {name}")
    if name == "synthetic":
        return SyntheticPairSource(height, width, int(src.length), seed, synthetic_cfg)
    layout = FLOW_LAYOUTS[name]
    if name in ("frames", "video"):
        if not src.root:
            raise UserError(f"{key}.root", f"required for a {name} source: {layout}")
        root = Path(src.root).expanduser()
        if not root.exists():
            raise UserError(root, f"not found (expected {layout})")
        if name == "video":
            if root.is_file() and not is_video_file(root):
                raise UserError(root, f"not a video file (expected {layout})")
            return VideoPairSource(root, (height, width), video_cache_mb, on_error)
        if not root.is_dir():
            raise UserError(root, f"expected a folder: {layout}")
        pairs = list_frame_folder_pairs(root)
    else:
        root = resolve_root(name, src.root, layout)
        split = _split(name, str(src.split), key)
        if name == "sintel":
            pairs = list_sintel_pairs(root, split, _passes(src.passes, key))
        elif name in ("kitti-2015", "kitti-2012"):
            image_dir = "image_2" if name == "kitti-2015" else "colored_0"
            if name == "kitti-2012" and not (root / split / image_dir).is_dir():
                image_dir = "image_0"  # the grey left camera (expanded to RGB) when no colour
            pairs = list_kitti_pairs(root, split, image_dir, multiview=src.multiview)
            if not pairs and list_kitti_pairs(root, split, image_dir, multiview=True):
                raise UserError(root / split / image_dir, "holds multi-view frames but no "
                                "NNNNNN_10.png / NNNNNN_11.png pair: set "
                                f"{key}.multiview: true to use the multi-view pairs")
        elif name == "chairs":
            pairs = list_chairs_pairs(root, split)
        elif name == "things":
            passes = _passes(src.passes, key)
            present = [p for p in passes if (root / f"frames_{p}pass").is_dir()]
            for p in passes:
                if p not in present:
                    log.warning(
                        "%s: no frames_%spass/ folder; FlyingThings3D pass %s not used", root, p, p
                    )
            pairs = list_things_pairs(root, split, present)
        else:
            pairs = list_hd1k_pairs(root, split)
    if not pairs:
        raise UserError(root, f"no frame pairs found for {name} (expected {layout})")
    return FramePairSource(name, root, pairs)


def build_flow_pair_dataset(
    sources: Sequence[FlowSource],
    *,
    height: int,
    width: int,
    seed: int,
    on_error: str = "stop",
    augment: FlowAugmentConfig | None = None,
    synthetic_cfg=None,
    video_cache_mb: float = 2048,
    key: str = "data.flow",
) -> FlowPairDataset:
    """Build the mixed frame-pair dataset of the flow branch.

    Args:
        sources: recipe entries, each repeated ``repeat`` times in the mix.
        height: training crop height (frames smaller than the crop are enlarged to cover it).
        width: training crop width.
        seed: seed of the per-sample randomness (crops, flips) and of the synthetic world.
        on_error: ``stop`` (an unreadable frame stops the run: ``UserError`` naming the file) or
            ``skip`` (the sample is replaced by the next one and counted in ``skipped()``).
        augment: crop/flip/swap options (defaults: h-flip 0.5, no v-flip, no swap, no rescale).
        synthetic_cfg: ``SyntheticConfig`` for ``synthetic`` sources.
        video_cache_mb: memory budget per ``video`` source for its decoded frames.
        key: recipe key of the list, quoted in error messages (``data.flow[i].root``).

    Returns:
        A ``FlowPairDataset``; index it with the step sampler's ``(index, key)`` pairs for
        exactly resumable augmentation (see ``mcjepa_cli.data.mixing``).
    """
    check_on_error(on_error)
    if not sources:
        raise UserError(key, "expected at least one flow source")
    built, repeats = [], []
    for i, src in enumerate(sources):
        k = f"{key}[{i}]"
        repeats.append(_check_repeat(src.repeat, k))
        built.append(
            build_flow_source(
                src,
                height=height,
                width=width,
                seed=seed,
                on_error=on_error,
                synthetic_cfg=synthetic_cfg,
                video_cache_mb=video_cache_mb,
                key=k,
            )
        )
    transform = _PairItem(PairAugment(height, width, augment))
    return FlowPairDataset(built, repeats, transform, seed=seed, on_error=on_error)
