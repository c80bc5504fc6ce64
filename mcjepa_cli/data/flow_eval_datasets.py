"""Flow evaluation sets with ground truth: Sintel, KITTI, Chairs, Things, HD1K, Middlebury, ...

The on-disk layouts and pairing rules follow ``torchvision.datasets`` (``Sintel``,
``KittiFlow``, ``FlyingChairs``, ``FlyingThings3D``, ``HD1K``) and Middlebury's
``other-data``/``other-gt-flow``, but ``root`` is the dataset's *own* folder (the one holding
``training/``, ``data/``, ``frames_cleanpass/``, ...), not its parent (DESIGN.md section 6).
Pairs are matched by file name rather than by position in sorted listings, so a missing file is
reported by name instead of silently shifting every later pair.

Each set lists ``FlowPair`` records (frame identities, sequence name, the relative path of the
pair's prediction file) and loads frames and ground truth on demand:
``load_frame(key)`` -> float (3, H, W) in [0, 1]; ``load_target(i)`` -> ``FlowTarget``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mcjepa_cli.data.roots import resolve_root
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.flow_io import read_flow
from mcjepa_cli.io.images import read_image, read_image_float

FLOW_DATASETS = (
    "sintel", "kitti-2015", "kitti-2012", "chairs", "things", "hd1k", "middlebury", "synthetic",
)
PASSES = ("clean", "final")

# What each dataset's folder must hold (quoted in errors and in docs/flow-eval.md).
LAYOUTS: dict[str, str] = {
    "sintel": "training/{clean,final}/<scene>/frame_NNNN.png and training/flow/<scene>/"
    "frame_NNNN.flo (optional training/occlusions/, training/invalid/)",
    "kitti-2015": "training/image_2/NNNNNN_10.png, NNNNNN_11.png and training/flow_occ/"
    "NNNNNN_10.png (optional training/flow_noc/)",
    "kitti-2012": "training/colored_0/NNNNNN_10.png, NNNNNN_11.png (or image_0/) and "
    "training/flow_occ/NNNNNN_10.png (optional training/flow_noc/)",
    "chairs": "data/NNNNN_img1.ppm, data/NNNNN_img2.ppm, data/NNNNN_flow.flo "
    "(optional FlyingChairs_train_val.txt)",
    "things": "frames_cleanpass/TRAIN/<A|B|C>/NNNN/left/NNNN.png (frames_finalpass/ likewise) "
    "and optical_flow/TRAIN/<A|B|C>/NNNN/into_{future,past}/left/OpticalFlowInto{Future,Past}"
    "_NNNN_L.pfm",
    "hd1k": "hd1k_input/image_2/SSSSSS_FFFF.png and hd1k_flow_gt/flow_occ/SSSSSS_FFFF.png",
    "middlebury": "other-data/<Seq>/frame10.png, frame11.png (or other-data-gray/) and "
    "other-gt-flow/<Seq>/flow10.flo",
}

# Relative layout of prediction files (``--predictions`` / ``--save-predictions``).
PREDICTION_LAYOUTS: dict[str, str] = {
    "sintel": "<pass>/<scene>/frame_NNNN.flo",
    "kitti-2015": "flow/NNNNNN_10.png (KITTI 16-bit PNG)",
    "kitti-2012": "flow/NNNNNN_10.png (KITTI 16-bit PNG)",
    "chairs": "NNNNN_flow.flo",
    "things": "<pass>/<SPLIT>/<A|B|C>/NNNN/into_{future,past}/left/OpticalFlowInto{Future,Past}"
    "_NNNN_L.flo",
    "hd1k": "flow/SSSSSS_FFFF.png (KITTI 16-bit PNG)",
    "middlebury": "<Seq>/flow10.flo",
    "synthetic": "NNNNNN.flo (pair index)",
}

SPLITS: dict[str, tuple[str, ...]] = {  # first = default
    "sintel": ("train",),
    "kitti-2015": ("train",),
    "kitti-2012": ("train",),
    "chairs": ("train", "val"),
    "things": ("train", "test"),
    "hd1k": ("train",),
    "middlebury": ("train",),
    "synthetic": ("val",),
}


@dataclass(frozen=True)
class FlowPair:
    """One evaluation pair: frame identities, grouping, files (for on-disk sets)."""

    frame1: str  # identity of the first frame (a path, or "synthetic:<index>:0")
    frame2: str
    sequence: str  # scene / sequence name for --per-sequence
    prediction: str  # relative path of this pair's prediction file
    flow: Path | None = None  # ground-truth flow file
    occlusion: Path | None = None  # mask PNG, non-zero = occluded (Sintel occlusions/)
    invalid: Path | None = None  # mask PNG, non-zero = invalid (Sintel invalid/)
    noc_flow: Path | None = None  # KITTI flow_noc: valid there = non-occluded


@dataclass
class FlowTarget:
    """Ground truth of one pair."""

    flow: np.ndarray  # (H, W, 2) float32, pixels
    valid: np.ndarray  # (H, W) bool
    occlusion: np.ndarray | None  # (H, W) bool, True = occluded; None where not shipped


class FlowEvalSet:
    """A list of ``FlowPair`` plus the loaders for its frames and ground truth."""

    def __init__(
        self,
        name: str,
        pairs: list[FlowPair],
        *,
        pass_name: str | None = None,
        split: str = "train",
        prediction_format: str = ".flo",
        note: str = "",
    ) -> None:
        self.name = name
        self.pairs = pairs
        self.pass_name = pass_name
        self.split = split
        self.prediction_format = prediction_format  # ".flo" or ".png" (KITTI)
        self.note = note  # a remark printed with the results (e.g. which split was used)
        self.root: Path | None = None  # the dataset's own folder (None: rendered, no files)

    def __len__(self) -> int:
        return len(self.pairs)

    def frame_size(self, key: str) -> tuple[int, int]:
        """(H, W) of a frame, read from the file header only."""
        path = Path(key)
        try:
            with Image.open(path) as img:
                w, h = img.size
        except FileNotFoundError:
            raise UserError(path, "frame not found") from None
        except Image.DecompressionBombError as e:
            raise UserError(path, f"image too large to decode safely ({e})") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(path, f"cannot decode image ({e.__class__.__name__})") from None
        return h, w

    def load_frame(self, key: str) -> torch.Tensor:
        """A frame as float32 (3, H, W) in [0, 1] (grey frames are expanded to RGB)."""
        return read_image_float(key)

    def load_target(self, index: int) -> FlowTarget:
        """Ground truth of pair ``index``: flow, validity and (where shipped) occlusion."""
        pair = self.pairs[index]
        assert pair.flow is not None
        flow, valid = read_flow(pair.flow)
        shape = valid.shape
        if pair.invalid is not None:
            valid = valid & ~_read_mask(pair.invalid, shape)
        occlusion = None
        if pair.occlusion is not None:
            occlusion = _read_mask(pair.occlusion, shape)
        if pair.noc_flow is not None:
            _, noc_valid = read_flow(pair.noc_flow)
            if noc_valid.shape != shape:
                raise UserError(pair.noc_flow, f"size {noc_valid.shape[::-1]} differs from "
                                f"{pair.flow.name}'s {shape[::-1]}")
            occlusion = valid & ~noc_valid  # valid in flow_occ but not in flow_noc
        return FlowTarget(flow, valid, occlusion)


class SyntheticFlowEvalSet(FlowEvalSet):
    """The procedural world's validation pairs (``SyntheticFlowPairs(split="val")``), exact GT."""

    cache_size = 32  # rendered items kept: more than a batch, so each item renders once

    def __init__(self, count: int, height: int, width: int, seed: int = 0) -> None:
        from mcjepa_cli.data.synthetic import SyntheticFlowPairs

        self.data = SyntheticFlowPairs(height, width, count, seed=seed, split="val")
        self.size = (height, width)
        self._cache: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        pairs = [
            FlowPair(f"synthetic:{i}:0", f"synthetic:{i}:1", f"{i:06d}", f"{i:06d}.flo")
            for i in range(count)
        ]
        super().__init__(
            "synthetic", pairs, split="val",
            note=f"synthetic world, split val, seed {seed}, {count} pairs of {height}x{width}",
        )

    def _item(self, index: int) -> dict[str, torch.Tensor]:
        """Render item ``index`` once for its two frames and its target (a batch's worth kept)."""
        if index not in self._cache:
            self._cache[index] = self.data[index]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[index]

    def frame_size(self, key: str) -> tuple[int, int]:
        return self.size

    def load_frame(self, key: str) -> torch.Tensor:
        _, index, which = key.split(":")
        return self._item(int(index))["image1" if which == "0" else "image2"].float()

    def load_target(self, index: int) -> FlowTarget:
        item = self._item(index)
        flow = item["flow"].permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 2)
        valid = item["valid"].numpy().astype(bool)
        return FlowTarget(flow, valid, item["occlusion"].numpy().astype(bool))


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask PNG (0 = no, non-zero = yes) as bool (H, W); its size must match the flow's."""
    mask = read_image(path)[0].numpy() > 0
    if mask.shape != shape:
        raise UserError(path, f"mask size {mask.shape[::-1]} differs from the flow's {shape[::-1]}")
    return mask


