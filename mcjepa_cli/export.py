"""Export a checkpoint: the encoder to timm, the flow model to ONNX / TorchScript / torch.export.

``--format timm`` writes the encoder as a safetensors state dict under timm's ConvNeXt key names
(``stem.*``, ``stages.*``, ``head.norm.*``): it loads strictly into
``timm.create_model(arch, num_classes=0)``. The three flow formats trace
``MCJEPA.estimate_flow`` at one fixed input size (``FlowExportModule``) and refuse any other
size at run time (``FixedSizeFlow``): a trace bakes that size into the padding, the cost-volume
tiles and the flow up-sampling, so at another size it would return wrong flow. Every export is
reloaded, compared with the PyTorch model and shown to refuse another size, unless
``check=False`` (DESIGN.md section 6).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mcjepa_cli.errors import RunFailed, UserError
from mcjepa_cli.io.atomic import atomic_path, atomic_write_bytes
from mcjepa_cli.io.guard import Inputs, check_writable

FORMATS = ("timm", "onnx", "torchscript", "export")
SUFFIXES = {
    "timm": ".safetensors",
    "onnx": ".onnx",
    "torchscript": ".torchscript.pt",
    "export": ".pt2",
}
# Largest accepted difference between an export and PyTorch, relative to max(1, largest |value|):
# float32 kernels of another runtime reorder sums, nothing else may differ.
TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """What ``export_checkpoint`` wrote and how it was checked."""

    format: str
    path: str
    arch: str
    checkpoint: str
    size: tuple[int, int] | None  # (H, W) of the flow formats; None for timm
    bytes: int
    checked: bool
    check: str  # what was compared, in words
    max_abs_diff: float | None  # largest |export - PyTorch| over the compared values
    reference_max: float | None  # largest |value| of the PyTorch reference
    # flow formats, checked: the export's own error for a pair of another size (it runs at
    # ``size`` only); None for timm and unchecked exports
    other_size_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FlowExportModule(nn.Module):
    """The traced flow graph: ``(image1, image2) -> flow``.

    Inputs: two float (1, 3, H, W) images in [0, 1] (RGB, not normalised: the model normalises
    with ImageNet statistics itself). Output: (1, 2, H, W) flow in pixels, x then y, from
    image1 to image2. A trace is valid at its own H and W only: the padding to the coarsest
    stride, the cost volume's tile geometry and the flow up-sampling scale are Python integers
    that tracing records as constants. Export it inside ``FixedSizeFlow``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return self.model.estimate_flow(image1, image2)  # (1, 2, H, W)


def check_flow_inputs(image1: torch.Tensor, image2: torch.Tensor, height: int, width: int) -> None:
    """Raise ``ValueError`` unless both images are (1, 3, ``height``, ``width``).

    Written in the TorchScript subset: ``FixedSizeFlow`` compiles it into the TorchScript
    export, so that the check runs inside the exported file, without mcjepa.
    """
    expected = [1, 3, height, width]
    got1 = list(image1.shape)
    got2 = list(image2.shape)
    if got1 != expected or got2 != expected:
        raise ValueError(
            f"this flow model was exported for {height}x{width} (H x W) inputs and runs at "
            f"that size only: image1 and image2 must be float {expected} tensors, got image1 "
            f"{got1} and image2 {got2}; resize the frames to {height}x{width} (and scale the "
            "flow back) or export again with 'mcjepa export --size H W'"
        )


