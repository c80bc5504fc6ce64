"""torch.distributed helpers that degrade to one process (DDP under ``torchrun``).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; we initialise the
process group from them (env:// rendezvous): NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


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
