"""mcjepa export: timm state dicts load strictly and compute timm's own stage outputs; the
flow exports (ONNX, TorchScript, torch.export) give PyTorch's flow; timm weights initialise
pretraining."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import tiny_args
from typer.testing import CliRunner

from mcjepa_cli.engine.checkpoint import load_model
from mcjepa_cli.main import app

runner = CliRunner()
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def _timm_stages(net, img: torch.Tensor) -> list[torch.Tensor]:
    """timm's four stage outputs, computed by timm itself from an ImageNet-normalised image."""
    with torch.inference_mode():
        return net.forward_intermediates((img - MEAN) / STD, intermediates_only=True)


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def _one_error_line(result) -> None:
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output


def test_timm_export_loads_strictly_and_gives_the_same_stage_outputs(
    quickstart_checkpoint, tmp_path
):
    import timm
    from safetensors.torch import load_file

    out = tmp_path / "enc.safetensors"
    r = runner.invoke(
        app,
        ["export", str(quickstart_checkpoint), "--format", "timm", "-o", str(out), "--no-check"],
    )
    assert r.exit_code == 0, r.output
    model, recipe = load_model(quickstart_checkpoint)
    arch = recipe["model"]["encoder"]["arch"]
    sd = load_file(str(out))

    net = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == [] and unexpected == []
    assert set(sd) == set(net.state_dict())
    # head.norm is the documented exception: LayerNorm's initialisation
    assert torch.equal(sd["head.norm.weight"], torch.ones_like(sd["head.norm.weight"]))
    assert torch.equal(sd["head.norm.bias"], torch.zeros_like(sd["head.norm.bias"]))
    # the documented one-liner: timm's pretrained loader reading the local file
    net2 = timm.create_model(
        arch, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(out)}
    ).eval()
    for k, v in net2.state_dict().items():
        assert torch.equal(v, sd[k]), k

    img = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours = model.features(img)[1:5]  # strides 4, 8, 16, 32
    theirs = _timm_stages(net, img)
    assert len(theirs) == 4
    for level, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert a.shape == b.shape, level
        assert _rel_diff(a, b) < 1e-4, (level, _rel_diff(a, b))
    # the stem alone: timm's one 4x4 conv against our two 2x2 convs (folded, exact up to rounding)
    with torch.inference_mode():
        x = (img - MEAN) / STD
        stem_timm = net.stem(x)
        stem_ours = model.encoder.stem_norm(model.encoder.stem_b(model.encoder.stem_a(x)))
    assert _rel_diff(stem_ours, stem_timm) < 1e-5


def test_export_cli_default_path_and_builtin_check(quickstart_checkpoint, tmp_path):
    # a copy of the shared run: its default export file would make a later default export
    # (docs pages, other tests) refuse to replace it without --overwrite
    run = shutil.copytree(quickstart_checkpoint, tmp_path / "run")
    r = runner.invoke(app, ["export", str(run)])
    assert r.exit_code == 0, r.output
    expected = run / "export" / "last_encoder_convnext_atto.safetensors"
    assert expected.is_file()
    assert "max |diff|" in r.output and str(expected) in r.output


def _refusal(fmt: str):
    """The error type each runtime raises for an input of another shape."""
    if fmt == "onnx":
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        return InvalidArgument
    return torch.jit.Error if fmt == "torchscript" else AssertionError


