"""DAVIS 2017 semi-supervised video sequences (and a DAVIS-like synthetic set) behind one interface.

Layout (the folder given by ``--root`` or ``$MCJEPA_DATA/DAVIS``, DESIGN.md 3.3):
``JPEGImages/<resolution>/<seq>/<frame>.jpg``, ``Annotations/<resolution>/<seq>/<frame>.png``
(indexed PNGs: 0 background, k = object k, 255 void) and ``ImageSets/2017/<subset>.txt`` (one
sequence name a line). As in the official toolkit, a sequence's frames are its sorted JPEGs and
its number of objects is the largest id in its first annotation (void excluded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mcjepa_cli.data.roots import resolve_root
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.images import read_image_float, read_label_png

VOID_LABEL = 255
DAVIS_LAYOUT = "JPEGImages/, Annotations/ and ImageSets/"


class VideoSequence:
    """One video with per-frame ground-truth object masks (the interface the evaluation uses).

    Attributes:
        name: sequence name (the output sub-folder and the ``<name>_<k>`` object prefix).
        frame_ids: frame names without extension, in temporal order (``00000``, ...).
    """

    name: str
    frame_ids: list[str]

    def __len__(self) -> int:
        return len(self.frame_ids)

    def frame(self, index: int) -> torch.Tensor:
        """Frame ``index`` as float RGB (3, H, W) in [0, 1]."""
        raise NotImplementedError

    def annotation(self, index: int) -> np.ndarray:
        """Ground-truth index map (H, W) of frame ``index`` (0 background, k object, 255 void)."""
        raise NotImplementedError

    @property
    def num_objects(self) -> int:
        """Largest object id in the first annotation, void excluded (the toolkit's rule)."""
        first = self.annotation(0)
        first = np.where(first == VOID_LABEL, 0, first)
        return int(first.max(initial=0))

    def annotations(self) -> np.ndarray:
        """All ground-truth index maps stacked, (T, H, W)."""
        maps = [self.annotation(i) for i in range(len(self))]
        shapes = {m.shape for m in maps}
        if len(shapes) != 1:
            raise UserError(self.name, f"annotations differ in size: {sorted(shapes)}")
        return np.stack(maps)


@dataclass
class DavisSequence(VideoSequence):
    """A DAVIS sequence read from disk."""

    name: str
    image_dir: Path
    annotation_dir: Path
    frame_ids: list[str] = field(default_factory=list)

    def frame(self, index: int) -> torch.Tensor:
        return read_image_float(self.image_dir / f"{self.frame_ids[index]}.jpg")

    def annotation_path(self, index: int) -> Path:
        return self.annotation_dir / f"{self.frame_ids[index]}.png"

    def annotation(self, index: int) -> np.ndarray:
        path = self.annotation_path(index)
        if not path.is_file():
            raise UserError(
                path, "ground-truth annotation not found (every frame needs one to be scored)"
            )
        labels = read_label_png(path)
        if labels.ndim != 2:
            raise UserError(path, f"expected an (H, W) index map, got shape {labels.shape}")
        return labels


@dataclass
class InMemorySequence(VideoSequence):
    """A sequence held in memory, e.g. one clip of the synthetic world."""

    name: str
    frames: torch.Tensor  # (T, 3, H, W) float in [0, 1]
    labels: np.ndarray  # (T, H, W) uint8: 0 background, k object k
    frame_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.frame_ids:
            self.frame_ids = [f"{i:05d}" for i in range(self.frames.shape[0])]

    def frame(self, index: int) -> torch.Tensor:
        return self.frames[index]

    def annotation(self, index: int) -> np.ndarray:
        return self.labels[index]


def read_subset(root: Path, subset: str, year: str = "2017") -> list[str]:
    """Sequence names listed in ``ImageSets/<year>/<subset>.txt`` (blank lines skipped).

    Raises:
        UserError: the subset file does not exist or lists no sequence.
    """
    path = root / "ImageSets" / year / f"{subset}.txt"
    if not path.is_file():
        found = sorted(p.stem for p in (root / "ImageSets" / year).glob("*.txt"))
        have = f"; found {', '.join(found)}" if found else ""
        raise UserError(path, f"subset file for --subset {subset} not found{have}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise UserError(path, "subset file lists no sequence")
    return names


def davis_sequences(
    root: str | Path | None,
    subset: str = "val",
    resolution: str = "480p",
    sequences: list[str] | None = None,
    need_images: bool = True,
) -> tuple[Path, list[DavisSequence]]:
    """Find the DAVIS 2017 sequences of ``subset``.

    Args:
        root: the DAVIS folder (holding ``JPEGImages/``...), or None for ``$MCJEPA_DATA/DAVIS``.
        subset: the ``ImageSets/2017/<subset>.txt`` to read (``val``, ``train``, ...).
        resolution: sub-folder of ``JPEGImages``/``Annotations`` (``480p`` or ``Full-Resolution``).
        sequences: keep only these names (each must be in the subset).
        need_images: frames come from the JPEGs (True, for propagation) or, when scoring
            existing predictions, from the annotations if the JPEG folder is absent.

    Returns:
        (resolved root, sequences in subset-file order).

    Raises:
        UserError: missing folder, subset file, sequence folder, first annotation, or a
            sequence name that is not in the subset.
    """
    base = resolve_root("davis", root, DAVIS_LAYOUT)
    for sub in ("Annotations", "ImageSets") + (("JPEGImages",) if need_images else ()):
        if not (base / sub).is_dir():
            raise UserError(
                base, f"not a DAVIS folder: {sub}/ is missing (expected {DAVIS_LAYOUT})"
            )
    names = read_subset(base, subset)
    if sequences:
        unknown = [s for s in sequences if s not in names]
        if unknown:
            raise UserError(f"--sequences {','.join(unknown)}", f"not in the {subset} subset")
        names = [n for n in names if n in sequences]
    out = []
    for name in names:
        img_dir = base / "JPEGImages" / resolution / name
        ann_dir = base / "Annotations" / resolution / name
        if img_dir.is_dir():
            ids = sorted(p.stem for p in img_dir.glob("*.jpg"))
        elif need_images:
            raise UserError(img_dir, f"frames of sequence {name} not found")
        else:
            ids = sorted(p.stem for p in ann_dir.glob("*.png")) if ann_dir.is_dir() else []
        if not ids:
            where = img_dir if img_dir.is_dir() or need_images else ann_dir
            raise UserError(where, f"sequence {name} has no frames")
        seq = DavisSequence(name=name, image_dir=img_dir, annotation_dir=ann_dir, frame_ids=ids)
        if not seq.annotation_path(0).is_file():
            raise UserError(seq.annotation_path(0), "first-frame annotation not found")
        out.append(seq)
    return base, out


def synthetic_sequences(
    num_sequences: int = 8,
    num_frames: int = 16,
    height: int = 128,
    width: int = 160,
    seed: int = 0,
) -> list[InMemorySequence]:
    """A DAVIS-like set from the synthetic world: its foreground instances are the objects.

    Each clip's instance ids (0 background, 1..K foreground layers, every object visible in
    frame 0) become DAVIS object ids; sequences are named ``synth_000``...

    Args:
        num_sequences: number of clips.
        num_frames: frames per clip (>= 3: the first and last frames are not scored).
        height: frame height in pixels.
        width: frame width in pixels.
        seed: world seed (the clips are deterministic from it).
    """
    from mcjepa_cli.data.synthetic import SyntheticVideos

    if num_frames < 3:
        raise UserError(
            f"--num-frames {num_frames}",
            "expected at least 3 frames (the first and last are not scored)",
        )
    videos = SyntheticVideos(num_sequences, num_frames, height, width, seed=seed)
    out = []
    for i in range(len(videos)):
        item = videos[i]
        labels = item["instances"].numpy()  # (T, H, W) int64
        if labels.max(initial=0) > 254:
            raise UserError(
                item["name"], f"too many objects for a palette PNG: {int(labels.max())}"
            )
        out.append(InMemorySequence(
            name=str(item["name"]), frames=item["frames"], labels=labels.astype(np.uint8)
        ))
    return out
