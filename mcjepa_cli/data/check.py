"""Check dataset folders before a long run: is the root there, which layout matched, how many
pairs / frames / labels it holds, and the first problem, found with the loaders the commands use.

Every check goes through the project's own code paths (DESIGN.md section 6 for the roots):
``resolve_root`` finds the folder, the listings of ``flow_eval_datasets``, ``flow_pairs``,
``segmentation``, ``davis`` and ``image_folder`` enumerate it, and the first sample of each kind
(frames, flow, masks, labels, annotations, images) is opened with their readers. A listing that
raises ``UserError`` is the problem reported, so a check fails exactly where ``flow-eval``,
``segment-eval``, ``davis-eval`` or ``pretrain`` would fail, with the same message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mcjepa_cli.data.davis import DAVIS_LAYOUT, davis_sequences
from mcjepa_cli.data.flow_eval_datasets import (
    FLOW_DATASETS,
    LAYOUTS,
    PASSES,
    FlowEvalSet,
    build_flow_eval_sets,
)
from mcjepa_cli.data.flow_pairs import FLOW_LAYOUTS, build_flow_source
from mcjepa_cli.data.image_folder import IMAGE_LAYOUT, build_image_source
from mcjepa_cli.data.roots import DATA_FOLDER_NAMES, resolve_root
from mcjepa_cli.data.segmentation import DATASETS as SEG_DATASETS
from mcjepa_cli.data.segmentation import SegSplits, build_seg_splits
from mcjepa_cli.data.sources import FLOW_SOURCE_NAMES, IMAGE_SOURCE_NAMES, FlowSource, ImageSource
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.json_out import write_json_text
from mcjepa_cli.io.video import is_video_file, iter_frames, natural_key, video_info

OK, WARNING, BROKEN, NOT_FOUND = "ok", "warning", "broken", "not found"

# What a root must hold, for datasets whose own module states no layout string.
_SEG_LAYOUTS = {
    "voc": "JPEGImages/ and SegmentationClass/",
    "cityscapes": "leftImg8bit/ and gtFine/",
    "ade20k": "images/ and annotations/",
}


@dataclass
class DatasetCheck:
    """What ``check_dataset`` found for one dataset.

    Attributes:
        name: dataset key (as on the command line and in recipes).
        used_by: the commands that read it (``flow-eval``, ``pretrain``, ...).
        status: ``ok``; ``warning`` (usable, but a split file or similar is missing: see
            ``problem``); ``broken`` (a command reading it would stop); ``not found`` (no root).
        root: the folder checked (or the one that was looked for); None when none was given.
        layout: the layout variant that matched (which sub-folders the listing used).
        counts: named counts (``pairs``, ``frames``, ``flows``, ``train_images``, ...).
        problem: the first problem, one line (empty when status is ``ok``).
        warnings: every warning (the first one is ``problem`` when status is ``warning``).
        notes: remarks that are not problems (e.g. grey frames expanded to RGB).
    """

    name: str
    used_by: tuple[str, ...]
    status: str = OK
    root: str | None = None
    layout: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    problem: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.status in (OK, WARNING)

    def to_json(self) -> dict:
        out = asdict(self)
        out["used_by"] = list(self.used_by)
        return out


def _relative(text: str, root: Path | None) -> str:
    """``text`` on one line, with paths inside ``root`` shown relative to it."""
    if root is not None:
        text = text.replace(f"{root}{os.sep}", "")
    return " ".join(text.split())


def _one_line(err: UserError | OSError, root: Path | None) -> str:
    """``<culprit>: <what>`` (a culprit inside ``root`` relative to it)."""
    if isinstance(err, OSError):
        culprit, what = str(err.filename or ""), str(err.strerror or err)
    else:
        culprit, what = err.culprit, err.expected
    return _relative(f"{culprit}: {what}" if culprit else what, root)


def _same_size(a, b, what_a: Path | str, what_b: Path | str) -> None:
    """Frames / labels of one sample must share their size (H, W)."""
    if tuple(a) != tuple(b):
        raise UserError(what_b, f"size {tuple(b)[::-1]} (WxH) differs from {Path(what_a).name}'s "
                                f"{tuple(a)[::-1]}")


# --------------------------------------------------------------------------- flow benchmarks
def _open_first_pair(evalset: FlowEvalSet) -> None:
    """Decode the first pair's two frames and its ground truth (flow, masks)."""
    pair = evalset.pairs[0]
    img1 = evalset.load_frame(pair.frame1)  # (3, H, W)
    img2 = evalset.load_frame(pair.frame2)
    _same_size(img1.shape[-2:], img2.shape[-2:], pair.frame1, pair.frame2)
    target = evalset.load_target(0)  # flow (H, W, 2), valid, occlusion
    _same_size(img1.shape[-2:], target.flow.shape[:2], pair.frame1, pair.flow or "flow")