def _layout_error(dataset: str, path: Path, what: str) -> UserError:
    return UserError(path, f"{what}; expected the {dataset} layout: <root>/{LAYOUTS[dataset]}")


def _need_dir(dataset: str, path: Path) -> Path:
    if not path.is_dir():
        raise _layout_error(dataset, path, "folder not found")
    return path


def _need_file(dataset: str, path: Path) -> Path:
    if not path.is_file():
        raise _layout_error(dataset, path, "file not found")
    return path


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir())


# ----------------------------------------------------------------------------------- Sintel
def sintel_sets(root: Path, passes: list[str]) -> list[FlowEvalSet]:
    """MPI-Sintel training split, one set per pass; ``invalid/`` pixels excluded, ``occlusions/``
    give the occluded/non-occluded split where present."""
    training = _need_dir("sintel", root / "training")
    flow_root = _need_dir("sintel", training / "flow")
    occ_root, inv_root = training / "occlusions", training / "invalid"
    scenes = _subdirs(flow_root)
    if not scenes:
        raise _layout_error("sintel", flow_root, "no scene folders")
    sets = []
    for pass_name in passes:
        image_root = _need_dir("sintel", training / pass_name)
        pairs = []
        for scene in scenes:
            flows = sorted(scene.glob("frame_*.flo"))
            if not flows:
                raise _layout_error("sintel", scene, "no frame_NNNN.flo files")
            for flow in flows:
                m = re.fullmatch(r"frame_(\d+)", flow.stem)
                if m is None:
                    raise _layout_error("sintel", flow, "unexpected flow file name")
                n, width = int(m.group(1)), len(m.group(1))
                img1 = _need_file("sintel", image_root / scene.name / f"frame_{n:0{width}d}.png")
                img2 = _need_file(
                    "sintel", image_root / scene.name / f"frame_{n + 1:0{width}d}.png"
                )
                occ = inv = None
                if occ_root.is_dir():
                    occ = _need_file("sintel", occ_root / scene.name / f"{flow.stem}.png")
                if inv_root.is_dir():
                    inv = _need_file("sintel", inv_root / scene.name / f"{flow.stem}.png")
                pairs.append(FlowPair(
                    str(img1), str(img2), scene.name, f"{pass_name}/{scene.name}/{flow.stem}.flo",
                    flow=flow, occlusion=occ, invalid=inv,
                ))
        sets.append(FlowEvalSet("sintel", pairs, pass_name=pass_name))
    return sets


