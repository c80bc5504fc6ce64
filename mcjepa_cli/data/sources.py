"""Typed descriptions of pretraining data sources (recipe ``data.flow`` / ``data.images``)."""

from __future__ import annotations

from dataclasses import dataclass, field

FLOW_SOURCE_NAMES = ("synthetic", "sintel", "kitti-2015", "kitti-2012", "chairs", "things", "hd1k",
                     "frames", "video")
IMAGE_SOURCE_NAMES = ("synthetic", "imagefolder", "imagenet")


@dataclass
class FlowSource:
    """One source of consecutive frame pairs for the flow branch (labels, if any, ignored)."""

    # synthetic | sintel | kitti-2015 | kitti-2012 | chairs | things | hd1k |
    # frames (a folder of frame folders) | video (a video file or a folder of videos)
    name: str = "synthetic"
    # the dataset's own folder (DESIGN.md section 6); null = $MCJEPA_DATA/<Name>; unused for synthetic
    root: str | None = None
    repeat: int = 1  # how many times this source is repeated in the mix
    split: str = "training"  # benchmark split whose frames are used
    passes: list[str] = field(default_factory=lambda: ["clean", "final"])  # Sintel / Things passes
    length: int = 100000  # synthetic only: pairs per epoch of this source (the world is endless)
    # KITTI only: false = the benchmark's 10 -> 11 pair of each scene (~200 per version, what
    # the recipes' repeat counts assume), even where the multi-view extension's frames 00-20
    # share the folder; true = every consecutive pair 00 -> 01 ... 19 -> 20 (~20x as many:
    # lower repeat to keep the source's share of the mix)
    multiview: bool = False


@dataclass
class ImageSource:
    """One source of still images for the content (VICReg) branch."""

    name: str = "synthetic"  # synthetic | imagefolder | imagenet (ImageFolder layout, labels ignored)
    root: str | None = None  # the dataset's folder; null = $MCJEPA_DATA/ImageNet for imagenet
    repeat: int = 1
    split: str = "train"  # sub-folder used when present (ImageNet's train/)
    length: int = 100000  # synthetic only: images per epoch
    source_size: int = 160  # synthetic only: side of the rendered image before augmentation


@dataclass
class AugmentConfig:
    """VICReg two-view augmentations (DESIGN.md 1.4); view-specific probabilities are [view1, view2]."""

    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    flip: float = 0.5
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: list[float] = field(default_factory=lambda: [1.0, 0.1])
    solarize_prob: list[float] = field(default_factory=lambda: [0.0, 0.2])
