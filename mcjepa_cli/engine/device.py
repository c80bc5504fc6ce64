"""Device and precision selection; nothing here assumes CUDA exists."""

from __future__ import annotations

import torch

from mcjepa_cli.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N``/``mps``/``cpu`` as given.

    Raises:
        UserError: an unknown name or a device this machine does not have.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES[1:]:
        raise UserError(f"--device {name}", f"expected one of {', '.join(DEVICE_CHOICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}", "CUDA is not available on this machine; use cpu or auto")
    if base == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}", "MPS is not available on this machine; use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}", "expected cpu, cuda, cuda:N, mps or auto") from None


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``--precision auto|bf16|fp16|fp32`` (None = no autocast).

    ``auto`` is bf16 on CUDA devices that support it, fp16 on older CUDA GPUs (V100), fp32 on
    CPU.
    """
    p = (precision or "auto").lower()
    if p not in ("auto", "bf16", "fp16", "fp32"):
        raise UserError(f"precision {precision}", "expected auto, bf16, fp16 or fp32")
    if p == "fp32":
        return None
    if p == "bf16":
        return torch.bfloat16
    if p == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None