@pytest.mark.parametrize("fmt", ["export", "torchscript", "onnx"])
def test_flow_exports_give_pytorch_flow_and_refuse_other_sizes(
    fmt, quickstart_checkpoint, tmp_path
):
    """At the export size the file gives PyTorch's flow; at any other size it raises (a trace
    at another size returned flow up to 14 px off, or crashed with a storage error)."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxscript")
        ort = pytest.importorskip("onnxruntime")
    from mcjepa_cli.export import SUFFIXES, export_checkpoint

    h, w = 64, 96
    out = tmp_path / f"flow{SUFFIXES[fmt]}"
    res = export_checkpoint(str(quickstart_checkpoint), fmt, output=out, size=(h, w), check=True)
    assert Path(res.path) == out and out.is_file() and res.size == (h, w)
    assert res.checked and res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    assert res.other_size_error and "refused" in res.check  # the built-in check tried one

    g = torch.Generator().manual_seed(11)
    img1 = torch.rand(1, 3, h, w, generator=g)
    img2 = torch.roll(img1, shifts=(2, 3), dims=(2, 3)) * 0.9 + 0.05  # a moved, dimmed copy
    model, _ = load_model(quickstart_checkpoint)
    with torch.inference_mode():
        reference = model.estimate_flow(img1, img2)  # (1, 2, H, W)
    # run the file the way a user without mcjepa would
    if fmt == "onnx":
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["image1", "image2"]
        assert [i.shape for i in sess.get_inputs()] == [[1, 3, h, w]] * 2  # pinned shapes

        def run(a, b):
            return torch.from_numpy(sess.run(None, {"image1": a.numpy(), "image2": b.numpy()})[0])
    elif fmt == "torchscript":
        loaded = torch.jit.load(str(out))
        assert (loaded.height, loaded.width) == (h, w)  # the export size travels with the file

        def run(a, b):
            with torch.no_grad():
                return loaded(a, b)
    else:
        program = torch.export.load(str(out)).module()

        def run(a, b):
            with torch.no_grad():
                return program(a, b)

    got = run(img1, img2)
    assert got.shape == reference.shape == (1, 2, h, w)
    assert float(reference.abs().max()) > 0  # a real flow, not an all-zero field
    assert float((got - reference).abs().max()) < 1e-4

    # larger, not a multiple of the pad stride, another width only, a batch of two
    for shape in ((1, 3, 128, 160), (1, 3, 50, 70), (1, 3, h, w + 16), (2, 3, h, w)):
        x = torch.rand(*shape, generator=g)
        with pytest.raises(_refusal(fmt)) as info:
            run(x, x)
        msg = str(info.value)
        if fmt == "torchscript":  # our own check, compiled into the file: both sizes named
            assert f"exported for {h}x{w}" in msg and str(list(shape)) in msg, msg
        elif fmt == "onnx":  # onnxruntime names the first differing index, got and expected
            i = next(k for k in range(4) if shape[k] != (1, 3, h, w)[k])
            assert f"index: {i} Got: {shape[i]} Expected: {(1, 3, h, w)[i]}" in msg, msg
        else:  # torch.export's input guard names the input, the dimension and the export size
            i = next(k for k in range(4) if shape[k] != (1, 3, h, w)[k])
            assert f"image1.size()[{i}] == {(1, 3, h, w)[i]}" in msg, msg


def test_torchscript_refusal_names_both_sizes_on_the_command_line(quickstart_checkpoint, tmp_path):
    out = tmp_path / "flow.torchscript.pt"
    r = runner.invoke(
        app,
        ["export", str(quickstart_checkpoint), "--format", "torchscript", "--size", "64", "96",
         "-o", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "at 64x96 only" in r.output
    refused = [ln for ln in r.output.splitlines() if ln.startswith("other sizes are refused:")]
    assert len(refused) == 1, r.output
    assert "exported for 64x96" in refused[0] and "[1, 3, 128, 160]" in refused[0]


def test_size_check_in_python():
    from mcjepa_cli.export import FixedSizeFlow, check_flow_inputs

    ok = torch.zeros(1, 3, 8, 12)
    check_flow_inputs(ok, ok, 8, 12)
    with pytest.raises(ValueError, match=r"exported for 8x12 .* got image1 \[1, 3, 8, 12\] and "
                                         r"image2 \[1, 3, 12, 8\]"):
        check_flow_inputs(ok, torch.zeros(1, 3, 12, 8), 8, 12)
    flow = FixedSizeFlow(nn.Identity(), (8, 12))  # the check raises before Identity is called
    with pytest.raises(ValueError, match="exported for 8x12"):
        flow(torch.zeros(1, 3, 16, 24), torch.zeros(1, 3, 16, 24))


def test_export_user_errors_are_one_line(quickstart_checkpoint, tmp_path):
    _one_error_line(
        runner.invoke(app, ["export", str(quickstart_checkpoint), "--format", "tflite"])
    )
    _one_error_line(runner.invoke(app, ["export", str(tmp_path / "missing.pt")]))
    _one_error_line(
        runner.invoke(app, ["export", str(quickstart_checkpoint), "--size", "64", "64"])
    )
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    _one_error_line(runner.invoke(app, ["export", str(bogus)]))
    r = runner.invoke(
        app, ["export", str(quickstart_checkpoint), "--format", "torchscript", "--size", "0", "64"]
    )
    _one_error_line(r)
    assert "--size" in r.output
    r = runner.invoke(
        app,
        [
            "export",
            str(quickstart_checkpoint),
            "--format",
            "export",
            "-o",
            str(tmp_path / "flow.bin"),
        ],
    )
    _one_error_line(r)
    assert ".pt2" in r.output


def _pretrain_quickstart(output, *overrides: str):
    """``mcjepa pretrain quickstart`` with the tiny test overrides plus ``overrides``."""
    args = ["pretrain", "quickstart", *tiny_args(*overrides), "--output", str(output)]
    return runner.invoke(app, [*args, "--no-progress"])


def test_pretraining_starts_from_local_timm_weights(tmp_path, monkeypatch):
    """A random timm convnext_atto, saved as a timm state dict, initialises the encoder exactly."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(123)
    net = timm.create_model("convnext_atto", pretrained=False, num_classes=0).eval()
    weights = tmp_path / "convnext_atto_random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))

    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    # lr_encoder = 0: the encoder stays at its initialisation, the other parts still train
    r = _pretrain_quickstart(
        run, "schedule.total=1", "optim.lr_encoder=0", f"model.encoder.init={weights}"
    )
    assert r.exit_code == 0, r.output
    model, recipe = load_model(run)
    assert recipe["model"]["encoder"]["init"] == str(weights)
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ours = model.features(img)[1:5]
    theirs = _timm_stages(net, img)
    for a, b in zip(ours, theirs, strict=True):
        assert _rel_diff(a, b) < 1e-4
    # without init the same seed gives a different encoder: the test can tell them apart
    from mcjepa_cli.config import recipe_from_dict
    from mcjepa_cli.models import build_model

    torch.manual_seed(0)
    plain = build_model(recipe_from_dict(recipe).model).eval()
    with torch.inference_mode():
        other = plain.features(img)[4]
    assert _rel_diff(other, theirs[3]) > 1e-2


def test_timm_init_rejects_other_architectures(tmp_path, monkeypatch):
    import timm

    net = timm.create_model("convnext_femto", pretrained=False, num_classes=0)
    weights = tmp_path / "femto.pth"
    torch.save(net.state_dict(), weights)
    monkeypatch.chdir(tmp_path)
    r = _pretrain_quickstart(tmp_path / "run", f"model.encoder.init={weights}")
    _one_error_line(r)
    assert str(weights) in r.output
