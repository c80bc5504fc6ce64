"""Checkpoints: self-describing, written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes):
``format``, ``version``, ``recipe`` (resolved, plain dict), ``model`` (state dict), ``step``,
and for resuming ``optimizer``, ``scaler``, ``rng``, ``data``. ``--checkpoint`` everywhere takes
a checkpoint file, a run directory (its ``checkpoints/last.pt``) or ``latest`` (the newest run
under ``runs/``).
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

from mcjepa_cli import __version__
from mcjepa_cli.errors import UserError
from mcjepa_cli.io.atomic import atomic_path
from mcjepa_cli.io.formats import refuse_safetensors_checkpoint

CHECKPOINT_FORMAT = "mcjepa-checkpoint"
CHECKPOINT_VERSION = 1
RUNS_DIR = Path("runs")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "mcjepa_version": __version__, **state}
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as e:  # torch's writer reports a failed write (disk full, file too
        # large) as a RuntimeError: give it the file's name like any other failed write
        if not any(k in str(e) for k in ("write", "inline_container", "unexpected pos")):
            raise
        raise OSError(errno.EIO, "the file could not be written (disk full, or a file size "
                      "limit?); the previous checkpoint there is intact", str(path)) from None


def runs_root() -> Path:
    """Where runs live: ``$MCJEPA_RUNS``, else ``./runs`` (new runs and ``latest`` alike)."""
    return Path(os.environ.get("MCJEPA_RUNS") or RUNS_DIR)


def newest_run(runs_dir: Path | None = None) -> Path:
    """The most recently modified run directory under ``runs/`` that holds a checkpoint."""
    base = Path(runs_dir) if runs_dir is not None else runs_root()
    if not base.is_dir():
        raise UserError("latest", f"no runs found: {base}/ does not exist (train one with mcjepa pretrain)")
    runs = [d for d in base.iterdir() if (d / "checkpoints" / "last.pt").is_file()]
    if not runs:
        raise UserError("latest", f"no run under {base}/ has a checkpoints/last.pt")
    return max(runs, key=lambda d: (d / "checkpoints" / "last.pt").stat().st_mtime)


def say_latest(path: Path) -> None:
    """Tell the user which run ``latest`` picked (on stderr: stdout may carry ``--json -``)."""
    print(f"latest: {path}", file=sys.stderr)


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint file, a run directory (-> ``checkpoints/last.pt``) or ``latest``."""
    text = str(spec)
    if text == "latest":
        path = newest_run() / "checkpoints" / "last.pt"
        say_latest(path)
        return path
    p = Path(text).expanduser()
    if p.is_dir():
        cand = p / "checkpoints" / "last.pt"
        if cand.is_file():
            return cand
        if (p / "last.pt").is_file():
            return p / "last.pt"
        raise UserError(p, "run directory has no checkpoints/last.pt")
    if not p.exists():
        raise UserError(p, "checkpoint not found (expected a .pt file, a run directory or 'latest')")
    return p


def load_checkpoint(spec: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check an mcjepa checkpoint safely (``weights_only=True``: never runs code).

    Raises:
        UserError: unreadable, needs pickled code, or not an mcjepa checkpoint.
    """
    path = resolve_checkpoint(spec)
    refuse_safetensors_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or "Unsupported" in text:
            what = f" (it references {found.group(1)})" if found else ""
            raise UserError(path, "refused to load: the file needs pickled code or objects"
                            f"{what}, which weights_only loading never runs; an mcjepa checkpoint "
                            "holds only tensors and plain values") from None
        raise UserError(path, "not a readable PyTorch checkpoint (UnpicklingError)") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError) as e:
        raise UserError(path, f"not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(path, "not an mcjepa checkpoint (expected a file written by mcjepa pretrain)")
    if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("recipe"), dict):
        raise UserError(path, "mcjepa checkpoint is missing its model weights or recipe")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]):
    """Rebuild the model described by a loaded checkpoint and load its weights (strict)."""
    from mcjepa_cli.config import recipe_from_dict
    from mcjepa_cli.models import build_model

    recipe = recipe_from_dict(ckpt["recipe"], source=f"{ckpt.get('path', 'checkpoint')}: recipe")
    try:
        model = build_model(recipe.model)
    except ValueError as e:
        raise UserError(ckpt.get("path", "checkpoint"), f"cannot rebuild its model: {e}") from None
    load_matching_weights(model, ckpt["model"], ckpt.get("path", "checkpoint"),
                          recipe.model.encoder.arch)
    return model, recipe


def load_matching_weights(model: torch.nn.Module, weights: dict[str, Any], path: str | Path,
                          arch: str) -> None:
    """Load ``weights`` strictly into ``model``; a key or shape mismatch is a ``UserError``.

    ``load_state_dict`` raises a multi-line ``RuntimeError`` for a shape mismatch even with
    ``strict=False`` (e.g. convnext_femto weights under a convnext_atto recipe), so keys and
    shapes are compared first and the first difference is named.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [k for k in expected if k in weights and (
        not isinstance(weights[k], torch.Tensor) or weights[k].shape != expected[k].shape)]
    if missing or unexpected or reshaped:
        if reshaped:
            k = reshaped[0]
            got = tuple(weights[k].shape) if isinstance(weights[k], torch.Tensor) else type(weights[k]).__name__
            first = f"e.g. '{k}' is {got}, the model expects {tuple(expected[k].shape)}"
        else:
            first = f"e.g. '{(missing or unexpected)[0]}'"
        raise UserError(path, f"weights do not fit the {arch} model its recipe describes "
                        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} "
                        f"of another shape; {first}); was it saved for another architecture?")
    model.load_state_dict(weights, strict=True)


