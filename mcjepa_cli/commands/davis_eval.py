"""``mcjepa davis-eval``: DAVIS 2017 label propagation on frozen features, official J&F scoring."""

from __future__ import annotations

import typer

from mcjepa_cli.errors import UserError


def _parse_hw(text: str, option: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        if len(parts) == 1:
            h = w = int(parts[0])
        elif len(parts) == 2:
            h, w = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise UserError(f"{option} {text}", "expected N or HxW, e.g. 128x160") from None
    if h < 8 or w < 8:
        raise UserError(f"{option} {text}", "expected sides of at least 8 pixels")
    return h, w


def davis_eval_command(
    dataset: str = typer.Option(
        "davis", "--dataset", help="davis (DAVIS 2017 files under --root) or synthetic (DAVIS-like "
        "clips rendered from the synthetic world, no files needed)."),
    root: str = typer.Option(
        None, "--root", help="The DAVIS folder holding JPEGImages/, Annotations/ and ImageSets/ "
        "(default: $MCJEPA_DATA/DAVIS).", show_default=False),
    subset: str = typer.Option(
        "val", "--subset", help="Sequences of ImageSets/2017/<subset>.txt; also names the CSVs."),
    resolution: str = typer.Option(
        "480p", "--resolution", help="Sub-folder of JPEGImages/ and Annotations/ (480p or "
        "Full-Resolution)."),
    sequences: str = typer.Option(
        None, "--sequences", help="Comma-separated sequence names to evaluate (default: the whole "
        "subset).", show_default=False),
    checkpoint: str = typer.Option(
        None, "--checkpoint", "-c", help="Model: a checkpoint file, a run directory or 'latest'.",
        show_default=False),
    backbone: str = typer.Option(
        None, "--backbone", help="'random': the same architecture with random initialisation (the "
        "baseline) instead of --checkpoint.", show_default=False),
    arch: str = typer.Option(
        None, "--arch", help="timm ConvNeXt of --backbone random (default: convnext_atto, the "
        "quickstart's).", show_default=False),
    predictions: str = typer.Option(
        None, "--predictions", help="Score this folder of indexed PNGs (<sequence>/<frame>.png, "
        "any method) instead of propagating.", show_default=False),
    level: str = typer.Option(
        "s8", "--level", help="Pyramid level for the affinities: an index 0-5 (finest first) or a "
        "stride s2, s4, s8, s16, s32, s64 (8, 16, 32, 64 also read as strides)."),
    topk: int = typer.Option(5, "--topk", help="Affinities kept per target cell, over all context "
                             "frames."),
    n_last: int = typer.Option(7, "--n-last", help="Previous predicted frames in the context "
                               "besides the first frame."),
    radius: int = typer.Option(12, "--radius", help="Neighbourhood half-size in feature cells "
                               "(square window)."),
    temperature: float = typer.Option(0.1, "--temperature", help="Affinity temperature: weights "
                                      "exp(cos / temperature)."),
    rescale: bool = typer.Option(
        True, "--rescale/--no-rescale", help="Min-max rescale each upsampled label channel before "
        "the argmax (DINO's norm_mask; part of the published protocol)."),
    size: int = typer.Option(
        None, "--size", help="Input short side in pixels (aspect kept, sides rounded to the "
        "level's stride) (default: 480 for davis, the rendered size for synthetic).",
        show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    output: str = typer.Option(
        None, "--output", "-o", help="Results folder: <sequence>/<frame>.png and the CSV files "
        "(default: davis-eval/<dataset>-<subset>-<model>; with --predictions, that folder).",
        show_default=False),
    json_file: str = typer.Option(
        None, "--json", help="Also write the global results (J&F-Mean, J-Mean, ...) as JSON here.",
        show_default=False),
    num_sequences: int = typer.Option(8, "--num-sequences", help="Synthetic set: number of clips."),
    num_frames: int = typer.Option(16, "--num-frames", help="Synthetic set: frames per clip."),
    synthetic_size: str = typer.Option(
        "128x160", "--synthetic-size", help="Synthetic set: rendered HxW of the clips."),
    seed: int = typer.Option(0, "--seed", help="Synthetic set: world seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result tables."),
) -> None:
    """Propagate first-frame masks through DAVIS 2017 videos (or score PNGs) and report J&F."""
    from mcjepa_cli.io.json_out import human_output_to_stderr

    with human_output_to_stderr(json_file):
        from rich.console import Console
        from rich.table import Table

        from mcjepa_cli.eval.davis_eval import davis_eval
        from mcjepa_cli.eval.davis_metrics import GLOBAL_COLUMNS

        console = Console()
        if backbone == "checkpoint":  # accepted for symmetry with segment-eval
            backbone = None
        result = davis_eval(
            dataset=dataset, root=root, subset=subset, resolution=resolution,
            sequences=[s.strip() for s in sequences.split(",") if s.strip()] if sequences else None,
            checkpoint=checkpoint, backbone=backbone, arch=arch, predictions=predictions,
            level=level, topk=topk, n_last=n_last, radius=radius, temperature=temperature,
            rescale=rescale,
            size=-1 if size is None else size, device=device, output=output, json_path=json_file,
            num_sequences=num_sequences, num_frames=num_frames,
            synthetic_size=_parse_hw(synthetic_size, "--synthetic-size"), seed=seed,
            log=None if quiet else (lambda s: console.print(s, markup=False, highlight=False)),
        )
        per_seq = Table(title=f"davis-eval {result.settings['dataset']} "
                        f"{result.settings['subset']}: per object")
        for col in ("Sequence", "J-Mean", "F-Mean", "J&F-Mean"):
            per_seq.add_column(col, justify="left" if col == "Sequence" else "right")
        for s in result.objects:
            jm, fm = s.j_stats[0], s.f_stats[0]
            per_seq.add_row(s.name, f"{jm:.3f}", f"{fm:.3f}", f"{(jm + fm) / 2:.3f}")
        console.print(per_seq)
        glob = Table(title=f"global ({len(result.objects)} objects)")
        for col in GLOBAL_COLUMNS:
            glob.add_column(col, justify="right")
        glob.add_row(*(f"{result.results[c]:.3f}" for c in GLOBAL_COLUMNS))
        console.print(glob)
        s = result.settings
        if "model" in s:
            console.print(
                f"model: {s['model']}; level {s['level']} (stride {s['stride']}), topk {s['topk']}, "
                f"n_last {s['n_last']}, radius {s['radius']}, temperature {s['temperature']}, "
                f"rescale {s['rescale']}, size {s['size'] or 'native'}, device {s['device']}",
                markup=False, highlight=False,
            )
        names = ", ".join(p.name for k, p in result.files.items() if k != "json")
        where = f"results: {result.output_dir} ({names}; {result.seconds:.1f} s)"
        if json_file is not None:  # --json may point anywhere: name it in full
            where += "; JSON on stdout" if json_file == "-" else f"; JSON: {json_file}"
        console.print(where, markup=False, highlight=False)
