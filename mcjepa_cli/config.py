"""Recipes: typed defaults (dataclasses) <- a YAML file <- ``--set a.b=value`` overrides.

A recipe YAML holds only what differs from the defaults, optionally on top of another recipe
(``base: <name or path>``). Unknown keys and wrong types are ``UserError``s naming the key and
the nearest valid one. The resolved recipe is saved in every run directory and checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from mcjepa_cli.data.augment import FlowAugmentConfig
from mcjepa_cli.data.sources import AugmentConfig, FlowSource, ImageSource
from mcjepa_cli.data.synthetic import SyntheticConfig
from mcjepa_cli.errors import UserError
from mcjepa_cli.losses.objective import LossConfig
from mcjepa_cli.models.config import DECODER_NORMS, ModelConfig


@dataclass
class DataConfig:
    """What the two branches read, at which sizes and batch sizes."""

    # frame-pair sources for the flow branch, mixed with per-source repetition counts
    flow: list[FlowSource] = field(default_factory=lambda: [FlowSource()])
    # image sources for the content (VICReg) branch
    images: list[ImageSource] = field(default_factory=lambda: [ImageSource()])
    flow_batch_size: int = 8  # frame pairs per step, all processes together
    image_batch_size: int = 384  # images per step (each seen as two views), all processes together
    flow_size: list[int] = field(default_factory=lambda: [384, 832])  # training crop (H, W)
    image_size: int = 224  # side of the VICReg RandomResizedCrop
    num_workers: int = 4  # DataLoader workers per process (0 = load in the main process)
    on_error: str = "stop"  # corrupt sample: "stop" (exit 2 naming the file) or "skip" (count it)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # VICReg two-view augmentations
    flow_augment: FlowAugmentConfig = field(default_factory=FlowAugmentConfig)  # frame-pair flips/swap/rescale
    video_cache_mb: float = 2048  # memory for a video source's decoded frames


@dataclass
class OptimConfig:
    """AdamW with one learning rate per part of the network."""

    lr_encoder: float = 3e-4
    lr_flow_head: float = 1e-4
    lr_expander: float = 3e-4
    weight_decay: float = 0.05  # not applied to biases and normalisation weights
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # max gradient norm of each part (encoder, flow head, expander); 0 = off
    final_lr_ratio: float = 0.0  # cosine schedule ends at lr * final_lr_ratio


@dataclass
class ScheduleConfig:
    """Training length, warm-up and flow start, in steps or in epochs."""

    unit: str = "epochs"  # "steps" or "epochs" (epochs of the content data)
    total: float = 100  # training length in `unit`
    warmup: float = 10  # linear learning-rate warm-up in `unit`
    flow_start: float = 10  # the flow objective joins after this much (SSL-only warm-up)
    # The staged flow objective (ARFlow's two stages, UFlow/SMURF's occlusion schedule), in
    # `unit`, counted from flow_start: until ssim_start the reconstruction leaves out its SSIM
    # share (loss.photo_ssim) and uses only the robust terms (Charbonnier, L2, census); until
    # occlusion_start no occlusion masks are applied (masks from a still-poor flow mask the
    # hard pixels). 0 = from the first flow step.
    ssim_start: float = 0
    occlusion_start: float = 0
    # steps per epoch when unit is "epochs"; null = len(content data) // image_batch_size
    steps_per_epoch: int | None = None


@dataclass
class EvalSetConfig:
    """A flow-eval dataset scored while training (``train.eval_sets``)."""

    name: str = "synthetic"  # any flow-eval dataset: sintel, kitti-2015, middlebury, synthetic, ...
    root: str | None = None  # the dataset's own folder; null = $MCJEPA_DATA/<Name>
    pass_name: str | None = None  # Sintel / Things: clean, final or both; null = every pass present
    split: str | None = None  # null = the dataset's first split with ground truth


@dataclass
class TrainConfig:
    """How the run is executed, logged and checkpointed."""

    seed: int = 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N, mps
    precision: str = "auto"  # auto (bf16 on CUDA, fp16 on GPUs without bf16, fp32 on CPU), bf16, fp16, fp32
    # the expander's BatchNorm as SyncBatchNorm under DDP, as in VICReg (statistics over the
    # global batch): auto (on under NCCL; off in one process and under gloo on CPU, where
    # SyncBatchNorm does not run), on (CUDA only), off; YAML reads a bare on/off as true/false,
    # which mean the same
    sync_bn: str | bool = "auto"
    log_every: int = 20  # steps between metrics.jsonl records
    checkpoint_every: int = 1000  # steps between periodic checkpoints (last.pt is rewritten too)
    keep_checkpoints: int = 3  # periodic checkpoints kept (last.pt always kept)
    max_nonfinite_steps: int = 20  # consecutive skipped non-finite steps before the run fails
    eval_pairs: int = 64  # held-out synthetic pairs scored in the end-of-run report
    # steps between held-out synthetic EPE evaluations during the run (metrics.jsonl "eval"
    # records, TensorBoard eval/*); 0 = only the end-of-run report
    eval_every: int = 0
    eval_size: list[int] = field(default_factory=lambda: [128, 160])  # their (H, W)
    # flow-eval datasets (real ones with a root, or synthetic) also scored every eval_every
    # steps and at the end: pooled EPE per set in metrics.jsonl, TensorBoard, the console and
    # the report, e.g. [{name: middlebury, root: data/middlebury}, {name: sintel, root: ...}]
    eval_sets: list[EvalSetConfig] = field(default_factory=list)
    # steps between measurements of the gradient norm each objective sends into the encoder
    # (one extra backward per objective; metrics.jsonl "encoder_grad_norm"); 0 = off
    grad_norms_every: int = 0
    # at the end of the run, PNG plots of metrics.jsonl and a held-out flow panel into
    # <run>/report/ (the same as `mcjepa report RUN`), linked from summary.md
    report_plots: bool = True
    channels_last: bool = False  # channels_last memory format (often faster on GPU)
    compile: bool = False  # torch.compile the training step's model
    inject_nan_at: list[int] = field(default_factory=list)  # testing hook: steps whose loss is made NaN


@dataclass
class Recipe:
    """A complete pretraining recipe."""

    name: str = "mcjepa"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------
# typed construction from plain dicts


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp`` and convert (int -> float, dict -> dataclass)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, source)
            except UserError as e:
                errors.append(e)
        raise _type_error(key, value, tp, source)
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _type_error(key, value, tp, source)
        return [_convert(v, arg, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _type_error(key, value, tp, source)
        return from_dict(tp, value, prefix=key, source=source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, tp, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(key, value, tp, source)
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        if number is not None:
            where = f"{source}: " if source else ""
            raise UserError(f"{where}{key}", f"expected a finite number, got {value!r}")
        raise _type_error(key, value, tp, source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, tp, source)
    if tp is Any:
        return value
    raise TypeError(f"unsupported recipe field type {tp!r} for {key}")


def _type_error(key: str, value: Any, tp: Any, source: str) -> UserError:
    where = f"{source}: " if source else ""
    return UserError(f"{where}{key}", f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", source: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, filling missing fields with defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise unknown_key_error(full, str(k), names, prefix, source)
        kwargs[k] = _convert(v, hints[k], full, source)
    return cls(**kwargs)


def unknown_key_error(full: str, key: str, names: list[str], prefix: str, source: str) -> UserError:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    valid = close[0] if close else names[0] if names else ""
    dotted = f"{prefix}.{valid}" if prefix else valid
    hint = f"did you mean '{dotted}'?" if close else f"valid keys here: {', '.join(names)}"
    where = f"{source}: " if source else ""
    return UserError(f"{where}unknown key '{full}'", hint)


def to_dict(obj: Any) -> Any:
    """Plain nested dict/list form of a recipe (YAML/JSON/checkpoint friendly)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# ---------------------------------------------------------------------------------------
