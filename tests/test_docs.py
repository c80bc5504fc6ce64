"""The docs cannot rot: every command line of docs/*.md runs on the synthetic world, the recipe
reference is regenerated from the typed defaults, and every option of every command has help."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import conftest
import pytest
import typer
from typer.testing import CliRunner

from mcjepa_cli.main import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _load_script(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


check_docs = _load_script("check_docs")
gen_recipe_docs = _load_script("gen_recipe_docs")
PAGES = [
    p
    for p in check_docs.doc_pages()
    if any(c.kind != "file" for c in check_docs.extract_commands(p.read_text(encoding="utf-8"), p))
]


# ---------------------------------------------------------------------------------------
# the generated recipe reference


def test_recipes_page_is_current():
    page = REPO / "docs" / "recipes.md"
    assert page.is_file(), "docs/recipes.md is missing: run python scripts/gen_recipe_docs.py"
    assert page.read_text(encoding="utf-8") == gen_recipe_docs.render(), (
        "docs/recipes.md is stale: run python scripts/gen_recipe_docs.py"
    )


def test_recipe_reference_reads_field_comments_from_source(tmp_path):
    """Comments above a field and at the end of its line both become its meaning."""
    import dataclasses

    src = tmp_path / "cfgmod.py"
    src.write_text(
        "from dataclasses import dataclass, field\n\n"
        '@dataclass\nclass Inner:\n    """The inner part."""\n\n'
        "    # first line of a block\n    # second line\n    alpha: int = 3\n"
        "    beta: list[float] = field(default_factory=lambda: [0.5, 2.0])  # trailing note\n\n"
        "    gamma: str | None = None\n\n"
        "@dataclass\nclass Outer:\n    inner: Inner = field(default_factory=Inner)\n"
        "    rate: float = 3e-4  # a learning rate\n"
    )
    spec = importlib.util.spec_from_file_location("cfgmod", src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cfgmod"] = mod
    try:
        spec.loader.exec_module(mod)
        sections = gen_recipe_docs.collect(mod.Outer)
    finally:
        del sys.modules["cfgmod"]
    assert [s.key for s in sections] == ["", "inner"]
    rows = {f.key: f for s in sections for f in s.fields}
    assert rows["inner.alpha"].meaning == "first line of a block second line"
    assert (rows["inner.alpha"].type, rows["inner.alpha"].default) == ("int", "3")
    assert rows["inner.beta"].meaning == "trailing note"
    assert (rows["inner.beta"].type, rows["inner.beta"].default) == ("list of float", "[0.5, 2.0]")
    assert (rows["inner.gamma"].type, rows["inner.gamma"].default, rows["inner.gamma"].meaning) == (
        "str or null",
        "null",
        "",
    )
    assert (rows["rate"].default, rows["rate"].meaning) == ("0.0003", "a learning rate")
    assert sections[1].summary == "The inner part."
    assert dataclasses.is_dataclass(sections[0].cls)


def test_recipe_reference_covers_every_field():
    """Every leaf field of the Recipe dataclasses appears as a row of docs/recipes.md."""
    import dataclasses
    import typing

    from mcjepa_cli.config import Recipe

    def leaves(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                yield from leaves(tp, f"{prefix}{f.name}.")
                continue
            yield f"{prefix}{f.name}"
            args = typing.get_args(tp)
            if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
                yield from leaves(args[0], f"{prefix}{f.name}[].")

    text = gen_recipe_docs.render()
    missing = [k for k in leaves(Recipe) if f"| `{k}` |" not in text]
    assert not missing


# ---------------------------------------------------------------------------------------
# the docs checker itself


def test_extract_commands_joins_lines_and_honours_markers():
    page = (
        "text\n```bash\n# a comment\nmcjepa flow-eval --dataset synthetic \\\n    --model zero\n"
        "pip install -e .\nmcjepa visualize a.mp4  # docs-check: skip (needs a camera)\n"
        "OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m mcjepa_cli "
        "pretrain quickstart\n"
        "mcjepa --install-completion\n```\n"
        "```python\nprint('not run: the page has no python marker')\n```\n"
        "```yaml\n# file: r.yaml\nbase: quickstart\n```\n"
        "```text\nmcjepa not-a-command-block\n```\n"
    )
    cmds = check_docs.extract_commands(page)
    assert [(c.kind, c.line) for c in cmds] == [
        ("mcjepa", 4),
        ("mcjepa", 7),
        ("launcher", 8),
        ("mcjepa", 9),
        ("file", 15),
    ]
    assert cmds[0].text == "mcjepa flow-eval --dataset synthetic      --model zero"
    assert cmds[1].skip == "needs a camera" and cmds[1].text == "mcjepa visualize a.mp4"
    assert cmds[3].skip  # never installs completion into the real shell
    assert cmds[4].text == "r.yaml" and cmds[4].content == "base: quickstart\n"
    marked = check_docs.extract_commands(check_docs.PYTHON_MARK + "\n```python\nx = 1\n```\n")
    assert [(c.kind, c.content) for c in marked] == [("python", "x = 1\n")]


def test_launcher_lines_are_really_parsed():
    ok = (
        "srun torchrun --nnodes $SLURM_NNODES --nproc_per_node 8 --rdzv_backend c10d "
        "--rdzv_endpoint $MASTER_ADDR:29500 --rdzv_id $SLURM_JOB_ID -m mcjepa_cli pretrain "
        "mcjepa_convnext_tiny --output runs/x"
    )
    torch_args, mc_args = check_docs.launcher_parts(ok)
    assert mc_args[:2] == ["pretrain", "mcjepa_convnext_tiny"] and "--nnodes" in torch_args
    check_docs.parse_only(mc_args)
    with pytest.raises(SystemExit):  # a misspelt torchrun flag
        check_docs.launcher_parts("torchrun --gpus-per-node 8 -m mcjepa_cli pretrain quickstart")
    from mcjepa_cli.errors import UserError

    with pytest.raises(UserError):  # a misspelt recipe key
        check_docs.parse_only(["pretrain", "quickstart", "--set", "optim.lr_encodr=1"])
    with pytest.raises(Exception, match="no-such-option"):  # Typer's own usage error
        check_docs.parse_only(["flow-eval", "--dataset", "synthetic", "--no-such-option"])


def test_tiny_overrides_match_conftest():
    assert check_docs.TINY_OVERRIDES == conftest.TINY_OVERRIDES


def test_a_failing_docs_line_is_reported(tmp_path, quickstart_checkpoint):
    page = tmp_path / "bad.md"
    page.write_text(
        "```bash\nmcjepa flow-eval --dataset synthetic --checkpoint runs/quickstart\n"
        "mcjepa flow-eval --dataset nowhere --model zero\n```\n"
    )
    outcomes = check_docs.check_page(
        page, check_docs.Sandbox(tmp_path / "sb", quickstart_checkpoint)
    )
    assert [o.status for o in outcomes] == ["ok", "fail"]
    assert "nowhere" in outcomes[1].detail


# ---------------------------------------------------------------------------------------
# every command line of the docs


# Lines of one code path (check_docs.line_shape) run once per session and are only parsed after
# that; MCJEPA_DOCS_CHECK=all runs every line, as `python scripts/check_docs.py` does in CI.
_SEEN_SHAPES: dict | None = None if os.environ.get("MCJEPA_DOCS_CHECK") == "all" else {}


@pytest.fixture(scope="session")
def docs_cache(tmp_path_factory) -> Path:
    """Synthetic dataset layouts shared by every page's sandbox (built on first use)."""
    return tmp_path_factory.mktemp("docs_datasets")


