"""``mcjepa segment-eval``: linear semantic segmentation on frozen features (VICRegL protocol)."""

from __future__ import annotations

import typer

from mcjepa_cli.errors import UserError


def segment_eval_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="voc (VOC 2012), cityscapes, ade20k (ADEChallengeData2016) or "
        "synthetic (the procedural world's texture classes).", show_default=False),
    root: str = typer.Option(
        None, "--root", help="The dataset's own folder (VOC2012/, the Cityscapes root, "
        "ADEChallengeData2016/) (default: $MCJEPA_DATA/<Name>).", show_default=False),
    split: str = typer.Option("val", "--split", help="Evaluation split."),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Backbone: a checkpoint file, a run directory or 'latest'.",
        show_default=False),
    backbone: str = typer.Option(
        "checkpoint", "--backbone", help="'checkpoint' (use --checkpoint) or 'random' (same "
        "architecture, random initialisation: the baseline)."),
    arch: str = typer.Option(
        "convnext_atto", "--arch", help="timm ConvNeXt of the random backbone (the quickstart's "
        "by default)."),
    preset: str = typer.Option(
        "protocol", "--preset", help="'protocol' (VICRegL's linear protocol: 512 crops, 40k/160k "
        "steps, batch 16) or 'cpu' (small crops, few steps, minutes on a CPU)."),
    steps: int = typer.Option(None, "--steps", help="Training steps (default: from --preset).",
                              show_default=False),
    batch_size: int = typer.Option(None, "--batch-size", help="Crops per step (protocol: 16).",
                                   show_default=False),
    crop_size: str = typer.Option(
        None, "--crop-size", help="Training crop and sliding window, N or HxW (protocol: 512, "
        "Cityscapes 512x1024).", show_default=False),
    slide_stride: str = typer.Option(
        None, "--slide-stride", help="Sliding-window stride, N or HxW (default: 2/3 of the crop, "
        "341 for 512).", show_default=False),
    levels: str = typer.Option(
        None, "--levels", help="Pyramid strides the probe reads, e.g. 4,8,16,32 (default: the "
        "four ConvNeXt stages, as VICRegL) or 'all'.", show_default=False),
    lr: float = typer.Option(
        None, "--lr", help="AdamW learning rate (protocol: 1e-4; cpu preset: 1e-3).",
        show_default=False),
    weight_decay: float = typer.Option(0.05, "--weight-decay", help="AdamW weight decay."),
    warmup_steps: int = typer.Option(
        None, "--warmup-steps", help="Linear warm-up steps before the poly decay (default: "
        "min(1500, 3.75% of the steps)).", show_default=False),
    cache_crops: int = typer.Option(
        None, "--cache-crops", help="Augmented crops per training image whose backbone features "
        "are computed once and reused (0 = fresh crops every step) (default: 0 on GPU or with "
        "--finetune; on CPU 4 synthetic / 2 real, within --cache-gb).", show_default=False),
    cache_gb: float = typer.Option(8.0, "--cache-gb", help="Largest feature cache in GB."),
    finetune: bool = typer.Option(
        False, "--finetune", help="Also train the backbone (the paper's fine-tuned column)."),
    probe: str = typer.Option(
        None, "--probe", help="Evaluate a saved probe.pt instead of training one.",
        show_default=False),
    output: str = typer.Option(
        None, "--output", "-o", help="Output folder (default: runs/segment-eval/<dataset>-<time>).",
        show_default=False),
    json_file: str = typer.Option(
        None, "--json", help="Also write the JSON report (miou, pixel_acc, per_class_iou, ...) "
        "here.", show_default=False),
    examples: int = typer.Option(
        4, "--examples", help="Image / ground truth / prediction PNGs to write."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        "auto", "--precision", help="Backbone autocast: auto (bf16 on CUDA), bf16, fp16, fp32."),
    workers: int = typer.Option(0, "--workers", help="Data-loading worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random backbone, crops and probe."),
    train_images: int = typer.Option(
        None, "--train-images", help="Use the first N training images (synthetic: generate N) "
        "(default: all; synthetic 1024; cpu preset caps).", show_default=False),
    val_images: int = typer.Option(
        None, "--val-images", help="Score the first N evaluation images (synthetic: generate N) "
        "(default: all; synthetic 256).", show_default=False),
    allow_overlap: bool = typer.Option(
        False, "--allow-train-eval-overlap", help="Score images the probe is trained on (e.g. a "
        "VOC folder without ImageSets/Segmentation/, or --split train) instead of stopping; the "
        "result is labelled as not held out and shown without the paper's figure."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the results."),
) -> None:
    """Train a linear segmentation probe on frozen features and report mIoU."""
    from mcjepa_cli.io.json_out import human_output_to_stderr

    with human_output_to_stderr(json_file):
        from rich.console import Console
        from rich.table import Table

        from mcjepa_cli.eval.segment_eval import PAPER_MIOU, segment_eval

        console = Console()
        if backbone not in ("checkpoint", "random"):
            raise UserError(f"--backbone {backbone}", "expected checkpoint or random")
        result = segment_eval(
            dataset, root=root, split=split, checkpoint=checkpoint, backbone=backbone, arch=arch,
            preset=preset, steps=steps, batch_size=batch_size, crop_size=crop_size,
            slide_stride=slide_stride, levels=levels, lr=lr, weight_decay=weight_decay,
            warmup_steps=warmup_steps, cache_crops=cache_crops, cache_gb=cache_gb,
            finetune=finetune, probe=probe, output=output, json_path=json_file, examples=examples,
            device=device, precision=precision, workers=workers, seed=seed,
            train_images=train_images, val_images=val_images,
            log=None if quiet else (lambda s: console.print(s, markup=False, highlight=False)),
            allow_train_eval_overlap=allow_overlap,
        )
        held_out = result.held_out
        scope = (f"{result.num_images} images" if held_out else
                 f"{result.num_images} images, NOT HELD OUT: {result.train_eval_overlap} are "
                 f"training images of the probe")
        table = Table(title=f"segment-eval {result.dataset} {result.split} ({scope})")
        table.add_column("class")
        table.add_column("IoU (%)", justify="right")
        for name, iou in result.per_class_iou.items():
            table.add_row(name, "-" if iou is None else f"{100 * iou:.2f}")
        table.add_section()
        on_train = "" if held_out else " (on training images)"
        table.add_row(f"mIoU{on_train}", f"{100 * result.miou:.2f}")
        table.add_row(f"pixel accuracy{on_train}", f"{100 * result.pixel_acc:.2f}")
        if held_out and result.dataset in PAPER_MIOU:  # a fit check is no match for the paper
            table.add_row("paper mIoU (MC-JEPA, frozen linear)",
                          f"{PAPER_MIOU[result.dataset]:.1f}")
        console.print(table)
        for n in result.notes:
            console.print(f"[yellow]note:[/yellow] {n}", highlight=False)
        console.print(f"backbone: {result.backbone}", markup=False, highlight=False)
        console.print(f"report: {result.json_path}   probe: {result.probe_path}", markup=False,
                      highlight=False)