# ------------------------------------------------------------------------------------ KITTI
def kitti_set(root: Path, dataset: str) -> FlowEvalSet:
    """KITTI 2015 (``image_2``) or 2012 (``colored_0``, else ``image_0``) training pairs; GT from
    ``flow_occ`` (all pixels), occluded/non-occluded split from ``flow_noc`` where present."""
    training = _need_dir(dataset, root / "training")
    flow_root = _need_dir(dataset, training / "flow_occ")
    if dataset == "kitti-2015":
        image_root = _need_dir(dataset, training / "image_2")
    else:
        image_root = training / "colored_0"
        if not image_root.is_dir():
            image_root = _need_dir(dataset, training / "image_0")
    noc_root = training / "flow_noc"
    flows = sorted(flow_root.glob("*_10.png"))
    if not flows:
        raise _layout_error(dataset, flow_root, "no NNNNNN_10.png flow files")
    pairs = []
    for flow in flows:
        frame = flow.stem[: -len("_10")]
        img1 = _need_file(dataset, image_root / f"{frame}_10.png")
        img2 = _need_file(dataset, image_root / f"{frame}_11.png")
        noc = _need_file(dataset, noc_root / flow.name) if noc_root.is_dir() else None
        pairs.append(
            FlowPair(str(img1), str(img2), frame, f"flow/{flow.name}", flow=flow, noc_flow=noc)
        )
    return FlowEvalSet(dataset, pairs, prediction_format=".png")


