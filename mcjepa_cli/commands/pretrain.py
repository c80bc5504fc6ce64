"""``mcjepa pretrain``: train MC-JEPA from a recipe (one process, or DDP under torchrun)."""

from __future__ import annotations

import typer

from mcjepa_cli.errors import UserError


def pretrain_command(
    recipe: str = typer.Argument(
        None, help="Recipe YAML path or packaged recipe name (quickstart, mcjepa_convnext_tiny, "
        "mjepa_flow_only). Optional with --resume.", show_default=False),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a recipe field, e.g. --set optim.lr_encoder=1e-3 "
        "(repeatable)."),
    output: str = typer.Option(
        None, "--output", "-o", help="Run directory [default: runs/<recipe>-<timestamp>, under $MCJEPA_RUNS when set]."),
    resume: str = typer.Option(
        None, "--resume", help="Continue a run exactly: its directory, a checkpoint, or 'latest'."),
    init: str = typer.Option(
        None, "--init", help="Start a new run from an mcjepa checkpoint's weights (file, run "
        "directory or 'latest'): encoder, flow head and expander where they fit; fresh "
        "optimiser, schedule and step 0. Same as --set model.init=..."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Reuse an existing non-empty run directory without resuming."),
    device: str = typer.Option(
        None, "--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps "
        "[default: the recipe's train.device]."),
    precision: str = typer.Option(
        None, "--precision", help="auto, bf16, fp16 (with gradient scaling) or fp32 "
        "[default: the recipe's train.precision]."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not draw the progress bar."),
) -> None:
    """Pretrain MC-JEPA (flow + VICReg) from a YAML recipe and write a run directory."""
    # imported here, not at the top: `mcjepa --help` must not pay for torch (issue 23)
    from mcjepa_cli.config import load_recipe
    from mcjepa_cli.engine.trainer import pretrain

    overrides = list(set_)
    if device:
        overrides.append(f"train.device={device}")
    if precision:
        overrides.append(f"train.precision={precision}")
    if recipe is None and resume is None:
        raise UserError("RECIPE", "give a recipe (path or name, e.g. quickstart) or --resume RUN")
    if resume is not None and (recipe is not None or overrides or init):
        raise UserError("--resume", "a resumed run continues with its own saved recipe; "
                        "drop the RECIPE argument and --set/--device/--precision/--init")
    cfg = load_recipe(recipe, overrides) if resume is None else None
    if cfg is not None and init:
        cfg.model.init = init
    summary = pretrain(cfg, output=output, resume=resume, overwrite=overwrite,
                       show_progress=not no_progress)
    if "heldout_epe" in summary:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"pretraining report: {summary['run_dir']}")
        t.add_column("figure")
        t.add_column("value", justify="right")
        t.add_row("held-out synthetic EPE (px)", f"{summary['heldout_epe']:.3f}")
        t.add_row("zero-flow EPE (px)", f"{summary['zero_flow_epe']:.3f}")
        t.add_row("EPE / zero-flow EPE", f"{summary['epe_ratio']:.3f}")
        if summary.get("embedding_std") is not None:
            t.add_row("content embedding std (collapse < 0.1)", f"{summary['embedding_std']:.3f}")
        for label, epe in (summary.get("eval_sets") or {}).items():
            t.add_row(f"EPE on {label} (px, train.eval_sets)", f"{epe:.3f}")
        t.add_row("wall time (s)", f"{summary['wall_time_s']:.1f}")
        t.add_row("skipped steps / samples",
                  f"{summary['skipped_steps']} / {summary['skipped_samples']}")
        Console().print(t)
