"""Figure 5: peak memory of one pretraining step at several batch sizes, one fresh process each.

CPU: peak resident set of the process over the step (absolute, and its increase over the
resident set after building the model, optimiser and batch); CUDA: max allocated.
"""

from __future__ import annotations

from typing import Any

from benchmarks import pretrain_step
from benchmarks.common import BenchContext, run_probe
from benchmarks.setups import StepShape

NAME = "memory"
TITLE = "Peak memory of a pretraining step vs batch size"

CONFIGS = [
    ("quickstart", StepShape(4, (128, 160), 8, 64)),
    ("quickstart", StepShape(8, (128, 160), 16, 64)),
    ("quickstart", StepShape(16, (128, 160), 32, 64)),
    ("mcjepa_convnext_tiny", StepShape(1, (256, 320), 4, 128)),
    ("mcjepa_convnext_tiny", StepShape(2, (256, 320), 8, 128)),
]
QUICK_CONFIGS = [("quickstart", StepShape(1, (64, 64), 2, 32))]


def run(ctx: BenchContext) -> dict[str, Any]:
    rows = []
    for recipe, st in QUICK_CONFIGS if ctx.quick else CONFIGS:
        shape_arg = [st.pairs, list(st.flow_size), st.images, st.image_size]
        out = run_probe(ctx, pretrain_step.NAME, "step_memory",
                        {"recipe": recipe, "side": "ours", "shape": shape_arg})
        rows.append({"recipe": recipe, "shape": st.describe(), "pairs": st.pairs,
                     "images": st.images, "process": out.get("process"), **out["peak_memory"]})
    return {"name": NAME, "title": TITLE,
            "setup": {"what": "one training step (forward, backward, clip, AdamW incl. its state)",
                      "device": str(ctx.device)},
            "rows": rows, "ratios": []}