def load_model(spec: str | Path, device: str | torch.device = "cpu"):
    """Load a trained MC-JEPA model for evaluation.

    Args:
        spec: checkpoint file, run directory, or ``latest``.
        device: where to put the model.

    Returns:
        (model in eval mode on ``device``, resolved recipe as a plain dict).
    """
    ckpt = load_checkpoint(spec)
    model, _ = model_from_checkpoint(ckpt)
    model.to(device).eval()
    return model, ckpt["recipe"]


def build_random_model(arch: str = "convnext_atto", device: str | torch.device = "cpu", seed: int = 0):
    """The same architecture with random initialisation: the baseline of every evaluation."""
    from mcjepa_cli.models import ModelConfig, build_model

    cfg = ModelConfig()
    cfg.encoder.arch = arch
    cfg.content = False  # the expander plays no part in evaluation
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_model(cfg)
    except ValueError as e:
        raise UserError(f"--arch {arch}", str(e)) from None
    finally:
        torch.random.set_rng_state(state)
    return model.to(device).eval()


MODEL_PARTS = ("encoder", "flow_head", "expander")


def init_from_checkpoint(model: torch.nn.Module, spec: str | Path) -> str:
    """Start ``model`` from the weights of an mcjepa checkpoint (``pretrain --init``).

    The encoder must fit exactly (a mismatch is one line naming the first differing key); the
    flow head and the expander are loaded where every one of their tensors fits and left at
    their initialisation otherwise (a recipe may change them). Returns a line saying which.
    """
    ckpt = load_checkpoint(spec)
    path = ckpt["path"]
    weights = ckpt["model"]
    expected = model.state_dict()
    loaded, left = [], []
    for part in MODEL_PARTS:
        prefix = part + "."
        own = {k: v for k, v in expected.items() if k.startswith(prefix)}
        if not own:
            continue
        theirs = {k: v for k, v in weights.items() if k.startswith(prefix)}
        differ = sorted(set(own) ^ set(theirs)) + [
            k for k in own if k in theirs and (not isinstance(theirs[k], torch.Tensor)
                                               or theirs[k].shape != own[k].shape)]
        if not differ:
            getattr(model, part).load_state_dict(
                {k[len(prefix):]: v for k, v in theirs.items()}, strict=True)
            loaded.append(part)
            continue
        k = differ[0]
        why = ("absent from the checkpoint" if not theirs else
               f"'{k}' is missing from the checkpoint" if k not in theirs else
               f"'{k}' is not in this recipe's model" if k not in own else
               f"'{k}' is {tuple(theirs[k].shape)} there, {tuple(own[k].shape)} here")
        if part == "encoder":
            raise UserError(path, f"--init: its encoder does not fit this recipe's "
                            f"{model.cfg.encoder.arch} encoder ({why})")
        left.append(f"{part} ({why})")
    said = f"init: loaded {', '.join(loaded)} from {path}"
    return said + (f"; left at initialisation: {'; '.join(left)}" if left else "")