# real docs bugs found by the checker, reported to the page's owner (remove once fixed)
_KNOWN_BROKEN: dict[str, str] = {}


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=_KNOWN_BROKEN[p.name], strict=True))
        if p.name in _KNOWN_BROKEN
        else p
        for p in PAGES
    ],
    ids=[p.name for p in PAGES],
)
def test_docs_command_lines_run(page, quickstart_checkpoint, docs_cache, tmp_path):
    sandbox = check_docs.Sandbox(tmp_path, quickstart_checkpoint, cache=docs_cache)
    outcomes = check_docs.check_page(page, sandbox, seen_shapes=_SEEN_SHAPES)
    failed = [o for o in outcomes if o.status == "fail"]
    report = "\n\n".join(
        f"{page.name}:{o.command.line}: {o.command.text}\n{o.detail}" for o in failed
    )
    assert not failed, report
    assert any(o.status in ("ok", "parsed") for o in outcomes)


# ---------------------------------------------------------------------------------------
# --help as a new user reads it


def _commands():
    group = typer.main.get_command(app)
    return group, sorted(group.commands.items())


def test_every_command_and_option_has_help():
    group, commands = _commands()
    assert {"pretrain", "flow-eval", "segment-eval", "davis-eval", "visualize", "export"} <= dict(
        commands
    ).keys()
    problems = []
    for name, cmd in commands:
        if not (cmd.help or "").strip():
            problems.append(f"{name}: no summary")
        for p in cmd.params:
            if not (getattr(p, "help", None) or "").strip():
                problems.append(f"{name} {p.opts}: no help")
    assert not problems, problems


@pytest.mark.parametrize(
    "name", ["pretrain", "flow-eval", "segment-eval", "davis-eval", "visualize", "export"]
)
def test_help_renders(name):
    r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0 and "Usage:" in r.output and "Traceback" not in r.output


def test_version_and_shell_completion_are_offered():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("mcjepa ")
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert "--install-completion" in r.output and "--show-completion" in r.output
    r = runner.invoke(app, ["--show-completion", "bash"])
    assert r.exit_code == 0 and "complete" in r.output and "_MCJEPA_COMPLETE" in r.output
