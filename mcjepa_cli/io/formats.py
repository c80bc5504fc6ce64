"""Recognise file formats by their bytes, to say plainly what a file is when it is not what a
command expects (issue 25): a safetensors file renamed ``.pt`` and passed as a checkpoint is
reported as safetensors, not as "needs pickled code".

safetensors layout (https://github.com/huggingface/safetensors, "Format"): an unsigned 64-bit
little-endian header length N, then N bytes of UTF-8 JSON that begin with ``{``: an object
mapping each tensor name to ``{"dtype", "shape", "data_offsets"}``, plus an optional
``"__metadata__"`` object of strings; the tensor bytes follow. N is at most 100 MB.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from mcjepa_cli.errors import UserError

SAFETENSORS_MAX_HEADER = 100_000_000  # bytes: the limit the safetensors reader itself enforces
_TENSOR_KEYS = ("dtype", "shape", "data_offsets")


def safetensors_header(path: str | Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file, or None when ``path`` is not one.

    Reads the 8-byte length and the header only (never the tensors); an unreadable file is
    "not one" (the caller's own loader then reports why it cannot be read).
    """
    try:
        with open(path, "rb") as f:
            first = f.read(8)
            if len(first) < 8:
                return None
            (n,) = struct.unpack("<Q", first)
            size = os.fstat(f.fileno()).st_size
            if n < 2 or n > SAFETENSORS_MAX_HEADER or 8 + n > size:
                return None
            text = f.read(n)
    except OSError:
        return None
    if not text.startswith(b"{"):
        return None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is not None and not isinstance(entry, dict):
                return None
        elif not (isinstance(entry, dict) and all(k in entry for k in _TENSOR_KEYS)):
            return None
    return header


def refuse_safetensors_checkpoint(path: str | Path) -> None:
    """Raise a ``UserError`` when ``path``, given as an mcjepa checkpoint, is a safetensors file.

    Call it before ``torch.load``: ``weights_only`` loading would otherwise report such a file
    as one that "needs pickled code".

    Raises:
        UserError: ``<path>: is a safetensors file (...), not an mcjepa checkpoint: expected ...``.
    """
    header = safetensors_header(path)
    if header is None:
        return
    names = [k for k in header if k != "__metadata__"]
    meta = header.get("__metadata__") or {}
    plural = "" if len(names) == 1 else "s"
    held = f"{len(names)} tensor{plural}, e.g. '{names[0]}'" if names else "no tensors"
    origin = ""
    if meta.get("source") == "mcjepa export":
        origin = (f"; it holds {meta.get('arch', 'ConvNeXt')} encoder weights exported for "
                  "timm, which pretraining can start from (model.encoder.init)")
    raise UserError(path, f"is a safetensors file ({held}), not an mcjepa checkpoint: expected "
                    "a .pt file written by mcjepa pretrain (e.g. <run>/checkpoints/last.pt), a "
                    f"run directory or 'latest'{origin}")


__all__ = ["SAFETENSORS_MAX_HEADER", "refuse_safetensors_checkpoint", "safetensors_header"]
