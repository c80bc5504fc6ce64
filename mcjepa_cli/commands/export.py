"""``mcjepa export``: the encoder to timm, the flow model to ONNX / TorchScript / torch.export."""

from __future__ import annotations

import typer

from mcjepa_cli.errors import UserError


def export_command(
    checkpoint: str = typer.Argument(
        ...,
        metavar="CHECKPOINT",
        show_default=False,
        help="Checkpoint file, run directory, or 'latest' (the newest run under runs/).",
    ),
    format_: str = typer.Option(
        "timm",
        "--format",
        "-f",
        help="timm: the encoder as a timm ConvNeXt state dict (.safetensors). onnx, torchscript "
        "(torch.jit.trace, deprecated upstream) or export (torch.export, .pt2): the flow model "
        "(image1, image2) -> flow at the fixed --size; other sizes are refused when it runs.",
    ),
    output: str = typer.Option(
        None,
        "--output",
        "-o",
        help="File to write (atomically) (default: "
        "<run>/export/<checkpoint>_encoder_<arch>.safetensors or "
        "<run>/export/<checkpoint>_flow_<H>x<W>.<onnx|torchscript.pt|pt2>).",
        show_default=False,
    ),
    size: tuple[int, int] = typer.Option(
        None,
        "--size",
        metavar="H W",
        help="Input height and width of the exported flow model, e.g. --size 384 832 "
        "(default: the recipe's data.flow_size); the export runs at this size only. Not used by "
        "--format timm.",
        show_default=False,
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Reload the export and compare it with PyTorch: timm's stage outputs, or the flow of "
        "a synthetic pair and the refusal of another size (ONNX: where onnxruntime is "
        "installed).",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an existing output file (never the checkpoint itself).",
    ),
) -> None:
    """Export a checkpoint: the encoder for timm, or the flow model for ONNX / torch.export."""
    from mcjepa_cli.export import FORMATS, export_checkpoint

    fmt = format_.strip().lower()
    if fmt not in FORMATS:
        raise UserError(f"--format {format_}", f"expected one of {', '.join(FORMATS)}")
    result = export_checkpoint(
        checkpoint, fmt, output=output, size=tuple(size) if size else None, check=check,
        overwrite=overwrite,
    )
    shape = f" at {result.size[0]}x{result.size[1]} only" if result.size else ""
    print(
        f"wrote {result.path} ({result.format}, {result.arch}{shape}, {result.bytes / 1e6:.1f} MB)"
    )
    if result.checked:
        print(
            f"checked: {result.check}: max |diff| {result.max_abs_diff:.2e} "
            f"(largest value {result.reference_max:.3g})"
        )
        if result.other_size_error:
            print(f"other sizes are refused: {result.other_size_error}")
    else:
        print(result.check)
