"""torch.distributed helpers that degrade to one process (DDP under ``torchrun``).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; we initialise the
process group from them (env:// rendezvous): NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from mcjepa_cli.errors import UserError


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def backend() -> str | None:
    """The process group's backend (``"nccl"``, ``"gloo"``); None when not distributed."""
    return str(dist.get_backend()) if is_initialized() else None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(device_type: str) -> bool:
    """Initialise the process group when launched by torchrun; returns True when distributed."""
    if not launched_by_torchrun() or is_initialized():
        return is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(minutes=30))
    return True


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any rank (one tiny all-reduce)."""
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_int(value: int, device: torch.device) -> int:
    """Max of an int over ranks (e.g. a signal code), one all-reduce."""
    if not is_initialized():
        return value
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """All-gather same-shaped tensors from every rank (no gradient)."""
    if not is_initialized():
        return [t]
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return out


def gather_objects(obj: Any) -> list[Any]:
    """All-gather one picklable object per rank (rank order); ``[obj]`` in one process.

    For small per-rank states (random-number generators): with NCCL the pickled bytes travel
    through the current CUDA device, which ``pretrain`` sets per rank.
    """
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


SYNC_BN_CHOICES = ("auto", "on", "off")


def sync_bn_enabled(choice: str | bool, device_type: str, group_backend: str | None) -> bool:
    """Whether the expander's BatchNorm layers become SyncBatchNorm (recipe ``train.sync_bn``).

    VICReg synchronises its expander's BatchNorm statistics over all GPUs; SyncBatchNorm runs
    only on GPUs (torch raises for CPU tensors once a process group exists; DESIGN.md
    section 6), so under gloo on CPU the expander keeps per-process BatchNorm.

    Args:
        choice: ``auto`` (on when the process group runs NCCL, off otherwise: one process, or
            gloo), ``on`` (CUDA only) or ``off``; True / False (YAML's reading of a bare
            ``on`` / ``off``) mean ``on`` / ``off``.
        device_type: the run's device type (``cuda``, ``cpu``, ``mps``).
        group_backend: :func:`backend` (None when not distributed).

    Raises:
        UserError: ``on`` on CPU / gloo (or another non-CUDA device), or an unknown choice.
    """
    if isinstance(choice, bool):
        choice = "on" if choice else "off"
    if choice == "off":
        return False
    if choice == "auto":
        return group_backend == "nccl"
    if choice != "on":
        raise UserError("train.sync_bn", f"expected one of {', '.join(SYNC_BN_CHOICES)}, "
                        f"got {choice!r}")
    if device_type != "cuda" or group_backend not in (None, "nccl"):
        run = f"{group_backend} on {device_type}" if group_backend else device_type
        raise UserError("train.sync_bn", f"'on' needs CUDA GPUs (NCCL), this run uses {run}: "
                        "SyncBatchNorm does not run on CPU/gloo; use auto (plain BatchNorm "
                        "there) or off")
    return True