# files, names and overrides


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes by name: the packaged recipes (and the repo's ``recipes/``)."""
    here = Path(__file__).resolve().parent
    dirs = [here / "recipes", here.parent / "recipes"]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def available_recipes() -> list[str]:
    names = set()
    for d in recipe_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_recipe(spec: str) -> Path:
    """A recipe path, or the name of a packaged recipe (``quickstart``)."""
    try:
        p = Path(spec).expanduser()
        is_file = p.is_file()
    except (RuntimeError, ValueError, OSError):  # '~nosuchuser', an embedded NUL, ...
        raise UserError(repr(spec), "not a usable recipe path or name") from None
    if is_file:
        return p
    if p.suffix in (".yaml", ".yml") or "/" in spec or "\\" in spec:
        if p.exists():
            raise UserError(p, "expected a YAML recipe file, found a folder")
        raise UserError(p, "recipe file not found")
    for d in recipe_dirs():
        cand = d / f"{spec}.yaml"
        if cand.is_file():
            return cand
    raise UserError(
        spec, f"no such recipe file or packaged recipe; packaged recipes: {', '.join(available_recipes())}"
    )


MAX_YAML_NODES = 100_000  # a recipe has a few hundred; aliases may not expand past this


class YamlTooLarge(ValueError):
    """A YAML document whose aliases expand past ``MAX_YAML_NODES`` nodes (or refer to
    themselves): refused before any Python object is built from it."""


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of ``root`` with every alias expanded, counted without expanding (memoised)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise YamlTooLarge("an alias refers to a node that contains it (a recursive document)")
        open_.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise YamlTooLarge(f"aliases expand it past {MAX_YAML_NODES:,} values")
        return total

    return size(root)


class _CappedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose aliases expand past a size (a
    "billion laughs" document costs nothing to parse but everything to walk or print)."""

    def get_single_node(self):  # type: ignore[no-untyped-def]
        node = super().get_single_node()
        if node is not None:
            _expanded_nodes(node)
        return node


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the alias-expansion cap (raises ``YamlTooLarge``)."""
    loader = _CappedLoader(text)  # what yaml.safe_load does, with the capped SafeLoader
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """``yaml.safe_load`` a mapping; syntax errors and non-mappings are UserErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(path, f"cannot read recipe ({e.__class__.__name__})") from None
    try:
        data = safe_load_yaml(text)
    except YamlTooLarge as e:
        raise UserError(path, f"refused: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(path, f"YAML error{where}: {problem}") from None
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. a date like 2024-13-45
        raise UserError(path, f"YAML error: {e.__class__.__name__}: {e}") from None
    if data is None or data == {}:
        raise UserError(path, "the recipe is empty; expected a mapping of recipe sections "
                        "(e.g. 'base: quickstart' and the fields to change)")
    if not isinstance(data, dict):
        raise UserError(path, f"expected a mapping of recipe sections, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise UserError(path, "recipe 'base' chain loops back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"{path}: base", f"expected a recipe name or path, got {base!r}")
    base_path = Path(base)
    if not base_path.is_absolute() and (path.parent / base).is_file():
        base_path = path.parent / base
    else:
        base_path = find_recipe(base)
    return _merge(_load_layers(base_path, (*seen, path.resolve())), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr_encoder=1e-3"`` -> (["optim", "lr_encoder"], 0.001)."""
    if "=" not in text:
        raise UserError(f"--set {text}", "expected section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise UserError(f"--set {text}", "expected section.key=value")
    try:
        value = safe_load_yaml(raw) if raw.strip() != "" else ""
    except YamlTooLarge as e:
        raise UserError(f"--set {key.strip()}", f"refused value: {e}") from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        value = raw
    return parts, value


def _set_path(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    cls: Any = Recipe
    node = data
    for i, p in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        prefix = ".".join(parts[:i])
        if p not in names:
            raise unknown_key_error(".".join(parts[: i + 1]), p, names, prefix, "--set")
        tp = typing.get_type_hints(cls)[p]
        if i == len(parts) - 1:
            node[p] = value
            return
        if not dataclasses.is_dataclass(tp):
            raise UserError(f"--set {text}", f"'{'.'.join(parts[: i + 1])}' is not a section")
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {text}", f"'{'.'.join(parts[: i + 1])}' is not a section")
        cls = tp


def load_recipe(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Resolve a recipe: defaults <- YAML (with its ``base`` chain) <- ``--set`` overrides.

    Args:
        spec: a YAML path or the name of a packaged recipe.
        overrides: ``section.key=value`` strings (values parsed as YAML, then type-checked).
    """
    path = find_recipe(spec)
    source = str(path)
    data = migrate_recipe_dict(_load_layers(path), source)
    recipe = from_dict(Recipe, data, source=source)  # validates the file's own keys first
    if overrides:
        data = to_dict(recipe)
        for text in overrides:
            parts, value = parse_override(text)
            _set_path(data, parts, value, text)
        recipe = from_dict(Recipe, data, source="--set")
    if "name" not in data or not data.get("name"):  # the file's name, made a safe folder name
        recipe.name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip("._-")[:100] or "recipe"
    validate_recipe(recipe)
    return recipe


def recipe_from_dict(data: dict[str, Any], source: str = "checkpoint") -> Recipe:
    """Rebuild a Recipe from its saved plain form (run directory, checkpoint)."""
    return from_dict(Recipe, migrate_recipe_dict(data, source), source=source)


def migrate_recipe_dict(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Recipes written before a field moved, read with today's fields (same behaviour).

    ``loss.occlusion_start_step`` (a global step, before 0.x) became ``schedule.occlusion_start``
    (in the schedule's unit, counted from the flow start).
    """
    loss = data.get("loss")
    if not isinstance(loss, dict) or "occlusion_start_step" not in loss:
        return data
    data = {**data, "loss": {k: v for k, v in loss.items() if k != "occlusion_start_step"}}
    old = loss["occlusion_start_step"]
    if isinstance(old, bool) or not isinstance(old, int) or old < 0:
        raise UserError(f"{source}: loss.occlusion_start_step",
                        f"expected a step number >= 0, got {old!r}")
    sched = dict(data.get("schedule") or {})
    per_unit = 1 if sched.get("unit", "epochs") == "steps" else sched.get("steps_per_epoch")
    flow_start = sched.get("flow_start", ScheduleConfig.flow_start)
    if old and not (isinstance(per_unit, int) and isinstance(flow_start, (int, float))):
        raise UserError(f"{source}: loss.occlusion_start_step",
                        "this field became schedule.occlusion_start (in the schedule's unit, "
                        "counted from schedule.flow_start); set that instead")
    if old:
        sched["occlusion_start"] = max(0.0, old / per_unit - flow_start)
    data["schedule"] = sched
    return data


MAX_SCHEDULE = 1e9  # steps or epochs; the trainer also bounds the step count it plans


def validate_recipe(r: Recipe) -> None:
    """Cross-field checks with messages that name the key."""
    def bad(key: str, expected: str) -> UserError:
        return UserError(key, expected)

    if r.schedule.unit not in ("steps", "epochs"):
        raise bad("schedule.unit", f"expected 'steps' or 'epochs', got {r.schedule.unit!r}")
    for key in ("total", "warmup", "flow_start", "ssim_start", "occlusion_start"):
        value = getattr(r.schedule, key)
        if not math.isfinite(value) or value > MAX_SCHEDULE:
            raise bad(f"schedule.{key}", f"expected a finite length of at most {MAX_SCHEDULE:g} "
                      f"{r.schedule.unit}, got {value!r}")
    if r.schedule.total <= 0:
        raise bad("schedule.total", f"expected a positive length, got {r.schedule.total}")
    if r.schedule.warmup < 0 or r.schedule.flow_start < 0:
        raise bad("schedule.warmup", "warmup and flow_start must be >= 0")
    if r.data.on_error not in ("stop", "skip"):
        raise bad("data.on_error", f"expected 'stop' or 'skip', got {r.data.on_error!r}")
    if len(r.data.flow_size) != 2 or min(r.data.flow_size) <= 0:
        raise bad("data.flow_size", f"expected [height, width], got {r.data.flow_size}")
    if r.model.flow_head.decoder_norm not in DECODER_NORMS:
        raise bad("model.flow_head.decoder_norm",
                  f"expected one of {', '.join(DECODER_NORMS)}, got {r.model.flow_head.decoder_norm!r}")
    if any(s < 1 for s in r.model.flow_head.strides):
        raise bad("model.flow_head.strides", f"expected positive strides, got {r.model.flow_head.strides}")
    coarsest = max(r.model.flow_head.strides) if r.model.flow_head.strides else 64
    for side in r.data.flow_size:
        if side % coarsest:
            raise bad("data.flow_size", f"sides must be multiples of the coarsest flow stride "
                      f"{coarsest} (model.flow_head.strides), got {r.data.flow_size}")
    if r.data.flow_batch_size < 1 and r.data.flow:
        raise bad("data.flow_batch_size", "expected >= 1")
    if r.model.content and not r.data.images:
        raise bad("data.images", "the content branch (model.content: true) needs at least one image source")
    if r.model.content and r.data.image_batch_size < 2:
        raise bad("data.image_batch_size", "VICReg needs at least 2 images per step")
    if r.data.image_size < 32:
        raise bad("data.image_size", f"expected >= 32 (the stride-32 level needs one cell), got {r.data.image_size}")
    if r.train.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise bad("train.precision", f"expected auto, bf16, fp16 or fp32, got {r.train.precision!r}")
    if r.loss.smoothness_order not in (1, 2):
        raise bad("loss.smoothness_order", f"expected 1 or 2, got {r.loss.smoothness_order}")
    if len(r.optim.betas) != 2:
        raise bad("optim.betas", f"expected two numbers, got {r.optim.betas}")
    if not r.model.content and r.loss.flow_weight <= 0:
        raise bad("loss.flow_weight", "a flow-only recipe (model.content: false) needs flow_weight > 0")
    if r.train.log_every < 1 or r.train.checkpoint_every < 1:
        raise bad("train.log_every", "log_every and checkpoint_every must be >= 1")
    if r.train.eval_every < 0:
        raise bad("train.eval_every", f"expected >= 0 (0 = only at the end), got {r.train.eval_every}")
    feg = r.loss.flow_encoder_grad
    if not feg or not all(0.0 <= v <= 1.0 for v in feg):
        raise bad("loss.flow_encoder_grad",
                  f"expected a list of scales in [0, 1], one per level, got {feg}")
    if r.train.grad_norms_every < 0:
        raise bad("train.grad_norms_every",
                  f"expected >= 0 (0 = off), got {r.train.grad_norms_every}")
    from mcjepa_cli.recipe_checks import check_fields

    check_fields(r)  # the range or set of values of every field (recipe_checks.RULES)


def dump_recipe(recipe: Recipe) -> str:
    """YAML text of a resolved recipe."""
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)