# ------------------------------------------------------------------------------ FlyingChairs
def chairs_set(root: Path, split: str) -> FlowEvalSet:
    """FlyingChairs pairs; ``FlyingChairs_train_val.txt`` (1 = train, 2 = val, one line per
    pair in sorted order) selects the split; without it, ``train`` means every pair."""
    data = _need_dir("chairs", root / "data")
    flows = sorted(data.glob("*_flow.flo"))
    if not flows:
        raise _layout_error("chairs", data, "no NNNNN_flow.flo files")
    split_file = root / "FlyingChairs_train_val.txt"
    note = ""
    if split_file.is_file():
        try:
            ids = [int(t) for t in split_file.read_text().split()]
        except (ValueError, UnicodeDecodeError):
            raise UserError(
                split_file, "expected one split id (1 = train, 2 = val) per line"
            ) from None
        if len(ids) != len(flows):
            raise UserError(
                split_file, f"{len(ids)} split ids for {len(flows)} flow files in {data}"
            )
        want = 1 if split == "train" else 2
        chosen = [f for f, i in zip(flows, ids, strict=True) if i == want]
    elif split == "val":
        raise _layout_error("chairs", split_file, "split file needed for --split val")
    else:
        chosen = flows
        note = f"{split_file.name} not found: all {len(flows)} pairs evaluated"
    pairs = []
    for flow in chosen:
        frame = flow.stem[: -len("_flow")]
        img1 = _need_file("chairs", data / f"{frame}_img1.ppm")
        img2 = _need_file("chairs", data / f"{frame}_img2.ppm")
        pairs.append(FlowPair(str(img1), str(img2), frame, flow.name, flow=flow))
    return FlowEvalSet("chairs", pairs, split=split if not note else "all", note=note)


