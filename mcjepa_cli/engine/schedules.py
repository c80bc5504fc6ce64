"""Learning-rate schedules shared by pretraining and the linear probe (step based)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_ratio: float = 0.0) -> float:
    """Multiplier at ``step``: linear warm-up from 0 to 1, then cosine decay to ``final_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_poly(step: int, total_steps: int, warmup_steps: int, power: float = 1.0) -> float:
    """Multiplier at ``step``: linear warm-up, then ``(1 - t) ** power`` decay (mmseg's poly)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return (1.0 - t) ** power
