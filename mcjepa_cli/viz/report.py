"""Pictures of a run: PNG plots of ``metrics.jsonl`` and a flow panel of one held-out pair.

``write_report(run_dir)`` reads what the run has logged so far (it works mid-run) and writes
``<run>/report/``: ``losses.png`` (every loss term), ``optim.png`` (learning rates and the
gradient norm), ``throughput.png``, ``eval.png`` (held-out synthetic EPE and each
``train.eval_sets`` set) when the run evaluated, ``flow.png`` (frames, ground truth, prediction
and end-point error of one held-out synthetic pair, from the newest checkpoint) and
``report.md`` linking them. Plotting uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mcjepa_cli.errors import UserError
from mcjepa_cli.io.atomic import atomic_path, atomic_write_text
from mcjepa_cli.io.jsonl import step_records

# metrics.jsonl keys that are not loss terms
NOT_TERMS = {"step", "epoch", "lr", "steps_per_s", "pairs_per_s", "images_per_s", "time",
             "skipped_steps", "skipped_samples", "grad_norm", "occluded_fraction",
             "encoder_grad_norm", "encoder_grad_norm_by_level"}
THROUGHPUT = ("steps_per_s", "pairs_per_s", "images_per_s")


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, eval records) of a ``metrics.jsonl``; lines that are not JSON
    objects with a step (a record being written, a damaged line) are skipped."""
    train, evals = [], []
    for _, _, rec in step_records(path):
        if rec is None:
            continue
        if rec.get("event") == "eval":
            evals.append(rec)
        elif "event" not in rec:
            train.append(rec)
    return train, evals


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _style(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)


def _finish(plt: Any, fig: Any, out: Path) -> bool:
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return True


def _grid(plt: Any, n: int, title: str) -> tuple[Any, list[Any]]:
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    fig.suptitle(title)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _plot_series(plt: Any, train: list[dict[str, Any]], keys: list[str], out: Path, title: str,
                 scale: Any, label: Any) -> bool:
    """One panel per key of ``train`` on a grid; ``scale(ax, ys)`` sets the y axis."""
    if not keys:
        return False
    fig, axes = _grid(plt, len(keys), title)
    for ax, key in zip(axes, keys, strict=True):
        xs, ys = _series(train, key)
        ax.plot(xs, ys, lw=1)
        scale(ax, ys)
        _style(ax, label(key))
    return _finish(plt, fig, out)


def _log_if_wide(ax: Any, ys: list[float]) -> None:
    if min(ys) > 0 and max(ys) / min(ys) > 50:
        ax.set_yscale("log")


def _plot_terms(plt: Any, train: list[dict[str, Any]], out: Path, run_name: str) -> bool:
    keys = [k for k in train[-1] if k not in NOT_TERMS and _series(train, k)[0]]
    return _plot_series(plt, train, keys, out, f"{run_name}: loss terms (metrics.jsonl)",
                        _log_if_wide, str)


def _plot_optim(plt: Any, train: list[dict[str, Any]], out: Path, run_name: str) -> bool:
    groups = sorted({g for r in train for g in (r.get("lr") or {})})
    if not groups:
        return False
    fig, (ax_lr, ax_gn) = plt.subplots(1, 2, figsize=(10, 3.2))
    fig.suptitle(f"{run_name}: optimiser")
    for g in groups:
        pts = [(r["step"], r["lr"][g]) for r in train if g in (r.get("lr") or {})]
        ax_lr.plot([p[0] for p in pts], [p[1] for p in pts], lw=1, label=g)
    _style(ax_lr, "learning rate per parameter group")
    ax_lr.legend(fontsize=7)
    xs, ys = _series(train, "grad_norm")
    ax_gn.plot(xs, ys, lw=1)
    _style(ax_gn, "gradient norm (before clipping)")
    return _finish(plt, fig, out)


def _plot_throughput(plt: Any, train: list[dict[str, Any]], out: Path, run_name: str) -> bool:
    keys = [k for k in THROUGHPUT if any(r.get(k) for r in train)]
    return _plot_series(plt, train, keys, out, f"{run_name}: throughput",
                        lambda ax, ys: ax.set_ylim(bottom=0),
                        lambda key: key.replace("_per_s", " / s"))