def _pretrain_pairs(check: DatasetCheck, name: str, root: Path, passes: list[str]) -> None:
    """The pretraining listing (``data.flow`` entry) of a flow dataset; opens its first pair."""
    src = FlowSource(name=name, root=str(root), passes=passes or list(PASSES))
    source = build_flow_source(src, height=64, width=64, seed=0)
    check.counts["pretrain_pairs"] = len(source)
    source.load(0)  # both frames, same-size check included
    if name in ("kitti-2015", "kitti-2012"):  # multi-view frames: listed only on request
        src.multiview = True
        every = len(build_flow_source(src, height=64, width=64, seed=0))
        if every > len(source):
            check.counts["multiview_pairs"] = every
            check.notes.append(
                f"multi-view frames present: pretraining uses the 10 -> 11 pair of each scene "
                f"({len(source)} pairs); data.flow[i].multiview: true uses all {every} "
                "consecutive pairs")


def _check_flow_benchmark(check: DatasetCheck, root: Path) -> None:
    name = check.name
    if name == "chairs":
        split_file = root / "FlyingChairs_train_val.txt"
        sets = build_flow_eval_sets(name, root, split="train")
        check.counts["split_files"] = int(split_file.is_file())
        if split_file.is_file():
            val = build_flow_eval_sets(name, root, split="val")
            check.counts["val_pairs"] = sum(len(s) for s in val)
            sets = sets + val
        else:
            check.warnings.append(f"{split_file.name} not found: no train/val split (flow-eval "
                                  f"--split val and the recipe's split val need it)")
    else:
        sets = build_flow_eval_sets(name, root)
    pairs = [p for s in sets for p in s.pairs]
    if not pairs:  # e.g. a Chairs split file with no 1 or 2 in it
        raise UserError(root, f"no pairs listed (expected {LAYOUTS[name]})")
    check.counts = {
        "pairs": len(pairs),
        "frames": len({f for p in pairs for f in (p.frame1, p.frame2)}),
        "flows": len({p.flow for p in pairs if p.flow is not None}),
        "masks": len({m for p in pairs for m in (p.occlusion, p.invalid, p.noc_flow)
                      if m is not None}),
        **check.counts,
    }
    check.notes += sorted({s.note for s in sets if s.note and name != "chairs"})
    # the layout variant: which sub-folders the listing actually used
    first = Path(pairs[0].frame1).relative_to(root).parts
    optional = {
        "sintel": ("training/occlusions", "training/invalid"),
        "kitti-2015": ("training/flow_noc",),
        "kitti-2012": ("training/flow_noc",),
    }.get(name, ())
    extra = [o.split("/")[-1] + "/" for o in optional if (root / o).is_dir()]
    passes = [s.pass_name for s in sets if s.pass_name]
    if name == "sintel":
        layout = f"training/{{{','.join(passes)}}} + flow/"
    elif name in ("kitti-2015", "kitti-2012"):
        layout = f"training/{first[1]}/ + flow_occ/"
    elif name == "chairs":
        layout = "data/*.ppm + *_flow.flo" + (
            " + FlyingChairs_train_val.txt" if check.counts["split_files"] else "")
    elif name == "things":
        layout = (f"frames_{{{','.join(passes)}}}pass/{first[1]} + optical_flow/ (left camera "
                  f"for flow-eval)")
    elif name == "hd1k":
        layout = "hd1k_input/image_2/ + hd1k_flow_gt/flow_occ/"
    else:  # middlebury
        layout = f"{first[0]}/ + other-gt-flow/" + (" (grey frames)" if "gray" in first[0] else "")
    check.layout = layout + "".join(f" + {e}" for e in extra)
    for s in sets:
        if s.pairs:
            _open_first_pair(s)
    if name in FLOW_SOURCE_NAMES:  # also a pretraining source: its own listing
        _pretrain_pairs(check, name, root, [p for p in passes if p in PASSES])


# ------------------------------------------------------------- frames / video (pretraining)
def _check_frames(check: DatasetCheck, root: Path) -> None:
    source = build_flow_source(FlowSource(name="frames", root=str(root)), height=64, width=64,
                               seed=0)
    check.counts["pretrain_pairs"] = len(source)
    folders = {source.files(i)[0].parent for i in range(len(source))}
    check.counts["sequences"] = len(folders)
    check.layout = "<sequence>/<frames>" if root not in folders else (
        "frames directly in the folder" + (" + <sequence>/<frames>" if len(folders) > 1 else ""))
    source.load(0)


