#!/usr/bin/env python
"""Run every ``mcjepa`` command line of the docs on the synthetic world, so the docs cannot rot.

What is checked, in every fenced ```bash block of ``docs/*.md`` and ``README.md``:

* each line that starts with ``mcjepa`` (or ``python -m mcjepa_cli``; ``\\`` continuations
  joined) is **run**, in-process, in page order, inside a sandbox folder of its own page;
* each ``torchrun`` / ``srun ... torchrun`` line is **parsed**: the launcher flags with
  torchrun's own parser, the mcjepa part with the CLI's parser, and a pretrain recipe is
  resolved with its overrides; with ``seen_shapes`` (the test suite) the first single-node line
  also **runs** with 2 CPU processes and the first multi-node line as 2 local "nodes" x 1
  process (gloo), later ones of the same kind are parsed; ``--full`` runs every one;
* on a page that holds ``<!-- docs-check: python -->``, the ```python blocks run too, in
  order, sharing one namespace (a block holding ``# docs-check: skip`` is listed, not run);
* a line ending in ``# docs-check: skip (reason)`` is listed, not run.

The cheap form: ``pretrain`` gets the tiny overrides of ``tests/conftest.py`` (synthetic data,
convnext_atto, 64x64 crops, a few steps); evaluations get small sizes and few steps; options
repeated at the end of the line win, so a page's own values are simply overridden. Whatever a
line names that does not exist is made from the synthetic world before it runs: dataset folders
in their official layouts (``--root`` or ``$MCJEPA_DATA/<Name>``), videos, frames, flow files,
label PNGs, run directories (copies of one tiny trained run), a missing ``--probe`` (the newest
one the page produced), missing ``--predictions`` (zero flow / the ground-truth masks). Paths
starting with ``~`` or ``/`` are mapped into the sandbox. A ```yaml block whose first line is
``# file: NAME`` is written to the sandbox when reached, so a page can show a recipe and use it.

Usage:
    python scripts/check_docs.py                 # every page
    python scripts/check_docs.py docs/export.md  # some pages
    python scripts/check_docs.py --full -v       # also run the torchrun lines
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_RE = re.compile(r"#\s*docs-check:\s*skip\b\s*(.*)$")
FENCE_RE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
FILE_RE = re.compile(r"^#\s*file:\s*(\S+)\s*$")
ASSIGN_RE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S*)$")  # VAR=value (no spaces)
PYTHON_MARK = "<!-- docs-check: python -->"  # a page with it has its ```python blocks run, in order
SHELL_LANGS = ("bash", "sh", "shell", "console")

# The tiny recipe of tests/conftest.py (kept in step by tests/test_docs.py), plus synthetic data
# and convnext_atto so that any recipe (the paper's too) runs in seconds on a CPU.
TINY_OVERRIDES = [
    "model.flow_head.decoder_channels=[16,16]",
    "model.flow_head.proj_channels=16",
    "model.expander.dims=[64,64]",
    "data.flow_batch_size=2",
    "data.image_batch_size=4",
    "data.flow_size=[64,64]",
    "data.image_size=32",
    "data.num_workers=0",
    "schedule.total=6",
    "schedule.warmup=2",
    "train.log_every=1",
    "train.checkpoint_every=3",
    "train.report_plots=false",  # tests/test_report.py draws them
    "train.eval_pairs=4",
    "train.eval_size=[64,64]",
    "train.device=cpu",
]
CHEAP_PRETRAIN = [
    "model.encoder.arch=convnext_atto",
    "model.encoder.drop_path_rate=0.0",
    "schedule.unit=steps",
    "schedule.total=1",
    "schedule.warmup=0",
    "schedule.flow_start=0",
    "train.precision=fp32",
    "train.compile=false",
]
# Slurm / launcher variables a cluster would set (values for parsing only).
LAUNCH_ENV = {
    "SLURM_NNODES": "2",
    "SLURM_JOB_ID": "4242",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_GPUS_ON_NODE": "8",
    "SLURM_JOB_NODELIST": "node[001-002]",
    "MASTER_ADDR": "node001",
    "MASTER_PORT": "29500",
    "NODE_RANK": "0",
    "HEAD_NODE": "node001",
}
INPUT_PARAMS = {
    "root",
    "checkpoint",
    "flow",
    "mask",
    "probe",
    "predictions",
    "resume",
    "input",
    "inputs",
    "recipe",
}
VIDEO_EXT = {".mp4", ".webm", ".avi", ".mov", ".gif", ".mkv"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".ppm", ".bmp"}
FLOW_EXT = {".flo", ".pfm"}
SIZE = (64, 96)  # H, W of everything materialised


@dataclass
class DocCommand:
    """One command line of a page (continuations joined, trailing comment removed)."""

    path: Path
    line: int
    text: str
    kind: str  # "mcjepa", "launcher" (torchrun / srun), "file" (```yaml # file:) or "python"
    skip: str | None = None
    content: str = ""  # the file's text (kind "file") or the code (kind "python")
    env: dict[str, str] = field(default_factory=dict)  # VAR=value lines above it in its block


@dataclass
class Outcome:
    command: DocCommand
    status: str  # "ok", "fail", "skip", "parsed"
    detail: str = ""
    seconds: float = 0.0
    argv: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# reading the pages


def doc_pages() -> list[Path]:
    """``README.md`` and every ``docs/*.md``, sorted."""
    pages = sorted((REPO / "docs").glob("*.md"))
    readme = REPO / "README.md"
    return ([readme] if readme.is_file() else []) + pages


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def command_kind(text: str) -> str | None:
    """``mcjepa``, ``launcher`` or None (a shell line the checker does not run)."""
    words = _words(text)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # VAR=value prefixes
    if not words:
        return None
    if words[0] == "mcjepa" or words[:3] in (
        ["python", "-m", "mcjepa_cli"],
        ["python3", "-m", "mcjepa_cli"],
    ):
        return "mcjepa"
    if words[0] in ("torchrun", "srun") or words[:3] == ["python", "-m", "torch.distributed.run"]:
        return "launcher"
    return None


def _skip_reason(text: str) -> str | None:
    m = SKIP_RE.search(text)
    return (m.group(1).strip().strip("()") or "marked skip") if m else None


def _shell_commands(lines: list[tuple[int, str]], path: Path) -> list[DocCommand]:
    out: list[DocCommand] = []
    env: dict[str, str] = {}
    buf, start = "", 0
    for n, line in lines:
        if not buf:
            start = n
        stripped = line.rstrip()
        if stripped.endswith("\\") and not SKIP_RE.search(stripped):
            buf += stripped[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        assign = ASSIGN_RE.match(full)
        if assign and "$(" not in assign.group(2) and "`" not in assign.group(2):
            env[assign.group(1)] = assign.group(2).strip("\"'")
            continue
        kind = command_kind(full)
        if kind is None:
            continue
        skip = _skip_reason(full)
        sk = SKIP_RE.search(full)
        command = full[: sk.start()].strip() if sk else full
        if re.search(r"--install-completion\b", command):
            skip = skip or "changes the shell's startup files"
        out.append(DocCommand(path, start, command, kind, skip, env=dict(env)))
    return out


def extract_commands(text: str, path: Path = Path("<text>")) -> list[DocCommand]:
    """The checkable items of a Markdown page, in order: shell command lines, ```yaml blocks
    that start with ``# file: NAME``, and ```python blocks on pages marked ``PYTHON_MARK``."""
    out: list[DocCommand] = []
    lang: str | None = None
    fence = ""
    block: list[tuple[int, str]] = []
    run_python_blocks = PYTHON_MARK in text
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE_RE.match(line)
        if lang is None:
            if m:
                lang, fence, block = m.group(2).lower(), m.group(1), []
            continue
        if not (m and line.strip().startswith(fence[:3]) and not m.group(2)):
            block.append((n, line))
            continue
        # the block ends here
        if lang in SHELL_LANGS:
            out.extend(_shell_commands(block, path))
        elif lang in ("python", "py") and block and run_python_blocks:
            code = "\n".join(line for _, line in block) + "\n"
            out.append(
                DocCommand(
                    path,
                    block[0][0],
                    block[0][1].strip(),
                    "python",
                    _skip_reason(code),
                    content=code,
                )
            )
        elif lang in ("yaml", "yml") and block:
            fm = FILE_RE.match(block[0][1].strip())
            if fm:
                body = "\n".join(line for _, line in block[1:]) + "\n"
                out.append(DocCommand(path, block[0][0], fm.group(1), "file", content=body))
        lang = None
    return out


# ---------------------------------------------------------------------------------------
# the synthetic sandbox


def _clip(index: int = 0, frames: int = 6):
    from mcjepa_cli.data.synthetic import SyntheticWorld

    return SyntheticWorld(seed=0).clip(index, frames, SIZE[0], SIZE[1])


def _u8(frame):
    return (frame.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)


def _write_image(path: Path, frame) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_u8(frame)).save(path)


def _write_flow(path: Path, flow) -> None:
    from mcjepa_cli.io.flow_io import write_flow

    path.parent.mkdir(parents=True, exist_ok=True)
    write_flow(path, flow.permute(1, 2, 0).numpy())  # (H, W, 2)


def _write_label(path: Path, labels, palette: bool = True) -> None:
    import numpy as np
    from PIL import Image

    from mcjepa_cli.io.images import write_palette_png

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(labels, dtype=np.uint8)
    if palette:
        write_palette_png(path, arr)
    else:
        Image.fromarray(arr, mode="L").save(path)


def write_dataset(kind: str, root: Path) -> None:
    """A tiny copy of dataset ``kind`` in its official layout, rendered from the synthetic world."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "sintel":
        c = _clip(0, 3)
        for p in ("clean", "final"):
            for t in range(3):
                _write_image(
                    root / "training" / p / "alley_1" / f"frame_{t + 1:04d}.png", c.frames[t]
                )
        for t in range(2):
            _write_flow(
                root / "training" / "flow" / "alley_1" / f"frame_{t + 1:04d}.flo", c.flow[t]
            )
            _write_label(
                root / "training" / "occlusions" / "alley_1" / f"frame_{t + 1:04d}.png",
                c.occlusion[t].numpy() * 255,
                palette=False,
            )
    elif kind in ("kitti-2015", "kitti-2012"):
        from mcjepa_cli.io.flow_io import write_kitti_png

        images = "image_2" if kind == "kitti-2015" else "colored_0"
        for i in range(2):
            c = _clip(i, 2)
            _write_image(root / "training" / images / f"{i:06d}_10.png", c.frames[0])
            _write_image(root / "training" / images / f"{i:06d}_11.png", c.frames[1])
            for sub, valid in (("flow_occ", None), ("flow_noc", ~c.occlusion[0])):
                (root / "training" / sub).mkdir(parents=True, exist_ok=True)
                write_kitti_png(
                    root / "training" / sub / f"{i:06d}_10.png",
                    c.flow[0].permute(1, 2, 0).numpy(),
                    None if valid is None else valid.numpy(),
                )
    elif kind == "middlebury":
        for i, seq in enumerate(("Dimetrodon", "RubberWhale")):
            c = _clip(i, 2)
            _write_image(root / "other-data" / seq / "frame10.png", c.frames[0])
            _write_image(root / "other-data" / seq / "frame11.png", c.frames[1])
            _write_flow(root / "other-gt-flow" / seq / "flow10.flo", c.flow[0])
    elif kind == "chairs":
        for i in range(2):
            c = _clip(i, 2)
            _write_image(root / "data" / f"{i + 1:05d}_img1.ppm", c.frames[0])
            _write_image(root / "data" / f"{i + 1:05d}_img2.ppm", c.frames[1])
            _write_flow(root / "data" / f"{i + 1:05d}_flow.flo", c.flow[0])
        (root / "FlyingChairs_train_val.txt").write_text("1\n2\n")
    elif kind == "hd1k":
        c = _clip(0, 3)
        from mcjepa_cli.io.flow_io import write_kitti_png

        for t in range(3):
            _write_image(root / "hd1k_input" / "image_2" / f"000000_{t:04d}.png", c.frames[t])
        (root / "hd1k_flow_gt" / "flow_occ").mkdir(parents=True, exist_ok=True)
        for t in range(2):
            write_kitti_png(
                root / "hd1k_flow_gt" / "flow_occ" / f"000000_{t:04d}.png",
                c.flow[t].permute(1, 2, 0).numpy(),
            )
    elif kind == "davis":
        names = ("blackswan", "bike-packing")
        for i, seq in enumerate(names):
            c = _clip(i, 5)
            for t in range(5):
                _write_image(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", c.frames[t])
                _write_label(
                    root / "Annotations" / "480p" / seq / f"{t:05d}.png", c.instances[t].numpy()
                )
        sets = root / "ImageSets" / "2017"
        sets.mkdir(parents=True, exist_ok=True)
        for subset in ("val", "train"):
            (sets / f"{subset}.txt").write_text("\n".join(names) + "\n")
    elif kind == "voc":
        ids = {
            "train": ["2007_000032", "2007_000039", "2007_000063"],
            "val": ["2007_000033", "2007_000042"],
        }
        for split, names in ids.items():
            for i, name in enumerate(names):
                c = _clip(10 * (split == "val") + i, 1)
                _write_image(root / "JPEGImages" / f"{name}.jpg", c.frames[0])
                _write_label(root / "SegmentationClass" / f"{name}.png", c.classes[0].numpy())
            sets = root / "ImageSets" / "Segmentation"
            sets.mkdir(parents=True, exist_ok=True)
            (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    elif kind == "cityscapes":
        for split, city in (("train", "aachen"), ("val", "frankfurt")):  # cities as in the real splits
            for i in range(2):
                c = _clip(20 * (split == "val") + i, 1)
                stem = f"{city}_{i:06d}_000019"
                _write_image(
                    root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", c.frames[0]
                )
                _write_label(
                    root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png",
                    c.classes[0].numpy(),
                    palette=False,
                )
    elif kind == "ade20k":
        for split in ("training", "validation"):
            for i in range(2):
                c = _clip(30 * (split == "validation") + i, 1)
                stem = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
                _write_image(root / "images" / split / f"{stem}.jpg", c.frames[0])
                _write_label(
                    root / "annotations" / split / f"{stem}.png",
                    c.classes[0].numpy() + 1,
                    palette=False,
                )
    else:
        raise LookupError(f"no synthetic layout for dataset {kind!r}")


def write_video(path: Path, frames: int = 6) -> None:
    """A short synthetic clip as .mp4 (H.264) or .gif, with the toolkit's own writer."""
    from mcjepa_cli.viz.writer import open_frame_writer

    c = _clip(0, frames)
    with open_frame_writer(path, fps=10, num_frames=frames) as w:
        for f in c.frames:
            w.append(_u8(f))


class Sandbox:
    """A folder in which one page's commands run: ``work/`` is the working directory,
    ``home/`` stands for ``~``, ``abs/`` for ``/``, ``mcjepa_data/`` is ``$MCJEPA_DATA``."""

    def __init__(self, root: Path, base_run: Path | None = None, cache: Path | None = None) -> None:
        self.root = Path(root).resolve()
        self.work = self.root / "work"
        self.home = self.root / "home"
        self.abs = self.root / "abs"
        self.data = self.root / "mcjepa_data"
        self.cache = Path(cache).resolve() if cache is not None else self.root / "_datasets"
        for d in (self.work, self.home, self.abs, self.data):
            d.mkdir(parents=True, exist_ok=True)
        self.base_run = Path(base_run).resolve() if base_run is not None else None
        self.env = {"MCJEPA_DATA": str(self.data)}

    # -- paths ---------------------------------------------------------------------------

    def map_path(self, text: str) -> str:
        """Expand ``$VARS``/``~`` and move absolute paths into the sandbox."""
        t = re.sub(
            r"\$\{?(\w+)\}?",
            lambda m: self.env.get(m.group(1), os.environ.get(m.group(1), m.group(0))),
            text,
        )
        if t == "~" or t.startswith("~/"):
            t = str(self.home / t[2:])
        elif t.startswith("/") and not t.startswith(str(self.root)):
            t = str(self.abs / t.lstrip("/"))
        return t

    def inside(self, text: str | Path) -> Path:
        """The sandbox path for a (mapped) argument; refuses anything outside the sandbox."""
        p = Path(text)
        p = Path(
            os.path.normpath(p if p.is_absolute() else self.work / p)
        )  # lexical: keeps symlinks
        if not p.is_relative_to(self.root):
            raise ValueError(f"{text}: outside the docs sandbox {self.root}")
        return p

    def dataset(self, kind: str, where: Path) -> None:
        """Make ``where`` a synthetic copy of dataset ``kind`` (built once per sandbox)."""
        if where.exists():
            return
        built = self.cache / kind
        if not built.exists():
            write_dataset(kind, built)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(built, target_is_directory=True)

    def run_dir(self, where: Path) -> None:
        """Make ``where`` a copy of the tiny base run (``checkpoints/last.pt``, recipe, metrics)."""
        if self.base_run is None:
            self.base_run = self._train_base_run()
        where.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.base_run, where, dirs_exist_ok=True)

    def _train_base_run(self) -> Path:
        from mcjepa_cli.config import load_recipe
        from mcjepa_cli.engine.trainer import pretrain

        out = self.cache / "base_run"
        if not (out / "checkpoints" / "last.pt").is_file():
            overrides = [o for o in TINY_OVERRIDES if not o.startswith("data.flow_size")]
            pretrain(
                load_recipe("quickstart", [*overrides, "data.flow_size=[64,96]"]),
                output=str(out),
                overwrite=True,
                show_progress=False,
            )
        return out

    def has_run(self) -> bool:
        runs = self.work / "runs"
        return runs.is_dir() and any(
            (d / "checkpoints" / "last.pt").is_file() for d in runs.iterdir()
        )


# ---------------------------------------------------------------------------------------
# running one mcjepa line


def _cli():
    import typer

    from mcjepa_cli.main import app

    return typer.main.get_command(app)


def split_args(sub, args: list[str]) -> list[tuple[str, str | None, list[int]]]:
    """(param name, option as written or None for positionals, indices of its values)."""
    by_opt = {}
    for p in sub.params:
        for o in list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", [])):
            if o.startswith("-"):
                by_opt[o] = p
    positional = [
        p for p in sub.params if not any(o.startswith("-") for o in getattr(p, "opts", []))
    ]
    out = []
    i = 0
    pos_i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, _, inline = a.partition("=")
            p = by_opt.get(name)
            if p is None:
                out.append(("?", a, []))
                i += 1
                continue
            if getattr(p, "is_flag", False) or getattr(p, "count", False):
                out.append((p.name, name, []))
                i += 1
                continue
            nargs = max(1, int(getattr(p, "nargs", 1) or 1))
            if inline:
                out.append((p.name, name, [i]))
                i += 1
            else:
                out.append((p.name, name, list(range(i + 1, min(len(args), i + 1 + nargs)))))
                i += 1 + nargs
            continue
        p = positional[min(pos_i, len(positional) - 1)] if positional else None
        out.append((p.name if p is not None else "?", None, [i]))
        if p is not None and getattr(p, "nargs", 1) != -1:
            pos_i += 1
        i += 1
    return out


def _value(args: list[str], option: str) -> str | None:
    for i, a in enumerate(args):
        if a == option and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
        else:
            continue
        return value
    return None


def prepare(sandbox: Sandbox, words: list[str]) -> list[str]:
    """Map paths, materialise missing inputs, append the cheap overrides; returns the argv."""
    from mcjepa_cli.data.roots import DATA_FOLDER_NAMES

    cli = _cli()
    args = list(words)
    if not args or args[0].startswith("-") or args[0] not in cli.commands:
        return args  # `mcjepa --version`, `mcjepa --help`, ...
    name = args[0]
    sub = cli.commands[name]
    rest = args[1:]
    groups = split_args(sub, rest)
    # pass 1: every path into the sandbox (~ -> home/, / -> abs/, $MCJEPA_DATA -> mcjepa_data/)
    for _, opt, idx in groups:
        for i in idx:
            v = rest[i]
            if opt == "--set" and "=" in v:
                key, val = v.split("=", 1)
                if val.startswith(("~", "/", "$")):
                    rest[i] = f"{key}={sandbox.map_path(val)}"
            elif v.startswith(("~", "/", "$")):
                rest[i] = sandbox.map_path(v)
    # `latest`, and visualize's default checkpoint, need a run under ./runs
    uses_latest = "latest" in rest or (
        name == "visualize"
        and _value(rest, "--checkpoint") is None
        and _value(rest, "-c") is None
        and _value(rest, "--flow") is None
    )
    if uses_latest and not sandbox.has_run():
        sandbox.run_dir(sandbox.work / "runs" / "quickstart")
    # the dataset folder (--root, else $MCJEPA_DATA/<Name>), before anything that reads it
    dataset = _value(rest, "--dataset") or ("davis" if name == "davis-eval" else None)
    if dataset in DATA_FOLDER_NAMES:
        root = _value(rest, "--root")
        sandbox.dataset(
            dataset, sandbox.inside(root) if root else sandbox.data / DATA_FOLDER_NAMES[dataset]
        )
    # pass 2: make what the line reads and does not exist
    images_seen = flows_seen = 0
    for pname, opt, idx in groups:
        for i in idx:
            v = rest[i]
            if opt == "--set" and "=" in v:
                key, val = v.split("=", 1)
                if key == "model.encoder.init" and val not in ("null", ""):
                    target = sandbox.inside(val)
                    if not target.exists():
                        _timm_weights(target)
                continue
            if pname not in INPUT_PARAMS or v == "latest":
                continue
            target = sandbox.inside(v)
            suffix = target.suffix.lower()
            if target.exists():
                if pname in ("input", "inputs") and suffix in IMAGE_EXT:
                    images_seen += 1
                continue
            if pname == "root":
                continue  # made above (a dataset with no synthetic layout: the run says so)
            if pname in ("checkpoint", "resume"):
                _materialise_run(sandbox, target)
            elif pname == "recipe":
                if suffix in (".yaml", ".yml"):
                    _copy_recipe(target)
            elif pname == "probe":
                _newest_like(sandbox, target)
                if not target.exists():  # the line that wrote it was parsed only: train one
                    keep: list[str] = []
                    for o in ("--dataset", "--root", "--checkpoint", "-c", "--backbone", "--arch"):
                        if _value(rest, o) is not None:
                            keep += [o, str(_value(rest, o))]
                    sub_argv = ["segment-eval", *keep, "--output", str(target.parent)]
                    run_cli(sandbox, [*sub_argv, *cheap_options("segment-eval", sub_argv[1:], sub)])
            elif pname == "predictions":
                _materialise_predictions(sandbox, name, rest, target)
            elif pname == "flow" or suffix in FLOW_EXT:
                _write_flow(target, _clip(0, flows_seen + 2).flow[flows_seen])
                flows_seen += 1
            elif pname == "mask":
                _write_label(target, _clip(0, 1).instances[0].numpy())
            elif suffix in VIDEO_EXT:
                write_video(target)
            elif suffix in IMAGE_EXT:
                _write_image(target, _clip(0, images_seen + 1).frames[images_seen])
                images_seen += 1
            elif pname in ("input", "inputs") and not suffix:
                c = _clip(0, 6)
                for t in range(6):
                    _write_image(target / f"{t:05d}.jpg", c.frames[t])
    return [name, *rest, *cheap_options(name, rest, sub)]


def _newest_like(sandbox: Sandbox, target: Path) -> None:
    """Copy the newest file named like ``target`` that an earlier line wrote (``probe.pt``),
    preferring one whose folder starts like ``target``'s (``voc-...`` for ``voc-2025...``)."""
    prefix = target.parent.name.split("-")[0]
    found = [p for p in sandbox.work.rglob(target.name) if p.is_file()]
    if found:
        best = max(found, key=lambda p: (p.parent.name.split("-")[0] == prefix, p.stat().st_mtime))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(best, target)


def cheap_options(name: str, rest: list[str], sub) -> list[str]:
    """Options appended to a line so that it runs in seconds (the last occurrence wins)."""
    extra: list[str] = []
    opts = {o for p in sub.params for o in getattr(p, "opts", [])}
    if "--device" in opts and _value(rest, "--device") is not None:
        extra += ["--device", "cpu"]
    if "--arch" in opts and _value(rest, "--arch") is not None:
        extra += ["--arch", "convnext_atto"]  # random baselines of the paper's architecture
    if name == "pretrain":
        if "--resume" not in rest:
            recipe = rest[0] if rest and not rest[0].startswith("-") else None
            for o in [*TINY_OVERRIDES, *CHEAP_PRETRAIN, *_synthetic_data(recipe, rest)]:
                extra += ["--set", o]
            if _value(rest, "--precision") is not None:
                extra += ["--precision", "fp32"]
        extra.append("--no-progress")
    elif name == "flow-eval":
        if _value(rest, "--dataset") == "synthetic":
            extra += ["--count", "2", "--size", "64x64"]
        extra += ["--batch-size", "2", "--no-progress"]
    elif name == "segment-eval":
        extra += [
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--crop-size",
            "64",
            "--slide-stride",
            "64",
            "--train-images",
            "2",
            "--val-images",
            "1",
            "--cache-crops",
            "0",
            "--examples",
            "1",
            "--workers",
            "0",
            "--quiet",
        ]
        if _value(rest, "--precision") is not None:
            extra += ["--precision", "fp32"]
    elif name == "davis-eval":
        if _value(rest, "--dataset") == "synthetic":
            extra += ["--num-sequences", "1", "--num-frames", "3", "--synthetic-size", "64x64"]
        if _value(rest, "--predictions") is None:
            extra += ["--size", "64"]
        extra.append("--quiet")
    elif name == "visualize":
        has_frames = any(not a.startswith("-") for a in rest[:1])
        if has_frames:
            extra += [
                "--max-frames",
                "3",
                "--size",
                "64",
            ]  # 3 frames: 2 flow frames, the .mp4 default
        extra.append("--no-progress")
    elif name == "export":
        extra.append("--no-check")  # tests/test_export.py checks every format against PyTorch
    return extra


def _synthetic_data(recipe: str | None, rest: list[str]) -> list[str]:
    """Overrides that put a recipe's flow / image sources on the synthetic world."""
    from mcjepa_cli.config import load_recipe

    sets = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--set"]
    try:
        r = load_recipe(recipe or "quickstart", sets)
    except Exception:  # the real run reports a bad recipe with its own message
        return []
    out = []
    if r.data.flow:
        out.append("data.flow=[{name: synthetic}]")
    if r.data.images:
        out.append("data.images=[{name: synthetic}]")
    return out


def _timm_weights(path: Path, arch: str = "convnext_atto") -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, num_classes=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        torch.save(net.state_dict(), path)


def _materialise_run(sandbox: Sandbox, target: Path) -> None:
    if target.suffix == ".pt":
        run = target.parent.parent if target.parent.name == "checkpoints" else target.parent
        sandbox.run_dir(run)
        if not target.exists():
            shutil.copy2(run / "checkpoints" / "last.pt", target)
    else:
        sandbox.run_dir(target)


def _copy_recipe(target: Path) -> None:
    from mcjepa_cli.config import recipe_dirs

    for d in recipe_dirs():
        cand = d / target.name
        if cand.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cand, target)
            return


def _materialise_predictions(sandbox: Sandbox, name: str, rest: list[str], target: Path) -> None:
    """Another method's predictions: zero flow (flow-eval) or the true masks (davis-eval)."""
    from mcjepa_cli.data.roots import DATA_FOLDER_NAMES

    if name == "davis-eval":
        root = _value(rest, "--root")
        root_path = sandbox.inside(root) if root else sandbox.data / DATA_FOLDER_NAMES["davis"]
        sandbox.dataset("davis", root_path)
        shutil.copytree(root_path / "Annotations" / "480p", target)
    elif name == "flow-eval":
        keep = []
        for opt in ("--dataset", "--root", "--pass", "--split"):
            v = _value(rest, opt)
            if v is not None:
                keep += [opt, v]
        run_cli(
            sandbox,
            [
                "flow-eval",
                *keep,
                "--model",
                "zero",
                "--save-predictions",
                str(target),
                "--no-progress",
            ],
        )


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(sandbox: Sandbox, argv: list[str]) -> tuple[int, str]:
    """Run ``mcjepa argv`` in-process in the sandbox; (exit code, output)."""
    from typer.testing import CliRunner

    from mcjepa_cli.main import app

    with _in_dir(sandbox.work):
        r = CliRunner().invoke(app, argv, env=sandbox.env)
    text = r.output
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        text += "".join(traceback.format_exception(r.exception))
    return r.exit_code, text


def mcjepa_words(text: str) -> list[str]:
    words = _words(text)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if words[0] == "mcjepa":
        return words[1:]
    return words[3:]  # python -m mcjepa_cli


def run_python(sandbox: Sandbox, cmd: DocCommand, namespace: dict[str, object]) -> None:
    """Execute a ```python block in the sandbox; image, video and flow file names it mentions
    that do not exist are rendered from the synthetic world first (consecutive frames in order)."""
    import ast

    images = flows = 0
    for node in ast.walk(ast.parse(cmd.content)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        target = sandbox.work / node.value
        suffix = target.suffix.lower()
        if "/" in node.value or target.exists() or not suffix:
            continue
        if suffix in VIDEO_EXT:
            write_video(target)
        elif suffix in IMAGE_EXT:
            _write_image(target, _clip(0, images + 1).frames[images])
            images += 1
        elif suffix in FLOW_EXT:
            _write_flow(target, _clip(0, flows + 2).flow[flows])
            flows += 1
    code = compile(cmd.content, f"{cmd.path}:{cmd.line}", "exec")
    with _in_dir(sandbox.work):
        exec(code, namespace)  # noqa: S102 - the docs' own example code, run on purpose


# ---------------------------------------------------------------------------------------
# launcher lines (torchrun, srun)


def launcher_parts(text: str, env: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(torchrun's own arguments, the mcjepa arguments) of a torchrun / srun line.

    ``$VARS`` take their value from ``env`` (assignments above the line), then from
    ``LAUNCH_ENV`` (what Slurm would set), else ``1``.
    """
    known = {**LAUNCH_ENV, **(env or {})}
    var = re.compile(r"\$\{?(\w+)\}?")
    words = [var.sub(lambda m: known.get(m.group(1), "1"), w) for w in _words(text)]
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if words and words[0] == "srun":
        k = next((i for i, w in enumerate(words) if w in ("torchrun", "python", "python3")), None)
        if k is None:
            raise ValueError("srun line without torchrun")
        words = words[k:]
    if words[:3] in (
        ["python", "-m", "torch.distributed.run"],
        ["python3", "-m", "torch.distributed.run"],
    ):
        words = ["torchrun", *words[3:]]
    if not words or words[0] != "torchrun":
        raise ValueError("expected torchrun")
    from torch.distributed.run import get_args_parser

    ns = get_args_parser().parse_args(words[1:])
    if not (ns.module and ns.training_script == "mcjepa_cli"):
        raise ValueError("expected '-m mcjepa_cli <command> ...' after the torchrun flags")
    return words[1 : len(words) - len(ns.training_script_args) - 1], list(ns.training_script_args)


def parse_only(args: list[str]) -> None:
    """Parse ``mcjepa args`` with the CLI's own parser and resolve a pretrain recipe (no run)."""
    cli = _cli()
    ctx = cli.make_context("mcjepa", list(args), resilient_parsing=False)
    with ctx:
        # the subcommand and its arguments, as the group's own invoke() reads them back
        head = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", []))
        name, sub, rest = cli.resolve_command(ctx, [*head, *ctx.args])
        sub_ctx = sub.make_context(name, rest, parent=ctx)
        if name == "pretrain":
            from mcjepa_cli.config import load_recipe

            p = sub_ctx.params
            if p.get("recipe") and not p.get("resume"):
                load_recipe(p["recipe"], list(p.get("set_") or []))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_nodes(torch_args: list[str]) -> int:
    """The largest node count a torchrun command line asks for (``--nnodes 2`` or ``1:4``)."""
    from torch.distributed.run import get_args_parser

    ns = get_args_parser().parse_args([*torch_args, "-m", "mcjepa_cli"])
    return int(str(ns.nnodes).split(":")[-1])


def run_launcher(sandbox: Sandbox, cmd: DocCommand) -> tuple[int, str]:
    """Run a torchrun line for real on CPU: 2 processes, or 2 local 'nodes' x 1 process
    (paths mapped into the sandbox and the cheap overrides appended, as for ``mcjepa`` lines)."""
    torch_args, mc_args = launcher_parts(cmd.text, cmd.env)
    nodes = launcher_nodes(torch_args)
    mc = prepare(sandbox, mc_args)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **sandbox.env)
    base = [sys.executable, "-m", "torch.distributed.run"]
    if nodes <= 1:
        cmds = [[*base, "--standalone", "--nproc_per_node", "2", "-m", "mcjepa_cli", *mc]]
    else:
        port = _free_port()
        cmds = [
            [
                *base,
                "--nnodes",
                "2",
                "--node_rank",
                str(r),
                "--nproc_per_node",
                "1",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"127.0.0.1:{port}",
                "--rdzv_id",
                "docs",
                "-m",
                "mcjepa_cli",
                *mc,
            ]
            for r in range(2)
        ]
    procs = [
        subprocess.Popen(
            c,
            cwd=sandbox.work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in cmds
    ]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    code = max(p.returncode for p in procs)
    return code, "\n".join(outs)


# ---------------------------------------------------------------------------------------
# pages


def line_shape(words: list[str]) -> tuple:
    """What a ``mcjepa`` line exercises: the command, the options it uses, the values that pick
    a code path (dataset, format, model, backbone, preset), the recipe keys it sets and the
    kinds of its positional arguments. Two lines of one shape run the same code."""
    if not words:
        return ()
    rest = words[1:]
    opts = sorted({a.split("=", 1)[0] for a in rest if a.startswith("-")})
    picks = tuple(
        (o, _value(rest, o))
        for o in ("--dataset", "--format", "-f", "--model", "--backbone", "--preset", "--show")
    )
    sets = sorted(rest[i + 1].split("=", 1)[0] for i, a in enumerate(rest[:-1]) if a == "--set")
    positional = []
    for i, a in enumerate(rest):
        if a.startswith("-") or (i and rest[i - 1].startswith("-") and rest[i - 1] not in _FLAGS):
            continue
        positional.append(Path(a).suffix or ("name" if "/" not in a else "dir"))
        if words[0] == "pretrain" and i == 0 and "/" not in a and not Path(a).suffix:
            positional[-1] = a  # a packaged recipe: each one is its own case
    return (words[0], tuple(opts), picks, tuple(sets), tuple(positional))


# commands whose repeats may be parsed instead of run, and the options that name what they write
DEDUPABLE = ("flow-eval", "segment-eval", "davis-eval", "visualize")
OUTPUT_OPTIONS = ("-o", "--output", "--json", "--save-predictions")


def dedupable(words: list[str]) -> bool:
    """Lines whose repeats may be parsed instead of run: evaluations and renders that write
    nothing a later line names (no explicit output), and ``pretrain``, whose only output, the
    run directory, is then stood in for by a copy of the tiny run (``skip_run``)."""
    if not words:
        return False
    if words[0] == "pretrain":
        return True
    return words[0] in DEDUPABLE and not any(
        w.split("=", 1)[0] in OUTPUT_OPTIONS for w in words[1:]
    )


def skip_run(sandbox: Sandbox, argv: list[str]) -> None:
    """What a parsed-only line would have left behind for later lines: a run directory."""
    if not argv or argv[0] != "pretrain" or _value(argv[1:], "--resume") is not None:
        return
    out = _value(argv[1:], "--output") or _value(argv[1:], "-o")
    if out is None:
        recipe = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else "run"
        out = f"runs/{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    target = sandbox.inside(out)
    if not (target / "checkpoints" / "last.pt").is_file():
        sandbox.run_dir(target)


# options that take no value (for line_shape's positional detection)
_FLAGS = {
    "--per-image",
    "--per-sequence",
    "--no-progress",
    "--progress",
    "--overwrite",
    "--finetune",
    "--quiet",
    "-q",
    "--rescale",
    "--no-rescale",
    "--check",
    "--no-check",
    "--help",
    "-h",
    "--version",
}


# Optional extras a documented line may need: (what the line does, modules, the extra to install).
_EXTRA_NEEDS = (
    (re.compile(r"(?:--format|-f)[ =]onnx\b"), ("onnx", "onnxscript"), "onnx"),
    (re.compile(r"^\s*(?:import|from)\s+onnxruntime\b", re.M), ("onnxruntime",), "onnx"),
    (re.compile(r"^\s*(?:import|from)\s+onnx\b", re.M), ("onnx",), "onnx"),
)


def missing_extra(cmd: DocCommand) -> str | None:
    """A skip reason when ``cmd`` needs an optional extra that is not installed, else None."""
    import importlib.util

    text = cmd.content if cmd.kind == "python" else cmd.text
    for pattern, modules, extra in _EXTRA_NEEDS:
        if not pattern.search(text):
            continue
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            return f"needs the optional extra: pip install 'mcjepa[{extra}]' ({', '.join(absent)} absent)"
    return None


def check_page(
    page: Path, sandbox: Sandbox, full: bool = False, seen_shapes: dict[tuple, str] | None = None
) -> list[Outcome]:
    """Run (or parse) every command of ``page`` in ``sandbox``, in order.

    Args:
        page: a Markdown file.
        sandbox: where the commands run.
        full: also run torchrun lines (2 CPU processes / 2 local nodes).
        seen_shapes: when given, a ``mcjepa`` line whose ``line_shape`` ran before (recorded
            here, across pages) is only parsed, not run again; None runs every line. The first
            single-node and the first multi-node torchrun line are run even without ``full``.
    """
    outcomes = []
    namespace: dict[str, object] = {"__name__": "__docs__"}  # shared by the page's python blocks
    for cmd in extract_commands(page.read_text(encoding="utf-8"), page):
        t0 = time.time()
        skip = cmd.skip or missing_extra(cmd)
        if skip:
            outcomes.append(Outcome(cmd, "skip", skip))
            continue
        if cmd.kind == "file":
            target = sandbox.work / cmd.text
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cmd.content, encoding="utf-8")
            outcomes.append(Outcome(cmd, "ok", f"wrote {cmd.text}"))
            continue
        if cmd.kind == "python":
            try:
                run_python(sandbox, cmd, namespace)
                outcomes.append(Outcome(cmd, "ok", "", time.time() - t0))
            except Exception:  # a failing snippet is a docs error: show its traceback
                import traceback

                outcomes.append(
                    Outcome(cmd, "fail", traceback.format_exc()[-3000:], time.time() - t0)
                )
            continue
        if cmd.kind == "launcher":
            try:
                torch_args, mc_args = launcher_parts(cmd.text, cmd.env)
                parse_only(mc_args)
            except SystemExit as e:  # argparse's way of reporting bad torchrun flags
                outcomes.append(
                    Outcome(cmd, "fail", f"torchrun flags do not parse (exit {e.code})")
                )
                continue
            except Exception as e:  # any parse or recipe error is a docs error
                outcomes.append(Outcome(cmd, "fail", f"{type(e).__name__}: {e}"))
                continue
            topology = ("launcher", "multi-node" if launcher_nodes(torch_args) > 1 else "one node")
            first_of_kind = seen_shapes is not None and topology not in seen_shapes
            if full or first_of_kind:
                code, text = run_launcher(sandbox, cmd)
                status = "ok" if code == 0 else "fail"
                if code == 0 and seen_shapes is not None:
                    seen_shapes[topology] = f"{cmd.path.name}:{cmd.line}"
                outcomes.append(
                    Outcome(cmd, status, text[-3000:] if code else "", time.time() - t0)
                )
            elif seen_shapes is not None:
                outcomes.append(
                    Outcome(cmd, "parsed", f"launcher flags parse; {topology[1]} launch ran at "
                            f"{seen_shapes[topology]}")
                )
            else:
                outcomes.append(Outcome(cmd, "parsed", "launcher flags and mcjepa arguments parse"))
            continue
        words = mcjepa_words(cmd.text)
        where = f"{cmd.path.name}:{cmd.line}"
        dedupe = seen_shapes is not None and dedupable(words)
        if dedupe and line_shape(words) in seen_shapes:
            try:
                argv = prepare(sandbox, words)  # the files it names still have to be there
                with _in_dir(sandbox.work):
                    parse_only(argv)
                skip_run(sandbox, argv)
                outcomes.append(
                    Outcome(
                        cmd,
                        "parsed",
                        f"same code path as {seen_shapes[line_shape(words)]}",
                        argv=argv,
                    )
                )
            except Exception as e:  # a parse or recipe error is a docs error
                outcomes.append(Outcome(cmd, "fail", f"{type(e).__name__}: {e}"))
            continue
        try:
            argv = prepare(sandbox, words)
        except Exception as e:  # a docs-check bug or an unsupported path: report, do not hide
            outcomes.append(
                Outcome(cmd, "fail", f"could not prepare the sandbox: {type(e).__name__}: {e}")
            )
            continue
        code, text = run_cli(sandbox, argv)
        if code == 0 and dedupe:
            seen_shapes[line_shape(words)] = where
        outcomes.append(
            Outcome(
                cmd,
                "ok" if code == 0 else "fail",
                "" if code == 0 else f"exit {code}\n{text[-3000:]}",
                time.time() - t0,
                argv,
            )
        )
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "pages", nargs="*", type=Path, help="pages to check (default: README.md and docs/*.md)"
    )
    parser.add_argument(
        "--full", action="store_true", help="also run the torchrun lines (CPU, gloo)"
    )
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help="run one line per code path (line_shape), only parse the others",
    )
    parser.add_argument("--keep", type=Path, help="build the sandboxes here and keep them")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the argv of every line")
    args = parser.parse_args(argv)
    pages = args.pages or doc_pages()
    root = args.keep or Path(tempfile.mkdtemp(prefix="mcjepa-docs-"))
    base_sandbox = Sandbox(root / "_base")
    seen: dict[tuple, str] | None = {} if args.dedupe else None
    failed = 0
    try:
        for page in pages:
            # datasets and the tiny run are built once for all pages
            sandbox = Sandbox(root / page.stem, base_sandbox.base_run, cache=base_sandbox.cache)
            for o in check_page(page, sandbox, full=args.full, seen_shapes=seen):
                rel = (
                    o.command.path.relative_to(REPO)
                    if o.command.path.is_absolute()
                    else o.command.path
                )
                print(
                    f"{o.status:6s} {rel}:{o.command.line}  {o.command.text}  ({o.seconds:.1f} s)"
                    if o.status in ("ok", "fail")
                    else f"{o.status:6s} {rel}:{o.command.line}  {o.command.text}  [{o.detail}]"
                )
                if args.verbose and o.argv:
                    print("       argv: mcjepa " + " ".join(shlex.quote(a) for a in o.argv))
                if o.status == "fail":
                    failed += 1
                    print("       " + o.detail.replace("\n", "\n       "))
            base_sandbox.base_run = sandbox.base_run
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{failed} failing command line(s)" if failed else "every command line of the docs ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