def _plot_eval(plt: Any, evals: list[dict[str, Any]], summary: dict[str, Any] | None,
               out: Path, run_name: str) -> bool:
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in evals:
        for key, label in (("heldout_epe", "held-out synthetic"), ("zero_flow_epe", "zero flow")):
            if isinstance(r.get(key), (int, float)):
                curves.setdefault(label, []).append((r["step"], float(r[key])))
        for label, v in (r.get("eval_sets_epe") or {}).items():
            curves.setdefault(label, []).append((r["step"], float(v)))
    if summary and isinstance(summary.get("steps"), int):  # the end-of-run figures
        end = summary["steps"]
        if isinstance(summary.get("heldout_epe"), (int, float)):
            curves.setdefault("held-out synthetic", []).append((end, summary["heldout_epe"]))
        for label, v in (summary.get("eval_sets") or {}).items():
            curves.setdefault(label, []).append((end, float(v)))
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, pts in curves.items():
        pts = sorted(dict(pts).items())
        style = {"ls": "--", "color": "grey"} if label == "zero flow" else {}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1,
                label=label, **style)
    ax.set_title(f"{run_name}: end-point error (px, pooled)", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("EPE (px)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _finish(plt, fig, out)


def _flow_panel(ckpt_path: Path, out: Path) -> str | None:
    """Frames, ground truth, prediction and EPE map of the first held-out synthetic pair."""
    import torch

    from mcjepa_cli.config import recipe_from_dict
    from mcjepa_cli.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from mcjepa_cli.engine.trainer import held_out_pairs
    from mcjepa_cli.io.images import write_png
    from mcjepa_cli.viz.panels import colormap, compose, flow_to_rgb, to_uint8_rgb

    ckpt = load_checkpoint(ckpt_path)
    model, _ = model_from_checkpoint(ckpt)
    model.eval()
    recipe = recipe_from_dict(ckpt["recipe"], source=f"{ckpt_path}: recipe")
    recipe.train.eval_pairs = 1
    im1, im2, gt = held_out_pairs(recipe)[0]
    with torch.inference_mode():
        pred = model.estimate_flow(im1, im2)[0].float()
    gt = gt[0]
    epe = (pred - gt).norm(dim=0)
    scale = max(float(gt.norm(dim=0).max()), 1e-3)
    max_err = max(float(epe.max()), 1e-3)
    panel = compose([
        (to_uint8_rgb(im1[0]), ["frame 1"]),
        (to_uint8_rgb(im2[0]), ["frame 2"]),
        (flow_to_rgb(gt, scale), [f"ground truth (rim {scale:.1f} px)", "ground truth"]),
        (flow_to_rgb(pred, scale), ["prediction (same scale)", "prediction"]),
        (colormap(epe / max_err), [f"EPE {float(epe.mean()):.2f} px (max {max_err:.1f})",
                                   "EPE"]),
    ])
    write_png(out, panel)
    return f"step {int(ckpt.get('step', 0))}, EPE {float(epe.mean()):.3f} px"


def write_report(run_dir: str | Path, *, flow_panel: bool = True) -> tuple[Path, list[Path]]:
    """Plot a run's metrics into ``<run>/report/`` (works mid-run). Returns the report.md path
    and the PNG files written."""
    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(run, "no metrics.jsonl: not a run directory, or the run has not logged "
                        "a step yet")
    train, evals = read_records(metrics)
    if not train:
        raise UserError(metrics, "no training record yet (the first one comes at "
                        "train.log_every steps)")
    summary = None
    try:
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run / "report"
    name = run.name
    written: list[Path] = []
    sections: list[str] = []
    for fname, title, make in (
        ("losses.png", "Loss terms", lambda p: _plot_terms(plt, train, p, name)),
        ("optim.png", "Learning rates and gradient norm", lambda p: _plot_optim(plt, train, p, name)),
        ("throughput.png", "Throughput", lambda p: _plot_throughput(plt, train, p, name)),
        ("eval.png", "End-point error during training",
         lambda p: _plot_eval(plt, evals, summary, p, name)),
    ):
        if make(out_dir / fname):
            written.append(out_dir / fname)
            sections.append(f"## {title}\n\n![{title}]({fname})\n")
    last = run / "checkpoints" / "last.pt"
    if flow_panel and last.is_file():
        said = _flow_panel(last, out_dir / "flow.png")
        written.append(out_dir / "flow.png")
        sections.append(f"## One held-out synthetic pair ({said})\n\nframes, ground truth, "
                        "prediction (one colour scale) and end-point error\n\n![flow](flow.png)\n")
    steps = train[-1]["step"]
    head = [f"# Run report: {name}", "",
            f"- logged steps: {steps}" + (f" of {summary['steps']} (finished)" if summary else
                                           " (so far)")]
    if summary and isinstance(summary.get("heldout_epe"), (int, float)):
        head.append(f"- held-out synthetic EPE: {summary['heldout_epe']:.3f} px "
                    f"(ratio {summary.get('epe_ratio', float('nan')):.3f})")
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(head) + "\n\n" + "\n".join(sections))
    return report, written