def _check_video(check: DatasetCheck, root: Path) -> None:
    if root.is_file():
        if not is_video_file(root):
            raise UserError(root, f"not a video file (expected {FLOW_LAYOUTS['video']})")
        videos, check.layout = [root], "a video file"
    else:
        videos = sorted((p for p in root.iterdir() if p.is_file() and is_video_file(p)),
                        key=lambda p: natural_key(p.name))
        check.layout = "a folder of videos"
    check.counts["videos"] = len(videos)
    if not videos:
        raise UserError(root, f"no video found (expected {FLOW_LAYOUTS['video']})")
    info = video_info(videos[0])
    if info.num_frames is not None:
        check.counts["frames_first_video"] = int(info.num_frames)
    decoded = list(iter_frames(videos[0], max_frames=2))  # (3, H, W) each
    if len(decoded) < 2:
        raise UserError(videos[0], "fewer than two decodable frames: no frame pair")


# ----------------------------------------------------------------------------- segmentation
def _check_segmentation(check: DatasetCheck, root: Path) -> None:
    splits: SegSplits = build_seg_splits(check.name, root, "val")
    train, val = splits.train, splits.val
    items = [*getattr(train, "items", []), *getattr(val, "items", [])]
    check.counts = {"train_images": len(train), "val_images": len(val),
                    "labels": len({lab for _, lab, _ in items})}
    check.warnings += splits.notes
    if check.name == "voc":
        sets = root / "ImageSets" / "Segmentation"
        check.counts["split_files"] = sum((sets / f"{s}.txt").is_file() for s in ("train", "val"))
        folders = [f for f in ("SegmentationClass", "SegmentationClassAug") if (root / f).is_dir()]
        check.layout = "JPEGImages/ + " + " + ".join(f"{f}/" for f in folders) + (
            " + ImageSets/Segmentation/" if check.counts["split_files"] else "")
    elif check.name == "cityscapes":
        kinds = sorted({lab.name.rsplit("_", 1)[-1][: -len(".png")] for _, lab, _ in items})
        check.layout = f"leftImg8bit/ + gtFine/ ({', '.join(kinds)})"
    else:
        check.layout = "images/{training,validation} + annotations/{training,validation}"
    for part in (val, train):  # decodes image + label, checks sizes and label values
        if len(part):
            part[0]


# ------------------------------------------------------------------------------------ DAVIS
def _check_davis(check: DatasetCheck, root: Path) -> None:
    resolution = "480p"
    if not (root / "JPEGImages" / "480p").is_dir() and (
            root / "JPEGImages" / "Full-Resolution").is_dir():
        resolution = "Full-Resolution"
    check.counts["split_files"] = len(list((root / "ImageSets" / "2017").glob("*.txt")))
    _, seqs = davis_sequences(root, "val", resolution)
    check.layout = (f"JPEGImages/{resolution}/ + Annotations/{resolution}/ + "
                    f"ImageSets/2017/val.txt")
    frames = sum(len(s) for s in seqs)
    missing = [s.annotation_path(i) for s in seqs for i in range(len(s))
               if not s.annotation_path(i).is_file()]
    check.counts = {"sequences": len(seqs), "frames": frames, "annotations": frames - len(missing),
                    **check.counts}
    first = seqs[0]
    frame, labels = first.frame(0), first.annotation(0)  # (3, H, W), (H, W) indices
    _same_size(frame.shape[-2:], labels.shape, first.image_dir / f"{first.frame_ids[0]}.jpg",
               first.annotation_path(0))
    if missing:
        raise UserError(missing[0], f"ground-truth annotation not found ({len(missing)} frames "
                                    f"of the val subset have none; davis-eval scores every frame)")


# ----------------------------------------------------------------------------------- images
def _check_images(check: DatasetCheck, root: Path) -> None:
    source = build_image_source(ImageSource(name=check.name, root=str(root), split="train"),
                                seed=0)
    check.counts["images"] = len(source)
    with os.scandir(source.base) as it:
        classes = [e.name for e in it if e.is_dir() and not e.name.startswith(".")]
    check.counts["classes"] = len(classes)
    where = "train/" if source.base != root else ""
    check.layout = f"{where}<class>/<image>" if classes else f"{where}<image> (flat)"
    source.load(0)


# --------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Entry:
    used_by: tuple[str, ...]
    layout: str  # what the root must hold (quoted when it is not found)
    check: Callable[[DatasetCheck, Path], None]
    needs_root: bool = False  # no $MCJEPA_DATA default: only checked with NAME and --root