# ---------------------------------------------------------------------------- FlyingThings3D
def things_sets(root: Path, passes: list[str], split: str) -> list[FlowEvalSet]:
    """FlyingThings3D, left camera, both directions (as torchvision): a future flow at frame N
    pairs N -> N+1, a past flow pairs N -> N-1; flows whose partner frame is absent (the ends
    of each sequence) are skipped."""
    split_dir = split.upper()
    flow_split = _need_dir("things", root / "optical_flow" / split_dir)
    sets = []
    for pass_name in passes:
        pass_split = _need_dir("things", root / f"frames_{pass_name}pass" / split_dir)
        seq_dirs = sorted(p for p in pass_split.glob("*/*") if p.is_dir())
        if not seq_dirs:
            raise _layout_error("things", pass_split, "no <A|B|C>/NNNN sequence folders")
        pairs = []
        for seq in seq_dirs:
            rel = seq.relative_to(pass_split)  # e.g. A/0000
            frames = _need_dir("things", seq / "left")
            for direction, step in (("into_future", 1), ("into_past", -1)):
                flow_dir = _need_dir("things", flow_split / rel / direction / "left")
                for flow in sorted(flow_dir.glob("*.pfm")):
                    m = re.fullmatch(r"OpticalFlowInto(?:Future|Past)_(\d+)_L", flow.stem)
                    if m is None:
                        raise _layout_error("things", flow, "unexpected flow file name")
                    n, width = int(m.group(1)), len(m.group(1))
                    img1 = frames / f"{n:0{width}d}.png"
                    img2 = frames / f"{n + step:0{width}d}.png"
                    if not img2.is_file():
                        continue  # sequence end: no partner frame (torchvision skips it too)
                    _need_file("things", img1)
                    where = f"{split_dir}/{rel.as_posix()}"
                    pred = f"{pass_name}/{where}/{direction}/left/{flow.stem}.flo"
                    pairs.append(FlowPair(str(img1), str(img2), f"{split_dir}/{rel.as_posix()}",
                                          pred, flow=flow))
        if not pairs:
            raise _layout_error("things", flow_split, "no flow/frame pairs found")
        sets.append(FlowEvalSet("things", pairs, pass_name=pass_name, split=split))
    return sets


# ------------------------------------------------------------------------------------- HD1K
def hd1k_set(root: Path) -> FlowEvalSet:
    """HD1K training pairs: flow ``SSSSSS_FFFF`` pairs frame FFFF with the next frame of sequence
    SSSSSS (the last flow of a sequence, without a next frame, is skipped as in torchvision)."""
    images = _need_dir("hd1k", root / "hd1k_input" / "image_2")
    flow_root = _need_dir("hd1k", root / "hd1k_flow_gt" / "flow_occ")
    flows = sorted(flow_root.glob("*.png"))
    if not flows:
        raise _layout_error("hd1k", flow_root, "no SSSSSS_FFFF.png flow files")
    frames_by_seq: dict[str, list[Path]] = {}
    for img in sorted(images.glob("*.png")):
        frames_by_seq.setdefault(img.stem.split("_")[0], []).append(img)
    pairs = []
    for flow in flows:
        seq = flow.stem.split("_")[0]
        seq_frames = frames_by_seq.get(seq, [])
        img1 = _need_file("hd1k", images / flow.name)
        k = seq_frames.index(img1)
        if k + 1 >= len(seq_frames):
            continue
        img2 = seq_frames[k + 1]
        pairs.append(FlowPair(str(img1), str(img2), seq, f"flow/{flow.name}", flow=flow))
    if not pairs:
        raise _layout_error("hd1k", images, "no frame pairs found")
    return FlowEvalSet("hd1k", pairs, prediction_format=".png")


# ------------------------------------------------------------------------------- Middlebury
def middlebury_set(root: Path) -> FlowEvalSet:
    """Middlebury "other" sequences with public GT (frame10 -> frame11); grey frames from
    ``other-data-gray`` are used, expanded to RGB, when ``other-data`` is absent."""
    gt_root = _need_dir("middlebury", root / "other-gt-flow")
    frame_root = root / "other-data"
    note = ""
    if not frame_root.is_dir() and (root / "other-data-gray").is_dir():
        frame_root = root / "other-data-gray"
        note = "grey frames (other-data-gray) expanded to RGB"
    _need_dir("middlebury", frame_root)
    seqs = [s for s in _subdirs(gt_root) if (s / "flow10.flo").is_file()]
    if not seqs:
        raise _layout_error("middlebury", gt_root, "no <Seq>/flow10.flo files")
    pairs = []
    for seq in seqs:
        img1 = _need_file("middlebury", frame_root / seq.name / "frame10.png")
        img2 = _need_file("middlebury", frame_root / seq.name / "frame11.png")
        pairs.append(FlowPair(str(img1), str(img2), seq.name, f"{seq.name}/flow10.flo",
                              flow=seq / "flow10.flo"))
    return FlowEvalSet("middlebury", pairs, note=note)