class FixedSizeFlow(nn.Module):
    """A flow graph valid at one input size, refusing every other size.

    ``flow`` is a ``FlowExportModule`` or its trace. For TorchScript this module is scripted
    around the trace, so the exported file itself raises (``check_flow_inputs``'s message,
    naming the export size and the size received). ``torch.export`` and ONNX record the
    check's outcome at the example size and pin the input shapes instead: the
    ``torch.export`` program's input guard and onnxruntime's input check refuse another size.
    """

    def __init__(self, flow: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.flow = flow
        self.height = int(size[0])
        self.width = int(size[1])

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        check_flow_inputs(image1, image2, self.height, self.width)
        return self.flow(image1, image2)  # (1, 2, H, W)


def default_output(checkpoint: Path, fmt: str, arch: str, size: tuple[int, int] | None) -> Path:
    """``<run>/export/<ckpt stem>_...`` for ``<run>/checkpoints/<ckpt>.pt``, else beside it."""
    base = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    if fmt == "timm":
        name = f"{checkpoint.stem}_encoder_{arch}{SUFFIXES[fmt]}"
    else:
        assert size is not None
        name = f"{checkpoint.stem}_flow_{size[0]}x{size[1]}{SUFFIXES[fmt]}"
    return base / "export" / name


def sample_pair(size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out synthetic frame pair at ``size``: two float (1, 3, H, W) images in [0, 1]."""
    from mcjepa_cli.data.synthetic import SyntheticFlowPairs

    item = SyntheticFlowPairs(size[0], size[1], 1, seed=seed, split="val")[0]
    return item["image1"][None].float(), item["image2"][None].float()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def _verdict(fmt: str, diff: float, ref_max: float) -> None:
    if not diff <= TOLERANCE * max(1.0, ref_max):  # also catches NaN
        raise RunFailed(
            f"--format {fmt}: the export differs from PyTorch by {diff:.3g} (largest "
            f"value {ref_max:.3g}; tolerance {TOLERANCE:g} relative); not trusted"
        )


# ---------------------------------------------------------------------------------------
# timm


def timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder as a complete timm ``ConvNeXt(num_classes=0)`` state dict.

    Stem and stages come from ``timm_io.encoder_to_timm_state_dict`` (the split stem folded
    exactly). ``head.norm`` has no counterpart in MC-JEPA: it is written at LayerNorm's own
    initialisation (weight 1, bias 0) so that strict loading works; it only affects timm's
    pooled output ``forward_head``, never ``forward_features`` / ``forward_intermediates``.
    """
    from mcjepa_cli.models.timm_io import encoder_to_timm_state_dict, identity_head_norm

    sd = encoder_to_timm_state_dict(model)
    sd.update(identity_head_norm(model.encoder.channels[4]))
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def check_timm_export(
    path: Path, model: nn.Module, arch: str, size: tuple[int, int] = (128, 160)
) -> tuple[float, float]:
    """Load ``path`` strictly into ``timm.create_model(arch, num_classes=0)`` and compare stages.

    Returns:
        (largest |difference| between timm's four stage outputs and our levels 1-4 on a
        synthetic image, largest |value| of ours).
    """
    import timm
    from safetensors.torch import load_file

    net = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    missing, unexpected = net.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise RunFailed(
            f"{path}: does not load strictly into timm {arch} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    img, _ = sample_pair(size)  # (1, 3, H, W) in [0, 1]
    enc = model.encoder
    with torch.inference_mode():
        ours = model.features(img)[1:5]  # strides 4, 8, 16, 32
        theirs = net.forward_intermediates((img - enc.mean) / enc.std, intermediates_only=True)
    if len(theirs) != 4 or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=True)):
        raise RunFailed(f"{path}: timm {arch} stage shapes differ from the encoder's")
    diff = max(_max_diff(a, b) for a, b in zip(ours, theirs, strict=True))
    ref = max(float(a.abs().max()) for a in ours)
    return diff, ref


# ---------------------------------------------------------------------------------------
# flow formats


def _need_onnx() -> None:
    missing = []
    for mod in ("onnx", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise UserError(
            "--format onnx", f"needs {' and '.join(missing)}: pip install 'mcjepa[onnx]'"
        )


def _write_flow_export(
    fmt: str, module: FixedSizeFlow, example: tuple[torch.Tensor, torch.Tensor], path: Path
) -> None:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporters warn about tracing internals, not user errors
        if fmt == "onnx":
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=["image1", "image2"],
                output_names=["flow"],
                verbose=False,
            )
            with atomic_path(path) as tmp:
                program.save(str(tmp))
            return
        # TorchScript and torch.export programs are serialised in memory: their zip writers
        # report a full disk as a RuntimeError, the atomic writer as one line naming the file
        if fmt == "torchscript":
            # trace the flow graph (fixed size), script the size check around it: a traced
            # check would be evaluated once, at the example size, and vanish from the file
            traced = torch.jit.trace(module.flow, example, check_trace=False)
            size = (module.height, module.width)
            torch.jit.save(torch.jit.script(FixedSizeFlow(traced, size)), buf)
        else:  # torch.export
            torch.export.save(torch.export.export(module, example), buf)
    atomic_write_bytes(path, buf.getbuffer())


def _check_output(out: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse an output that is the checkpoint, a folder, an existing file (without
    ``overwrite``) or an unwritable place, before anything is written."""
    read = Inputs()
    read.add_file(checkpoint, "the checkpoint")
    read.check_output("--output", out)  # even with --overwrite
    if out.is_dir():
        raise UserError(out, "expected a file name for --output, found a folder")
    if out.exists() and not overwrite:
        raise UserError(out, "already exists; pass --overwrite to replace it")
    check_writable("--output", out)


def load_flow_export(
    fmt: str, path: str | Path
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Load an exported flow model the way a user without mcjepa would.

    Args:
        fmt: ``onnx`` (onnxruntime, CPU), ``torchscript`` (``torch.jit.load``) or ``export``
            (``torch.export.load``).
        path: the exported file.

    Returns:
        ``run(image1, image2) -> flow``: float (1, 3, H, W) images in [0, 1] at the export
        size to (1, 2, H, W) flow in pixels; any other input shape raises (the format's own
        error, see ``docs/export.md``).
    """
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
            out = sess.run(None, {"image1": image1.numpy(), "image2": image2.numpy()})[0]
            return torch.from_numpy(out)

        return run_onnx
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
    elif fmt == "export":
        module = torch.export.load(str(path)).module()
    else:
        raise ValueError(f"not a flow export format: {fmt!r}")

    def run_torch(image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(image1, image2)

    return run_torch


def run_flow_export(
    fmt: str, path: str | Path, image1: torch.Tensor, image2: torch.Tensor
) -> torch.Tensor:
    """Run an exported flow model on one pair (``load_flow_export`` then the call).

    Args:
        fmt: ``onnx``, ``torchscript`` or ``export``.
        path: the exported file.
        image1, image2: float (1, 3, H, W) in [0, 1] at the export size.

    Returns:
        (1, 2, H, W) flow in pixels.
    """
    return load_flow_export(fmt, path)(image1, image2)


def _one_line(e: BaseException) -> str:
    """An exported model's error on one line; TorchScript's own traceback (source lines
    before the message) is dropped."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if "Traceback of TorchScript" in str(e):
        lines = lines[-1:]
    return " ".join(lines) or e.__class__.__name__


def check_refuses_other_sizes(
    fmt: str, run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], size: tuple[int, int]
) -> str:
    """Call an export made at ``size`` with a pair 64 px larger on each side; it must raise.

    Returns:
        The export's error message, on one line.

    Raises:
        RunFailed: the export ran at the other size (its flow there would be wrong).
    """
    other = (size[0] + 64, size[1] + 64)
    zeros = torch.zeros(1, 3, *other)
    try:
        run(zeros, zeros)
    # whatever the runtime raises is the refusal we want (torch.jit.Error, the torch.export
    # guard's AssertionError, onnxruntime's InvalidArgument): keep its message
    except Exception as e:
        return _one_line(e)
    raise RunFailed(
        f"--format {fmt}: the export, made at {size[0]}x{size[1]}, accepted a "
        f"{other[0]}x{other[1]} pair instead of refusing it; its flow at other sizes is wrong; "
        "not trusted"
    )


# ---------------------------------------------------------------------------------------
# entry point


def export_checkpoint(
    checkpoint: str,
    fmt: str = "timm",
    output: str | Path | None = None,
    size: tuple[int, int] | None = None,
    check: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export a checkpoint's encoder (``timm``) or flow model (``onnx``, ``torchscript``,
    ``export``).

    Args:
        checkpoint: a checkpoint file, a run directory or ``latest``.
        fmt: ``timm`` (encoder weights, .safetensors), ``onnx`` (.onnx), ``torchscript``
            (.torchscript.pt, ``torch.jit.trace``; deprecated upstream) or ``export``
            (.pt2, ``torch.export``).
        output: file to write (atomically); default
            ``<run>/export/<ckpt>_encoder_<arch>.safetensors``
            or ``<run>/export/<ckpt>_flow_<H>x<W><suffix>``.
        size: (H, W) input size of the flow formats; default the recipe's ``data.flow_size``.
        check: reload the export and compare it with the PyTorch model (timm: the four stage
            outputs; flow formats: the flow of a synthetic pair); a difference above
            ``TOLERANCE`` raises ``RunFailed``. ONNX is checked only where onnxruntime is installed.
        overwrite: replace an existing output file (never the checkpoint itself).

    Returns:
        An ``ExportResult`` (path, size in bytes, what was checked and the largest difference).

    Raises:
        UserError: bad options, not an mcjepa checkpoint, an output that exists (without
            ``overwrite``), is the checkpoint, a folder or cannot be written.
    """
    from mcjepa_cli.engine.checkpoint import (
        load_checkpoint,
        model_from_checkpoint,
        resolve_checkpoint,
    )

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}", f"expected one of {', '.join(FORMATS)}")
    if fmt == "timm" and size is not None:
        raise UserError(
            "--size", "only the flow formats (onnx, torchscript, export) take an input size"
        )
    if fmt == "onnx":
        _need_onnx()
    ckpt_file = resolve_checkpoint(checkpoint)
    if output is not None:  # fail before the checkpoint is loaded
        _check_output(Path(output), ckpt_file, overwrite)
    ckpt = load_checkpoint(ckpt_file)
    ckpt_path = Path(ckpt["path"])
    model, recipe = model_from_checkpoint(ckpt)
    model = model.cpu().eval()
    arch = recipe.model.encoder.arch
    if fmt != "timm":
        size = tuple(int(s) for s in (size if size is not None else recipe.data.flow_size))  # type: ignore[assignment]
        if len(size) != 2 or min(size) < 1:
            raise UserError("--size", f"expected two positive integers H W, got {list(size)}")
    out = Path(output) if output is not None else default_output(ckpt_path, fmt, arch, size)
    if fmt == "export" and out.suffix != ".pt2":
        raise UserError(
            out,
            "a torch.export program must be named *.pt2 (torch.export.load reads no other name)",
        )
    _check_output(out, ckpt_path, overwrite)

    if fmt == "timm":
        from safetensors.torch import save

        sd = timm_state_dict(model)
        data = save(
            sd,
            metadata={
                "format": "pt",
                "arch": arch,
                "source": "mcjepa export",
                "checkpoint": str(ckpt_path),
            },
        )
        atomic_write_bytes(out, data)
        diff = ref = None
        what = (
            f"strict load into timm.create_model('{arch}', num_classes=0), stage outputs vs ours"
            if check
            else "not checked (--no-check)"
        )
        if check:
            diff, ref = check_timm_export(out, model, arch)
            _verdict(fmt, diff, ref)
        return ExportResult(
            fmt, str(out), arch, str(ckpt_path), None, out.stat().st_size, check, what, diff, ref
        )

    module = FixedSizeFlow(FlowExportModule(model), size).eval()
    image1, image2 = sample_pair(size)  # (1, 3, H, W) each
    _write_flow_export(fmt, module, (image1, image2), out)
    diff = ref = refusal = None
    checked = check
    runtime = {
        "onnx": "onnxruntime",
        "torchscript": "torch.jit.load",
        "export": "torch.export.load",
    }[fmt]
    what = (
        f"flow of a synthetic {size[0]}x{size[1]} pair, {runtime} vs PyTorch; "
        f"a {size[0] + 64}x{size[1] + 64} pair refused"
        if check
        else "not checked (--no-check)"
    )
    if check and fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            checked = False
            what = "not checked: onnxruntime is not installed"
    if checked:
        with torch.inference_mode():
            reference = module(image1, image2)  # (1, 2, H, W)
        run = load_flow_export(fmt, out)
        got = run(image1, image2)
        if tuple(got.shape) != tuple(reference.shape):
            raise RunFailed(
                f"{out}: exported flow has shape {tuple(got.shape)}, "
                f"expected {tuple(reference.shape)}"
            )
        diff, ref = _max_diff(got, reference), float(reference.abs().max())
        _verdict(fmt, diff, ref)
        refusal = check_refuses_other_sizes(fmt, run, size)
    return ExportResult(
        fmt, str(out), arch, str(ckpt_path), size, out.stat().st_size, checked, what, diff, ref,
        refusal,
    )
