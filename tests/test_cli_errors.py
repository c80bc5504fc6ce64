"""One table of user errors: each command, each kind of bad input -> exit 2, one line, no traceback.

Each row is ``(command line, culprit)``. ``<name>`` in either is replaced by the path of a bad
input built once by the ``bad`` fixture (see ``_build_bad_inputs``); ``<tmp>`` is a fresh
folder per row. The command line is split like a shell would (``shlex``), so YAML values with
spaces go in quotes. To add a case, add one line to ``CASES``.

Every command mounted in ``mcjepa_cli.main.app`` must have rows here
(``test_every_mounted_command_has_rows``).
"""

# ruff: noqa: E501  (one table row per line reads best)
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from mcjepa_cli.main import app

_SMALL_DAVIS = "--num-sequences 1 --num-frames 3 --synthetic-size 32x32"  # renders in milliseconds
_SMALL_SEG = "--train-images 2 --val-images 2 --preset cpu"

# (command line, culprit that the error line must name). Keep it one row per line.
CASES: list[tuple[str, str]] = [
    # ---------------------------------------------------------------- pretrain
    ("pretrain <missing>/recipe.yaml", "<missing>/recipe.yaml"),
    ("pretrain no_such_recipe_name", "no_such_recipe_name"),
    ("pretrain <tmp>", "<tmp>"),  # a folder, not a recipe file
    ("pretrain <yaml_unknown_key>", "optim.lr_encodr"),
    ("pretrain <yaml_wrong_type>", "train.seed"),
    ("pretrain <yaml_syntax>", "<yaml_syntax>"),
    ("pretrain <yaml_python_tag>", "<yaml_python_tag>"),
    ("pretrain <yaml_not_mapping>", "<yaml_not_mapping>"),
    ("pretrain <yaml_bad_base>", "no_such_base_recipe"),
    ("pretrain <not_utf8>", "<not_utf8>"),
    ("pretrain quickstart --set optim.lr_encodr=1", "optim.lr_encoder"),
    ("pretrain quickstart --set train.seed=x", "train.seed"),
    ("pretrain quickstart --set optim.lr_encoder=nan", "optim.lr_encoder"),
    ("pretrain quickstart --set model.flow_head.strides=[0]", "model.flow_head.strides"),
    ("pretrain quickstart --set train.precision=fp8", "train.precision"),
    ("pretrain quickstart --set train.eval_every=-1", "train.eval_every"),
    ("pretrain quickstart --set data.on_error=ignore", "data.on_error"),
    ("pretrain quickstart --set nosection", "--set nosection"),
    ("pretrain quickstart --set 'optim.lr\nx=1'", "optim.lr\\nx"),  # a line break in the culprit
    ("pretrain quickstart --device tpu -o <tmp>/run", "train.device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("pretrain quickstart --set model.encoder.arch=resnet50 -o <tmp>/run", "resnet50"),
    ("pretrain quickstart --set 'data.flow=[{name: sintle}]' -o <tmp>/run", "data.flow[0].name"),
    ("pretrain quickstart --set 'data.flow=[{name: sintel, root: <missing>}]' -o <tmp>/run",
     "<missing>"),
    ("pretrain quickstart --set 'data.flow=[{name: frames, root: <wrong_layout>}]' -o <tmp>/run",
     "<wrong_layout>"),
    ("pretrain quickstart --set 'data.flow=[{name: video, root: <video_corrupt>}]' -o <tmp>/run",
     "<video_corrupt>"),
    ("pretrain quickstart --set 'data.images=[{name: imagefolder, root: <wrong_layout>}]' "
     "-o <tmp>/run", "<wrong_layout>"),
    ("pretrain quickstart --set 'data.images=[{name: imagenett}]' -o <tmp>/run", "data.images[0].name"),
    ("pretrain quickstart -o <nonempty_dir>", "<nonempty_dir>"),
    ("pretrain --resume <missing>", "<missing>"),
    ("pretrain --resume <ckpt_pickle>", "<ckpt_pickle>"),
    ("pretrain --resume <ckpt_text>", "<ckpt_text>"),
    ("pretrain --resume <ckpt_truncated>", "<ckpt_truncated>"),
    ("pretrain --resume <ckpt_foreign>", "<ckpt_foreign>"),
    ("pretrain --resume <ckpt_wrong_arch> -o <tmp>/run", "<ckpt_wrong_arch>"),
    ("pretrain --resume <ckpt_eval_only> -o <tmp>/run", "<ckpt_eval_only>"),
    ("pretrain quickstart --resume <ckpt_ok>", "--resume"),
    ("pretrain", "RECIPE"),
    # ---------------------------------------------------------------- flow-eval
    ("flow-eval --dataset sintle --model zero", "sintle"),
    ("flow-eval --dataset sintel --root <missing> --model zero", "<missing>"),
    ("flow-eval --dataset sintel --root <wrong_layout> --model zero", "<wrong_layout>"),
    ("flow-eval --dataset kitti-2015 --root <wrong_layout> --model zero", "<wrong_layout>"),
    ("flow-eval --dataset synthetic --checkpoint <missing>", "<missing>"),
    ("flow-eval --dataset synthetic --checkpoint <ckpt_pickle>", "<ckpt_pickle>"),
    ("flow-eval --dataset synthetic --checkpoint <ckpt_text>", "<ckpt_text>"),
    ("flow-eval --dataset synthetic --checkpoint <ckpt_truncated>", "<ckpt_truncated>"),
    ("flow-eval --dataset synthetic --checkpoint <ckpt_foreign>", "<ckpt_foreign>"),
    ("flow-eval --dataset synthetic --checkpoint <ckpt_wrong_arch>", "<ckpt_wrong_arch>"),
    ("flow-eval --dataset synthetic --checkpoint <ckpt_wrong_arch2>", "<ckpt_wrong_arch2>"),
    ("flow-eval --dataset synthetic --model zero --size 4", "--size 4"),
    ("flow-eval --dataset synthetic --model zero --size big", "--size big"),
    ("flow-eval --dataset synthetic --model sota", "sota"),
    ("flow-eval --dataset synthetic --model zero --device tpu", "tpu"),
    ("flow-eval --dataset sintel --root <wrong_layout> --model zero --pass muddy", "muddy"),
    ("flow-eval --dataset synthetic --model zero --batch-size x", "--batch-size"),
    ("flow-eval --dataset synthetic --predictions <missing>", "<missing>"),
    # ---------------------------------------------------------------- visualize
    ("visualize <missing>/clip.mp4 --checkpoint <ckpt_ok> -o <tmp>/v.png", "<missing>/clip.mp4"),
    ("visualize <video_corrupt> --checkpoint <ckpt_ok> -o <tmp>/v.png", "<video_corrupt>"),
    ("visualize <video_empty> --checkpoint <ckpt_ok> -o <tmp>/v.png", "<video_empty>"),
    ("visualize <img_truncated> <img_ok> --checkpoint <ckpt_ok> -o <tmp>/v.png", "<img_truncated>"),
    ("visualize <wrong_layout> --checkpoint <ckpt_ok> -o <tmp>/v.png", "<wrong_layout>"),
    ("visualize <img_ok> <img_ok> --checkpoint <ckpt_pickle> -o <tmp>/v.png", "<ckpt_pickle>"),
    ("visualize <img_ok> <img_ok> --checkpoint <ckpt_wrong_arch> -o <tmp>/v.png", "<ckpt_wrong_arch>"),
    ("visualize <img_ok> <img_ok> --checkpoint <missing> -o <tmp>/v.png", "<missing>"),
    ("visualize --flow <flo_corrupt> -o <tmp>/v.png", "<flo_corrupt>"),
    ("visualize --flow <flo_ok> -o <tmp>/v.xyz", "v.xyz"),
    ("visualize --flow <flo_ok> --show flow,sparkles -o <tmp>/v.png", "sparkles"),
    ("visualize --flow <flo_ok> --stride 0 -o <tmp>/v.png", "--stride 0"),
    ("visualize --flow <flo_ok> -o <existing_png>", "<existing_png>"),
    ("visualize <img_ok> <img_ok> --checkpoint <ckpt_ok> --mask <img_ok> -o <tmp>/v.png", "<img_ok>"),
    ("visualize <img_ok> <img_ok> --checkpoint <ckpt_ok> --show frame,pca --feature-stride 3 -o <tmp>/v.png",
     "--feature-stride"),
    ("visualize <img_ok> <img_ok> --checkpoint <ckpt_ok> --device tpu -o <tmp>/v.png", "tpu"),
    # ---------------------------------------------------------------- segment-eval
    ("segment-eval --dataset vocc --backbone random", "vocc"),
    ("segment-eval --dataset voc --root <missing> --backbone random", "<missing>"),
    ("segment-eval --dataset voc --root <wrong_layout> --backbone random", "<wrong_layout>"),
    ("segment-eval --dataset cityscapes --root <wrong_layout> --backbone random", "<wrong_layout>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --checkpoint <missing>", "<missing>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --checkpoint <ckpt_pickle>", "<ckpt_pickle>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --checkpoint <ckpt_wrong_arch>", "<ckpt_wrong_arch>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --checkpoint <ckpt_text>", "<ckpt_text>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone pretrained", "pretrained"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --arch resnet50", "resnet50"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --preset gpu", "gpu"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --crop-size abc", "abc"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --levels 3,5", "3,5"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --probe <ckpt_text>", "<ckpt_text>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --probe <ckpt_pickle>", "<ckpt_pickle>"),
    (f"segment-eval --dataset synthetic {_SMALL_SEG} --backbone random --device tpu", "tpu"),
    # ---------------------------------------------------------------- davis-eval
    ("davis-eval --dataset davis17 --backbone random", "davis17"),
    ("davis-eval --root <missing> --backbone random", "<missing>"),
    ("davis-eval --root <wrong_layout> --backbone random", "<wrong_layout>"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --checkpoint <missing>", "<missing>"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --checkpoint <ckpt_pickle>", "<ckpt_pickle>"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --checkpoint <ckpt_wrong_arch>", "<ckpt_wrong_arch>"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --checkpoint <ckpt_truncated>", "<ckpt_truncated>"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --backbone random --level s7", "s7"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --backbone random --synthetic-size abc", "abc"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --backbone random --arch resnet50", "resnet50"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --predictions <missing>", "<missing>"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --backbone random --topk 0", "--topk"),
    (f"davis-eval --dataset synthetic {_SMALL_DAVIS} --backbone random --device tpu", "tpu"),
    # ---------------------------------------------------------------- export
    ("export <missing>", "<missing>"),
    ("export <ckpt_pickle> -o <tmp>/e.safetensors", "<ckpt_pickle>"),
    ("export <ckpt_text> -o <tmp>/e.safetensors", "<ckpt_text>"),
    ("export <ckpt_truncated> -o <tmp>/e.safetensors", "<ckpt_truncated>"),
    ("export <ckpt_foreign> -o <tmp>/e.safetensors", "<ckpt_foreign>"),
    ("export <ckpt_wrong_arch> -o <tmp>/e.safetensors", "<ckpt_wrong_arch>"),
    ("export <ckpt_ok> --format tflite -o <tmp>/e.bin", "tflite"),
    ("export <ckpt_ok> --format torchscript --size 0 64 -o <tmp>/e.pt", "--size"),
    ("export <ckpt_ok> --format timm --size 64 64 -o <tmp>/e.safetensors", "--size"),
    ("export <ckpt_ok> --format timm -o <tmp>", "<tmp>"),
    ("export <ckpt_ok> --format torchscript --size 64 x -o <tmp>/e.pt", "--size"),
    # ---------------------------------------------------------------- report
    ("report <missing>", "<missing>"),
    ("report <tmp>", "no metrics.jsonl"),
    ("report <wrong_layout>", "<wrong_layout>"),
    ("report <ckpt_ok>", "expected a run directory"),
    ("report latest", "latest: no runs found"),
    ("report <tmp> --no-such-option", "--no-such-option"),
    # ---------------------------------------------------------------- the app itself
    ("no-such-command", "no-such-command"),
    ("flow-eval --no-such-option", "--no-such-option"),
]

_PLACEHOLDER = re.compile(r"<([a-z0-9_]+)>")


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _tiny_recipe(arch: str = "convnext_atto"):
    from mcjepa_cli.config import load_recipe

    return load_recipe("quickstart", [*TINY_OVERRIDES, f"model.encoder.arch={arch}"])


def _checkpoint_state(recipe, model) -> dict:
    from mcjepa_cli.config import to_dict

    return {"recipe": to_dict(recipe), "model": model.state_dict(), "step": 0}


class _OpenOnLoad:
    """Pickles to ``open(marker, "w")``: unpickling it with full pickle creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _build_bad_inputs(d: Path) -> dict[str, Path]:
    """Write every bad (and a few good) inputs the table refers to; returns name -> path."""
    from mcjepa_cli.engine.checkpoint import save_checkpoint
    from mcjepa_cli.io.flow_io import write_flo
    from mcjepa_cli.models import build_model

    f: dict[str, Path] = {"missing": d / "does_not_exist"}
    f["yaml_unknown_key"] = _write_yaml(d / "unknown_key.yaml",
                                        "base: quickstart\noptim:\n  lr_encodr: 1.0e-3\n")
    f["yaml_wrong_type"] = _write_yaml(d / "wrong_type.yaml", "train:\n  seed: [1, 2]\n")
    f["yaml_syntax"] = _write_yaml(d / "syntax.yaml", "model: {encoder: [\n")
    f["yaml_python_tag"] = _write_yaml(
        d / "python_tag.yaml", f"name: !!python/object/apply:os.system ['touch {d / 'yaml_marker'}']\n")
    f["yaml_not_mapping"] = _write_yaml(d / "list.yaml", "- just\n- a list\n")
    f["yaml_bad_base"] = _write_yaml(d / "bad_base.yaml", "base: no_such_base_recipe\n")
    f["not_utf8"] = d / "latin1.yaml"
    f["not_utf8"].write_bytes(b"name: caf\xe9\n")

    f["wrong_layout"] = d / "wrong_layout"
    (f["wrong_layout"] / "training").mkdir(parents=True)
    (f["wrong_layout"] / "README.txt").write_text("not a dataset\n")
    f["nonempty_dir"] = d / "previous_run"
    f["nonempty_dir"].mkdir()
    (f["nonempty_dir"] / "metrics.jsonl").write_text("{}\n")

    rng = np.random.default_rng(0)
    f["img_ok"] = d / "ok.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(f["img_ok"])
    f["existing_png"] = d / "existing.png"
    f["existing_png"].write_bytes(f["img_ok"].read_bytes())
    f["img_truncated"] = d / "truncated.png"
    f["img_truncated"].write_bytes(f["img_ok"].read_bytes()[:300])
    f["video_corrupt"] = d / "corrupt.mp4"
    f["video_corrupt"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    f["video_empty"] = d / "empty.mp4"
    f["video_empty"].write_bytes(b"")
    f["flo_ok"] = d / "ok.flo"
    write_flo(f["flo_ok"], rng.normal(size=(16, 16, 2)).astype(np.float32))
    f["flo_corrupt"] = d / "corrupt.flo"
    f["flo_corrupt"].write_bytes(f["flo_ok"].read_bytes()[:100])

    torch.manual_seed(0)
    atto = _tiny_recipe("convnext_atto")
    femto = _tiny_recipe("convnext_femto")
    atto_model, femto_model = build_model(atto.model), build_model(femto.model)
    f["ckpt_ok"] = d / "ok.pt"
    save_checkpoint(f["ckpt_ok"], _checkpoint_state(atto, atto_model))
    # a recipe that says convnext_atto holding convnext_femto weights, and the reverse
    f["ckpt_wrong_arch"] = d / "wrong_arch.pt"
    save_checkpoint(f["ckpt_wrong_arch"], _checkpoint_state(atto, femto_model))
    f["ckpt_wrong_arch2"] = d / "wrong_arch2.pt"
    save_checkpoint(f["ckpt_wrong_arch2"], _checkpoint_state(femto, atto_model))
    f["ckpt_eval_only"] = d / "eval_only.pt"  # weights and recipe but no optimizer state
    save_checkpoint(f["ckpt_eval_only"], _checkpoint_state(atto, atto_model))
    f["ckpt_foreign"] = d / "foreign.pt"  # a plain state dict, not our format
    torch.save({"state_dict": atto_model.state_dict()}, f["ckpt_foreign"])
    f["ckpt_pickle"] = d / "payload.pt"
    torch.save({"format": "mcjepa-checkpoint", "recipe": {}, "model": {},
                "payload": _OpenOnLoad(d / "pickle_marker")}, f["ckpt_pickle"])
    f["ckpt_text"] = d / "notes.pt"
    f["ckpt_text"].write_text("these are not weights\n")
    f["ckpt_truncated"] = d / "truncated.pt"
    f["ckpt_truncated"].write_bytes(f["ckpt_ok"].read_bytes()[:5000])
    return f


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return _build_bad_inputs(tmp_path_factory.mktemp("bad_inputs"))


def _fill(template: str, files: dict[str, Path], tmp: Path) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "tmp":
            return str(tmp)
        return str(files[name])

    return _PLACEHOLDER.sub(sub, template)


def _case_id(case: tuple[str, str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.<>=,-]+", "_", case[0])[:90]


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_user_error_is_one_line_exit_2(case, bad, tmp_path, monkeypatch):
    command, culprit = case
    monkeypatch.chdir(tmp_path)  # default outputs (runs/, davis-eval/) land in the test's folder
    monkeypatch.setenv("MCJEPA_DATA", str(tmp_path / "no_data_here"))
    work = tmp_path / "work"
    work.mkdir()
    args = shlex.split(_fill(command, bad, work))
    expected = _fill(culprit, bad, work)
    result = CliRunner().invoke(app, args)
    shown = f"$ mcjepa {' '.join(args)}\nexit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, shown
    assert result.exit_code == 2, shown
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, shown
    assert expected in errors[0], f"culprit {expected!r} not named\n{shown}"
    other = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("error:")]
    assert not other, f"stderr has more than the error line\n{shown}"
    # neither a YAML tag nor a pickle payload ever ran
    assert not (bad["missing"].parent / "yaml_marker").exists()
    assert not (bad["missing"].parent / "pickle_marker").exists()


def test_every_mounted_command_has_rows():
    mounted = {c.name for c in app.registered_commands}
    covered = {shlex.split(cmd)[0] for cmd, _ in CASES}
    thin = {name: sum(shlex.split(c)[0] == name for c, _ in CASES) for name in mounted}
    assert mounted <= covered, f"commands without rows in CASES: {sorted(mounted - covered)}"
    assert min(thin.values()) >= 5, thin
