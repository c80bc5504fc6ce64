"""The range or set of values of every recipe field, checked before anything runs.

``RULES`` maps each leaf key of the recipe (``optim.betas``; entries of the list-valued
sections as ``data.flow[].repeat``) to a rule; ``check_fields`` applies them and raises a
one-line ``UserError`` naming the key (``data.flow[0].repeat``) and what was expected. A test
asserts that every field of the recipe has a rule, so a new field cannot skip the check.
Cross-field conditions (a flow size divisible by the coarsest stride, VICReg's two images)
stay in ``config.validate_recipe``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from typing import Any

from mcjepa_cli.errors import UserError

BIG = 1e9  # steps, lengths, counts: anything beyond is a typo or an overflow waiting to happen


@dataclasses.dataclass(frozen=True)
class Num:
    """A finite number in [lo, hi] (``lo_open``: lo excluded); ``none``: null allowed."""

    lo: float
    hi: float
    lo_open: bool = False
    none: bool = False
    bad: float | None = None  # the out-of-range value the table test tries (default: > hi)

    def problem(self, v: Any) -> str | None:
        if v is None:
            return None if self.none else "expected a number, got null"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"expected a finite number, got {v!r}"
        if v < self.lo or v > self.hi or (self.lo_open and v == self.lo):
            left = "(" if self.lo_open else "["
            return f"expected a value in {left}{self.lo:g}, {self.hi:g}], got {v!r}"
        return None

    def bad_example(self) -> Any:
        if self.bad is not None:
            return self.bad
        return self.hi * 2 + 1 if self.hi < BIG * 100 else -1


@dataclasses.dataclass(frozen=True)
class Nums:
    """A list of numbers, each by ``item``, with ``length`` items (or ``min_len``..) and an
    order (``ascending``: lo <= hi pairs, ``descending``: strictly)."""

    item: Num
    length: int | None = None
    min_len: int = 0
    ascending: bool = False
    descending: bool = False

    def problem(self, v: Any) -> str | None:
        if not isinstance(v, list):
            return f"expected a list, got {v!r}"
        if self.length is not None and len(v) != self.length:
            return f"expected {self.length} values, got {len(v)}"
        if len(v) < self.min_len:
            return f"expected at least {self.min_len} value(s), got {len(v)}"
        for x in v:
            p = self.item.problem(x)
            if p:
                return p
        if self.ascending and any(a > b for a, b in zip(v, v[1:], strict=False)):
            return f"expected [min, max] with min <= max, got {v}"
        if self.descending and any(a <= b for a, b in zip(v, v[1:], strict=False)):
            return f"expected distinct values, largest first, got {v}"
        return None

    def bad_example(self) -> Any:
        n = self.length or max(self.min_len, 1)
        return [self.item.bad_example()] * n


@dataclasses.dataclass(frozen=True)
class OneOf:
    values: tuple[Any, ...]
    none: bool = False
    booleans: bool = False  # true / false allowed too (YAML 1.1 reads a bare on / off so)

    def problem(self, v: Any) -> str | None:
        if v is None and self.none:
            return None
        if isinstance(v, bool):
            return None if self.booleans else (
                f"expected one of {', '.join(map(str, self.values))}, got {v!r}")
        if v in self.values:
            return None
        return f"expected one of {', '.join(map(str, self.values))}, got {v!r}"

    def bad_example(self) -> Any:
        return "bogus"


@dataclasses.dataclass(frozen=True)
class SubsetOf:
    values: tuple[str, ...]

    def problem(self, v: Any) -> str | None:
        if not isinstance(v, list) or not v or any(x not in self.values for x in v):
            return f"expected a non-empty list of {', '.join(self.values)}, got {v!r}"
        return None

    def bad_example(self) -> Any:
        return ["bogus"]


@dataclasses.dataclass(frozen=True)
class Text:
    """A string matching ``pattern`` (full match), or a path: no NUL byte, at most 4096
    characters; ``none``: null allowed."""

    pattern: str = r"[^\x00]{1,4096}"
    what: str = "a non-empty path without NUL bytes, at most 4096 characters"
    none: bool = False

    def problem(self, v: Any) -> str | None:
        if v is None:
            return None if self.none else f"expected {self.what}, got null"
        if not isinstance(v, str) or not re.fullmatch(self.pattern, v):
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            return f"expected {self.what}, got {shown}"
        return None

    def bad_example(self) -> Any:
        return "\x00"


@dataclasses.dataclass(frozen=True)
class Flag:
    def problem(self, v: Any) -> str | None:
        return None if isinstance(v, bool) else f"expected true or false, got {v!r}"

    def bad_example(self) -> Any:
        return "maybe"


Rule = Num | Nums | OneOf | SubsetOf | Text | Flag

PATH = Text(none=True)
WEIGHT = Num(0, 1e6)  # a loss weight
PROB = Num(0, 1)
STEPS = Num(0, BIG)
NAME = Text(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
            "a name of letters, digits, '.', '_' and '-' (at most 100, no path parts)")


def _rules() -> dict[str, Rule]:
    from mcjepa_cli.data.sources import FLOW_SOURCE_NAMES, IMAGE_SOURCE_NAMES
    from mcjepa_cli.models.config import DECODER_NORMS

    # the flow-eval datasets, without importing their readers (kept in step by a test)
    flow_eval_datasets = ("sintel", "kitti-2015", "kitti-2012", "chairs", "things", "hd1k",
                          "middlebury", "synthetic")
    return {
        "name": NAME,
        "model.encoder.arch": Text(r"convnext\w*", "a timm ConvNeXt name (convnext_atto, "
                                   "convnext_tiny, ...)"),
        "model.encoder.stem_channels": Num(12, 4096, none=True),
        "model.encoder.extra_channels": Num(1, 8192, none=True),
        "model.encoder.drop_path_rate": Num(0, 0.9),
        "model.encoder.init": PATH,
        "model.flow_head.strides": Nums(OneOf((2, 4, 8, 16, 32, 64)), min_len=1,
                                        descending=True),
        "model.flow_head.proj_channels": Num(1, 1024),
        "model.flow_head.radius": Num(0, 32),
        "model.flow_head.normalize_features": Flag(),
        "model.flow_head.decoder_channels": Nums(Num(1, 2048), min_len=1),
        "model.flow_head.decoder_norm": OneOf(DECODER_NORMS),
        "model.flow_head.share_decoder": Flag(),
        "model.flow_head.flow_unit": Num(0, 1e4, lo_open=True),
        "model.flow_head.max_flow": Num(0, 1e5, lo_open=True),
        "model.flow_head.align_corners": Flag(),
        "model.expander.dims": Nums(Num(1, 65536), min_len=1),
        "model.content": Flag(),
        "model.init": PATH,
        "data.flow[].name": OneOf(FLOW_SOURCE_NAMES),
        "data.flow[].root": PATH,
        "data.flow[].repeat": Num(1, 1000),
        "data.flow[].split": Text(r"[A-Za-z0-9_.-]{1,64}", "a split name"),
        "data.flow[].passes": SubsetOf(("clean", "final")),
        "data.flow[].length": Num(1, BIG),
        "data.flow[].multiview": Flag(),
        "data.images[].name": OneOf(IMAGE_SOURCE_NAMES),
        "data.images[].root": PATH,
        "data.images[].repeat": Num(1, 1000),
        "data.images[].split": Text(r"[A-Za-z0-9_.-]{1,64}", "a split name"),
        "data.images[].length": Num(1, BIG),
        "data.images[].source_size": Num(32, 4096),
        "data.flow_batch_size": Num(0, 65536),
        "data.image_batch_size": Num(0, 65536),
        "data.flow_size": Nums(Num(16, 8192), length=2),
        "data.image_size": Num(32, 2048),
        "data.num_workers": Num(0, 256),
        "data.on_error": OneOf(("stop", "skip")),
        # (data.synthetic also checks min <= max itself, naming the field it blames)
        "data.synthetic.min_layers": Num(0, 16, bad=-1),
        "data.synthetic.max_layers": Num(1, 16),
        "data.synthetic.min_object_size": Num(0, 2, lo_open=True, bad=-1),
        "data.synthetic.max_object_size": Num(0, 2, lo_open=True, bad=-1),
        "data.synthetic.max_translation": PROB,
        "data.synthetic.subpixel_fraction": PROB,
        "data.synthetic.max_rotation_deg": Num(0, 180),
        "data.synthetic.max_scale_change": Num(0, 0.5),
        "data.synthetic.camera_motion": PROB,
        "data.synthetic.camera_max_translation": PROB,
        "data.synthetic.camera_max_rotation_deg": Num(0, 180),
        "data.synthetic.camera_max_zoom": Num(0, 0.9),
        "data.synthetic.lighting_change": Num(0, 0.5),
        "data.synthetic.noise_std": PROB,
        "data.synthetic.blur_prob": PROB,
        "data.synthetic.max_blur_sigma": Num(0, 20),
        "data.synthetic.class_hue_spread": PROB,
        "data.synthetic.class_shape_prob": PROB,
        "data.augment.crop_scale": Nums(Num(0, 1, lo_open=True), length=2, ascending=True),
        "data.augment.flip": PROB,
        "data.augment.jitter": Nums(Num(0, 1), length=4),
        "data.augment.jitter_prob": PROB,
        "data.augment.grayscale_prob": PROB,
        "data.augment.blur_prob": Nums(PROB, length=2),
        "data.augment.solarize_prob": Nums(PROB, length=2),
        "data.flow_augment.scale": Nums(Num(0, 10, lo_open=True), length=2, ascending=True),
        "data.flow_augment.hflip": PROB,
        "data.flow_augment.vflip": PROB,
        "data.flow_augment.swap": PROB,
        "data.video_cache_mb": Num(0, 1e7, lo_open=True),
        **{f"loss.{k}": WEIGHT for k in (
            "flow_weight", "content_weight", "photometric", "photo_l1", "photo_l2",
            "photo_ssim", "photo_census", "smoothness", "smoothness_edge",
            "feature_regression", "cycle", "vc", "vc_variance", "vc_covariance", "vicreg_inv",
            "vicreg_var", "vicreg_cov")},
        "loss.level_decay": Num(0, 10, lo_open=True),
        "loss.smoothness_order": OneOf((1, 2)),
        "loss.vc_level_weights": Nums(WEIGHT, min_len=1),
        "loss.vc_samples": Num(2, 1e7),
        "loss.occlusion": Flag(),
        "loss.max_occluded_fraction": PROB,
        "loss.flow_encoder_grad": Nums(PROB, min_len=1),
        "optim.lr_encoder": Num(0, 10),
        "optim.lr_flow_head": Num(0, 10),
        "optim.lr_expander": Num(0, 10),
        "optim.weight_decay": Num(0, 10),
        "optim.betas": Nums(Num(0, 0.99999999), length=2),
        "optim.grad_clip": Num(0, 1e6),
        "optim.final_lr_ratio": PROB,
        "schedule.unit": OneOf(("steps", "epochs")),
        "schedule.total": Num(0, BIG, lo_open=True),
        "schedule.warmup": STEPS,
        "schedule.flow_start": STEPS,
        "schedule.ssim_start": STEPS,
        "schedule.occlusion_start": STEPS,
        "schedule.steps_per_epoch": Num(1, BIG, none=True),
        "train.seed": Num(0, 2**63 - 1),
        "train.device": Text(r"auto|cpu|mps|cuda(:\d{1,3})?", "auto, cpu, cuda, cuda:N or mps"),
        "train.precision": OneOf(("auto", "bf16", "fp16", "fp32")),
        "train.sync_bn": OneOf(("auto", "on", "off"), booleans=True),  # YAML: on/off = true/false
        "train.log_every": Num(1, BIG),
        "train.checkpoint_every": Num(1, BIG),
        "train.keep_checkpoints": Num(0, 1e6),
        "train.max_nonfinite_steps": Num(1, BIG),
        "train.eval_pairs": Num(1, 100000),
        "train.eval_every": STEPS,
        "train.eval_size": Nums(Num(16, 8192), length=2),
        "train.eval_sets[].name": OneOf(flow_eval_datasets),
        "train.eval_sets[].root": PATH,
        "train.eval_sets[].pass_name": OneOf(("clean", "final", "both"), none=True),
        "train.eval_sets[].split": Text(r"[A-Za-z0-9_.-]{1,64}", "a split name", none=True),
        "train.grad_norms_every": STEPS,
        "train.report_plots": Flag(),
        "train.channels_last": Flag(),
        "train.compile": Flag(),
        "train.inject_nan_at": Nums(STEPS),
    }


_CACHE: dict[str, Rule] = {}


def rules() -> dict[str, Rule]:
    if not _CACHE:
        _CACHE.update(_rules())
    return _CACHE


def leaf_keys(cls: Any, prefix: str = "") -> list[str]:
    """Every leaf key of a recipe dataclass, list-of-dataclass entries as ``key[].field``."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(tp):
            out += leaf_keys(tp, f"{prefix}{f.name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            out += leaf_keys(item, f"{prefix}{f.name}[].")
        else:
            out.append(prefix + f.name)
    return out


def check_fields(obj: Any, prefix: str = "", shown: str = "") -> None:
    """Apply ``RULES`` to every field of a recipe (or a section of one)."""
    table = rules()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key, where = prefix + f.name, shown + f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, key + ".", where + ".")
        elif (isinstance(value, Sequence) and not isinstance(value, str) and value
              and dataclasses.is_dataclass(value[0])):
            for i, entry in enumerate(value):
                check_fields(entry, f"{key}[].", f"{where}[{i}].")
        elif key in table:
            problem = table[key].problem(value)
            if problem:
                raise UserError(where, problem)
