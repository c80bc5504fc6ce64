"""The joint-training table (docs/ablations.md): flow only, content only, joint, random encoder.

Trains the three packaged CPU recipes of equal budget (``ablation_flow_only``,
``ablation_content_only`` and ``quickstart``, the joint one) for each seed, then scores every
checkpoint, and a randomly initialised encoder of the same architecture, on:

- held-out synthetic flow EPE (the run's own end-of-run report, 128 pairs);
- EPE on the real Middlebury pairs (pooled over the four) and on Sintel alley_1 clean / final;
- ``segment-eval --dataset synthetic --preset cpu`` mIoU (probe seed = the run's seed);
- ``davis-eval`` J&F-Mean on the synthetic clips and on the real DAVIS sample.

Usage (about 2 hours on 2 CPU cores for 3 recipes x 3 seeds)::

    python scripts/ablations.py --data ../shared/data --out runs/ablations
    python scripts/ablations.py --data ../shared/data --out runs/ablations --seeds 0 \\
        --rows "joint (quickstart)"   # one cell, e.g. to check a recipe change

Each cell (row x seed) is written to its own file under ``<out>/cells/``; finished runs and
cells are reused, so an interrupted table resumes where it stopped, and invocations for
different rows or seeds can run side by side (``--rows``, ``--seeds``). The table (mean ±
sample standard deviation over seeds) is printed as Markdown and written to ``<out>/table.md``;
every per-seed figure is in ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RECIPES = {  # table row -> packaged recipe
    "flow only": "ablation_flow_only",
    "content only": "ablation_content_only",
    "joint (quickstart)": "quickstart",
}
RANDOM_ROW = "random encoder"
COLUMNS = [  # (key, header, digits)
    ("heldout_epe", "held-out EPE (px)", 3),
    ("middlebury_epe", "Middlebury EPE", 3),
    ("sintel_clean_epe", "Sintel clean EPE", 3),
    ("sintel_final_epe", "Sintel final EPE", 3),
    ("seg_miou", "synthetic mIoU (%)", 2),
    ("davis_synthetic_jf", "synthetic J&F", 3),
    ("davis_real_jf", "DAVIS sample J&F", 3),
]


def _quiet(_: str) -> None:
    pass


def train(recipe: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """Train one recipe at one seed (reused when ``run_dir`` holds a finished run)."""
    from mcjepa_cli.config import load_recipe
    from mcjepa_cli.engine.trainer import pretrain

    summary = run_dir / "summary.json"
    if not summary.is_file():
        rec = load_recipe(recipe, [f"train.seed={seed}", "train.device=cpu"])
        pretrain(rec, output=str(run_dir), overwrite=True, show_progress=False)
    return json.loads(summary.read_text())


def evaluate(model: dict[str, str], data: Path | None, seed: int, work: Path,
             has_flow: bool) -> dict[str, float]:
    """Every column for one model (``{"checkpoint": path}`` or ``{"backbone": "random"}``)."""
    from mcjepa_cli.eval.davis_eval import davis_eval
    from mcjepa_cli.eval.flow_eval import flow_eval
    from mcjepa_cli.eval.segment_eval import segment_eval

    out: dict[str, float] = {}
    ck = model.get("checkpoint")
    backbone = {"checkpoint": ck} if ck else {"backbone": "random", "arch": "convnext_atto"}
    seg_backbone = {"checkpoint": ck} if ck else {"backbone": "random", "arch": "convnext_atto"}
    seg = segment_eval("synthetic", preset="cpu", seed=seed, device="cpu", examples=0,
                       output=work / "segment", log=_quiet, **seg_backbone)
    out["seg_miou"] = 100.0 * seg.miou
    res = davis_eval(dataset="synthetic", device="cpu", output=work / "davis-synthetic",
                     log=_quiet, **backbone)
    out["davis_synthetic_jf"] = res.results["J&F-Mean"]
    if data is not None:
        res = davis_eval(root=data / "davis2017" / "DAVIS", device="cpu",
                         output=work / "davis-real", log=_quiet, **backbone)
        out["davis_real_jf"] = res.results["J&F-Mean"]
        if has_flow and ck:
            rows = flow_eval("middlebury", root=data / "middlebury", checkpoint=ck, device="cpu")
            out["middlebury_epe"] = rows[0]["epe"]
            for row in flow_eval("sintel", root=data / "sintel", checkpoint=ck, device="cpu"):
                out[f"sintel_{row['pass']}_epe"] = row["epe"]
    return out


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(results: dict[str, dict[str, dict[str, float]]], seeds: list[int]) -> str:
    """Markdown: mean ± sample std over seeds (the per-seed values are in results.json)."""
    head = "| row | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for row, per_seed in results.items():
        cells = []
        for key, _, digits in COLUMNS:
            vals = [per_seed[str(s)][key] for s in seeds
                    if str(s) in per_seed and key in per_seed[str(s)]
                    and math.isfinite(per_seed[str(s)][key])]
            cells.append(_fmt(vals, digits))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell_path(out: Path, row: str, seed: int) -> Path:
    return out / "cells" / f"{row.split(' ')[0].replace('(', '')}-seed{seed}.json"


def _run_cell(out: Path, row: str, seed: int, data: Path | None) -> dict[str, float]:
    """Train (for a recipe row) and evaluate one cell; written to its own JSON file, so that
    several invocations (e.g. one per seed, side by side) never write the same file."""
    path = _cell_path(out, row, seed)
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.time()
    if row == RANDOM_ROW:
        values = evaluate({"backbone": "random"}, data, seed, out / f"random-seed{seed}",
                          has_flow=False)
    else:
        recipe = RECIPES[row]
        run = out / f"{recipe}-seed{seed}"
        summary = train(recipe, seed, run)
        values = {"train_s": summary["wall_time_s"]}
        if recipe != "ablation_content_only":  # its flow head is never trained
            values["heldout_epe"] = summary["heldout_epe"]
            values["epe_ratio"] = summary["epe_ratio"]
        if summary.get("embedding_std") is not None:
            values["embedding_std"] = summary["embedding_std"]
        values.update(evaluate({"checkpoint": str(run / "checkpoints" / "last.pt")}, data, seed,
                               run / "eval", has_flow=recipe != "ablation_content_only"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(values, indent=2) + "\n")
    tmp.replace(path)
    print(f"{row}, seed {seed}: {json.dumps(values)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablations"), help="work folder")
    ap.add_argument("--data", type=Path, default=None,
                    help="folder of the real samples (middlebury/, sintel/, davis2017/), "
                         "e.g. ../shared/data; without it the real-data columns stay empty")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=[*RECIPES, RANDOM_ROW], metavar="ROW",
                    choices=[*RECIPES, RANDOM_ROW], help="rows to compute (default: all)")
    ap.add_argument("--table-only", action="store_true",
                    help="print the table from the cells already computed, compute nothing")
    args = ap.parse_args(argv)
    if not args.table_only:
        for row in args.rows:
            for seed in args.seeds:
                _run_cell(args.out, row, seed, args.data)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for row in [*RECIPES, RANDOM_ROW]:
        for seed in args.seeds:
            path = _cell_path(args.out, row, seed)
            if path.is_file():
                results.setdefault(row, {})[str(seed)] = json.loads(path.read_text())
    text = table(results, args.seeds)
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
