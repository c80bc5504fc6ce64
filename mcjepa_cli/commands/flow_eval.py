"""``mcjepa flow-eval``: score optical flow (a checkpoint, zero flow, flow files) on a benchmark."""

from __future__ import annotations

from typing import Any

import typer

from mcjepa_cli.errors import UserError


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise UserError(f"--size {text}", "expected N or HxW, e.g. 128x160") from None
    if h < 8 or w < 8:
        raise UserError(f"--size {text}", "expected sides of at least 8 pixels")
    return h, w


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_rows(rows: list[dict[str, Any]]) -> None:
    """Print result rows as a rich table, with the aggregation convention below it."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from mcjepa_cli.eval.flow_metrics import describe_aggregation

    has_occ = any("epe_occ" in r for r in rows)
    has_seq = any(r.get("sequence") for r in rows)
    title = "flow-eval" + (f": {rows[0]['evaluated']}, split {rows[0]['split']}" if rows else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("set", no_wrap=True)
    if has_seq:
        table.add_column("sequence", no_wrap=True)
    names = ["EPE", "1px", "3px", "5px", "Fl-all%"] + (["EPE occ", "EPE noc"] if has_occ else [])
    for c in names + ["pixels"]:
        table.add_column(c, justify="right", no_wrap=True)
    for r in rows:
        label = r["dataset"] + (f"/{r['pass']}" if r["pass"] else "")
        cells = [label] + ([r.get("sequence") or "(all)"] if has_seq else [])
        cells += [_fmt(r[k]) for k in ("epe", "px1", "px3", "px5")] + [_fmt(r["fl_all"], 2)]
        cells += [_fmt(r.get("epe_occ")), _fmt(r.get("epe_noc"))] if has_occ else []
        cells.append(str(r["n_pixels"]))
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # a file or pipe: no need to squeeze into 80 columns
        console = Console(width=160)
    console.print(table)
    aggregations = sorted({r["aggregation"] for r in rows})
    for a in aggregations:
        console.print(f"aggregation {describe_aggregation(a)}", markup=False, highlight=False)
    console.print("EPE in px; 1px/3px/5px = fraction of valid pixels with EPE below 1/3/5 px; "
                  "Fl-all = % of valid pixels with EPE > 3 px and EPE > 5% of |gt|"
                  + ("; occ/noc = occluded/non-occluded valid pixels" if has_occ else ""),
                  markup=False, highlight=False)
    for note in sorted({r["note"] for r in rows if r.get("note")}):
        console.print(f"note: {note}", markup=False, highlight=False)


def flow_eval_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="sintel, kitti-2015, kitti-2012, chairs, things, hd1k, middlebury "
        "or synthetic (rendered, needs no files).", show_default=False),
    root: str = typer.Option(
        None, "--root", help="The dataset's own folder (holding training/ for Sintel, KITTI; data/ "
        "for FlyingChairs; frames_cleanpass/ for Things; hd1k_input/ for HD1K; other-data/ and "
        "other-gt-flow/ for Middlebury); default $MCJEPA_DATA/<Name>.", show_default=False),
    pass_name: str = typer.Option(
        None, "--pass", help="Render pass for sintel/things: clean, final or both; default: every "
        "pass present, one row each.", show_default=False),
    split: str = typer.Option(
        None, "--split", help="train (default; the split with ground truth); chairs also val "
        "(FlyingChairs_train_val.txt), things also test.", show_default=False),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Evaluate a trained model: a checkpoint file, a run directory "
        "or 'latest'.", show_default=False),
    model: str = typer.Option(
        None, "--model", help="'zero': the zero-flow baseline.", show_default=False),
    predictions: str = typer.Option(
        None, "--predictions", help="Score flow files already on disk, in the dataset's prediction "
        "layout (see docs/flow-eval.md): any method can be scored.", show_default=False),
    save_predictions: str = typer.Option(
        None, "--save-predictions", help="Also write every prediction here in submission formats "
        "(Sintel .flo tree, KITTI 16-bit PNG, Middlebury .flo); readable by --predictions.",
        show_default=False),
    per_image: bool = typer.Option(
        False, "--per-image", help="Average metrics over images instead of pooling all valid "
        "pixels of the dataset (the default)."),
    per_sequence: bool = typer.Option(
        False, "--per-sequence", help="Add one row per sequence/scene."),
    batch_size: int = typer.Option(4, "--batch-size", help="Pairs (or frame chains) per forward "
                                   "pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    count: int = typer.Option(32, "--count", help="Synthetic set: number of pairs."),
    size: str = typer.Option("128x160", "--size", help="Synthetic set: HxW of the pairs."),
    seed: int = typer.Option(0, "--seed", help="Synthetic set: world seed (validation stream)."),
    json_file: str = typer.Option(
        None, "--json", help="Also write the rows as a JSON list here (atomically).",
        show_default=False),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score optical flow (a checkpoint, zero flow or flow files) on a benchmark's ground truth."""
    from mcjepa_cli.io.json_out import human_output_to_stderr, is_stdout

    with human_output_to_stderr(json_file):
        from mcjepa_cli.eval.flow_eval import flow_eval

        rows = flow_eval(
            dataset, root=root, pass_name=pass_name, split=split, checkpoint=checkpoint,
            model=model,
            predictions=predictions, save_predictions=save_predictions, per_image=per_image,
            per_sequence=per_sequence, batch_size=batch_size, device=device, synthetic_count=count,
            synthetic_size=_parse_size(size), synthetic_seed=seed, json_path=json_file,
            progress=progress,
        )
        print_rows(rows)
        wrote = []
        if save_predictions is not None:
            n = sum(r["n_images"] for r in rows if r.get("sequence") is None)
            wrote.append(f"{save_predictions} ({n} prediction file(s))")
        if json_file is not None and not is_stdout(json_file):
            wrote.append(json_file)
        if wrote:
            print(f"wrote {', '.join(wrote)}")
