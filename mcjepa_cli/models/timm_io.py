"""Moving encoder weights between mcjepa and plain timm ConvNeXt state dicts.

Key map (ours -> timm): ``encoder.stem_a`` + ``encoder.stem_b`` -> ``stem.0`` (folded, exact),
``encoder.stem_norm`` -> ``stem.1``, ``encoder.stages.*`` -> ``stages.*``. Our extra stride-64
level (``encoder.extra``) has no timm counterpart and is not exported; timm's ``head.norm`` has
no counterpart of ours: ``identity_head_norm`` gives it LayerNorm's own initialisation (weight 1,
bias 0) so that an export loads strictly, and importing ignores it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mcjepa_cli.errors import UserError
from mcjepa_cli.models.encoder import factorise_stem, fold_stem


def encoder_to_timm_state_dict(model) -> dict[str, torch.Tensor]:
    """The encoder's weights under timm ConvNeXt key names (stem folded to 4x4/stride 4)."""
    enc = model.encoder
    w, b = fold_stem(enc.stem_a, enc.stem_b)
    out: dict[str, torch.Tensor] = {"stem.0.weight": w.contiguous(), "stem.0.bias": b.contiguous()}
    for k, v in enc.stem_norm.state_dict().items():
        out[f"stem.1.{k}"] = v.detach().clone()
    for k, v in enc.stages.state_dict().items():
        out[f"stages.{k}"] = v.detach().clone()
    return out


def identity_head_norm(channels: int) -> dict[str, torch.Tensor]:
    """timm's ``head.norm`` LayerNorm at its initialisation (weight 1, bias 0) for ``channels``.

    It only enters timm's pooled output (``forward_head``): the pooled last stage is still
    normalised over channels, with no learned scale or shift.
    """
    return {"head.norm.weight": torch.ones(channels), "head.norm.bias": torch.zeros(channels)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(path, "weights file not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise UserError(
                path, f"not a readable safetensors file ({e.__class__.__name__})"
            ) from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals and corrupt files alike
        raise UserError(
            path, f"not a readable weights file with weights_only loading ({e.__class__.__name__})"
        ) from None
    for key in ("state_dict", "model", "model_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(path, "expected a state dict of tensors")
    return sd


def load_timm_encoder_weights(model, path: str | Path) -> None:
    """Initialise the encoder from a timm ConvNeXt state dict on disk (stem factorised exactly)."""
    sd = read_state_dict(path)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if "stem.0.weight" not in sd:
        raise UserError(path, "not a timm ConvNeXt state dict (no 'stem.0.weight')")
    enc = model.encoder
    if tuple(sd["stem.0.weight"].shape) != (enc.stem_b.out_channels, 3, 4, 4):
        raise UserError(
            path,
            f"stem shape {tuple(sd['stem.0.weight'].shape)} does not match "
            f"{enc.arch} (expected ({enc.stem_b.out_channels}, 3, 4, 4))",
        )
    ours = factorise_stem(sd["stem.0.weight"], sd["stem.0.bias"], enc.stem_a.out_channels)
    for k in ("weight", "bias"):
        ours[f"stem_norm.{k}"] = sd[f"stem.1.{k}"]
    for k, v in sd.items():
        if k.startswith("stages."):
            ours[k] = v
    try:
        missing, unexpected = enc.load_state_dict(ours, strict=False)
    except RuntimeError as e:  # shape mismatch: another architecture
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(path, f"weights do not fit {enc.arch}: {first[:200]}") from None
    missing = [k for k in missing if not k.startswith("extra.")]
    if missing or unexpected:
        raise UserError(
            path,
            f"weights do not fit {enc.arch}: missing {missing[:3]}, unexpected {unexpected[:3]}",
        )