# ---------------------------------------------------------------------------------- builder
def build_flow_eval_sets(
    dataset: str,
    root: str | Path | None = None,
    *,
    pass_name: str | None = None,
    split: str | None = None,
    synthetic_count: int = 32,
    synthetic_size: tuple[int, int] = (128, 160),
    synthetic_seed: int = 0,
) -> list[FlowEvalSet]:
    """The evaluation sets (one per pass) of ``dataset``.

    Args:
        dataset: one of ``FLOW_DATASETS``.
        root: the dataset's own folder (``--root``); None -> ``$MCJEPA_DATA/<Name>``.
        pass_name: ``clean``, ``final`` or ``both`` for Sintel and FlyingThings3D (None = every
            pass present; Sintel and Things only).
        split: ``SPLITS[dataset]``; None = the first (``train``; ``val`` for synthetic).
        synthetic_count: number of synthetic pairs.
        synthetic_size: (H, W) of synthetic pairs.
        synthetic_seed: seed of the synthetic world.

    Raises:
        UserError: unknown dataset/pass/split, missing root, wrong layout.
    """
    if dataset not in FLOW_DATASETS:
        raise UserError(f"--dataset {dataset}", f"expected one of {', '.join(FLOW_DATASETS)}")
    split = split or SPLITS[dataset][0]
    if split not in SPLITS[dataset]:
        raise UserError(f"--split {split}", f"{dataset} can be evaluated on: "
                        f"{', '.join(SPLITS[dataset])} (the splits with public ground truth)")
    has_passes = dataset in ("sintel", "things")
    if pass_name is not None and pass_name not in (*PASSES, "both"):
        raise UserError(f"--pass {pass_name}", "expected clean, final or both")
    if pass_name is not None and not has_passes:
        raise UserError(
            f"--pass {pass_name}", f"{dataset} has no render passes (only sintel, things)"
        )
    if dataset == "synthetic":
        h, w = synthetic_size
        if synthetic_count < 1 or h < 1 or w < 1:
            raise UserError(f"--count {synthetic_count} --size {h}x{w}", "expected positive values")
        return [SyntheticFlowEvalSet(synthetic_count, h, w, synthetic_seed)]
    path = resolve_root(dataset, root, LAYOUTS[dataset])
    passes: list[str] = []
    if has_passes:
        if pass_name in PASSES:
            passes = [pass_name]
        elif pass_name == "both":
            passes = list(PASSES)
        else:  # every pass the folder holds
            where = (lambda p: path / "training" / p) if dataset == "sintel" else (
                lambda p: path / f"frames_{p}pass")
            passes = [p for p in PASSES if where(p).is_dir()] or ["clean"]
    if dataset == "sintel":
        sets = sintel_sets(path, passes)
    elif dataset in ("kitti-2015", "kitti-2012"):
        sets = [kitti_set(path, dataset)]
    elif dataset == "chairs":
        sets = [chairs_set(path, split)]
    elif dataset == "things":
        sets = things_sets(path, passes, split)
    elif dataset == "hd1k":
        sets = [hd1k_set(path)]
    else:
        sets = [middlebury_set(path)]
    for s in sets:
        s.root = path  # no output may be written in here (mcjepa_cli.io.guard)
    return sets


__all__ = [
    "FLOW_DATASETS",
    "LAYOUTS",
    "PREDICTION_LAYOUTS",
    "SPLITS",
    "FlowEvalSet",
    "FlowPair",
    "FlowTarget",
    "SyntheticFlowEvalSet",
    "build_flow_eval_sets",
]