def _registry() -> dict[str, _Entry]:
    """Every dataset the toolkit reads, from the modules' own registries, in a stable order."""
    out: dict[str, _Entry] = {}
    for name in FLOW_DATASETS:
        if name != "synthetic":
            used = ("flow-eval", "pretrain") if name in FLOW_SOURCE_NAMES else ("flow-eval",)
            out[name] = _Entry(used, LAYOUTS[name], _check_flow_benchmark)
    for name in FLOW_SOURCE_NAMES:
        if name not in out and name != "synthetic":
            checker = _check_video if name == "video" else _check_frames
            out[name] = _Entry(("pretrain",), FLOW_LAYOUTS[name], checker, needs_root=True)
    for name in SEG_DATASETS:
        if name != "synthetic":
            out[name] = _Entry(("segment-eval",), _SEG_LAYOUTS[name], _check_segmentation)
    out["davis"] = _Entry(("davis-eval",), DAVIS_LAYOUT, _check_davis)
    for name in sorted(IMAGE_SOURCE_NAMES, key=lambda n: n != "imagenet"):  # imagenet first
        if name != "synthetic":
            out[name] = _Entry(("pretrain",), IMAGE_LAYOUT, _check_images,
                               needs_root=name == "imagefolder")
    return out


DATASETS: dict[str, _Entry] = _registry()


def dataset_names() -> list[str]:
    """The names ``check_dataset`` accepts, in table order."""
    return list(DATASETS)


def check_dataset(name: str, root: str | Path | None = None) -> DatasetCheck:
    """Check one dataset: find its root, list it, open its first sample of each kind.

    Args:
        name: one of ``dataset_names()``.
        root: the dataset's own folder; None = ``$MCJEPA_DATA/<Name>`` (DESIGN.md section 6).

    Returns:
        A ``DatasetCheck``; problems are reported in it, never raised.

    Raises:
        UserError: ``name`` is not a known dataset.
    """
    key = name.lower()
    if key not in DATASETS:
        raise UserError(name, f"unknown dataset; expected one of {', '.join(DATASETS)}")
    entry = DATASETS[key]
    check = DatasetCheck(key, entry.used_by)
    given = root is not None and str(root) != ""
    if entry.needs_root and not given:
        check.status = NOT_FOUND
        check.problem = "no default location: needs NAME and --root"
        return check
    if given and key == "video":  # a single video file is a valid root
        path = Path(root).expanduser()  # type: ignore[arg-type]
        check.root = str(path)
        if not path.exists():
            check.status, check.problem = NOT_FOUND, "not found"
            return check
    else:
        try:
            path = resolve_root("imagenet" if key == "imagefolder" else key,
                                root if given else None)
        except UserError as e:
            check.status = NOT_FOUND
            base = os.environ.get("MCJEPA_DATA")
            if given:
                check.root, check.problem = str(root), "folder not found"
            elif base:
                check.root = str(Path(base).expanduser() / DATA_FOLDER_NAMES[key])
                check.problem = "folder not found"
            else:
                check.problem = _one_line(e, None)
            return check
        check.root = str(path)
    try:
        entry.check(check, path)
    except (UserError, OSError) as e:
        check.status, check.problem = BROKEN, _one_line(e, path)
        return check
    check.warnings = [_relative(w, path) for w in check.warnings]
    if check.warnings:
        check.status, check.problem = WARNING, check.warnings[0]
    return check


def check_datasets(name: str | None = None, root: str | Path | None = None) -> list[DatasetCheck]:
    """Check ``name`` (at ``root`` or its default location), or every known dataset.

    Args:
        name: a dataset name, or None for all of them (those not found are reported as such).
        root: the dataset's own folder; only with ``name``.

    Raises:
        UserError: unknown ``name``, or ``root`` without ``name``.
    """
    if name is None:
        if root is not None and str(root) != "":
            raise UserError(f"--root {root}", "needs a dataset NAME (a root is one dataset's "
                                              "own folder, e.g. mcjepa datasets check sintel "
                                              "--root DIR)")
        return [check_dataset(n) for n in DATASETS]
    return [check_dataset(name, root)]


def failed(checks: list[DatasetCheck], requested: bool) -> bool:
    """Exit status 1? A broken dataset always; a missing one only when it was requested."""
    return any(c.status == BROKEN or (requested and c.status == NOT_FOUND) for c in checks)


def write_checks_json(path: str | Path, checks: list[DatasetCheck]) -> None:
    """Write the checks as a JSON list (``-`` = standard output)."""
    write_json_text(path, json.dumps([c.to_json() for c in checks], indent=2) + "\n")


__all__ = [
    "BROKEN",
    "DATASETS",
    "NOT_FOUND",
    "OK",
    "WARNING",
    "DatasetCheck",
    "check_dataset",
    "check_datasets",
    "dataset_names",
    "failed",
    "write_checks_json",
]
