#!/usr/bin/env python
"""Generate docs/recipes.md from the typed recipe defaults and the comments beside each field.

Every recipe field is a dataclass field under ``mcjepa_cli.config.Recipe`` (and the dataclasses
it nests: model, loss, data, synthetic world, augmentations, sources). Type and default come
from the classes themselves; the meaning is the comment on the field's line or the comment
lines directly above it, read from the source with ``ast`` and ``tokenize``; the source (paper
or choice) comes from ``mcjepa_cli.provenance``.

Usage:
    python scripts/gen_recipe_docs.py           # rewrite docs/recipes.md
    python scripts/gen_recipe_docs.py --check   # exit 1 when docs/recipes.md is stale
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "recipes.md"
GENERATOR = "scripts/gen_recipe_docs.py"


@dataclass
class FieldDoc:
    key: str  # dotted recipe key, e.g. "model.encoder.arch"; list items as "data.flow[].name"
    type: str
    default: str
    meaning: str


@dataclass
class SectionDoc:
    key: str  # dotted prefix ("" for the top level)
    cls: type
    summary: str  # the class docstring's first paragraph
    source: str  # repository-relative file holding the class
    fields: list[FieldDoc]


# ---------------------------------------------------------------------------------------
# reading the source


def _comments(source: str) -> dict[int, str]:
    """Line number -> comment text (without ``#``) for every comment in ``source``."""
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _class_node(cls: type) -> tuple[ast.ClassDef, str, Path]:
    path = Path(inspect.getsourcefile(cls) or "")
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node, source, path
    raise LookupError(f"class {cls.__name__} not found in {path}")


def field_meanings(cls: type) -> tuple[dict[str, str], str, Path]:
    """Comments of each field of dataclass ``cls``, its docstring summary and its file.

    A field's meaning is the comment block directly above it (comment-only lines, no blank
    line in between) followed by the comment at the end of its own line(s).
    """
    node, source, path = _class_node(cls)
    comments = _comments(source)
    lines = source.splitlines()
    meanings: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: list[str] = []
        ln = stmt.lineno - 1
        while ln >= 1 and lines[ln - 1].strip().startswith("#"):
            above.insert(0, comments.get(ln, lines[ln - 1].strip().lstrip("#").strip()))
            ln -= 1
        trailing = [
            comments[n]
            for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            if n in comments and not lines[n - 1].strip().startswith("#")
        ]
        meanings[stmt.target.id] = " ".join(t for t in above + trailing if t)
    doc = ast.get_docstring(node) or ""
    summary = " ".join(doc.split("\n\n")[0].split())
    return meanings, summary, path


# ---------------------------------------------------------------------------------------
# rendering values and types


def type_name(tp: Any) -> str:
    """``int``, ``float or null``, ``list of int``, ``list of FlowSource``, ``mapping``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {type_name(arg)}"
    if dataclasses.is_dataclass(tp):
        return tp.__name__
    return getattr(tp, "__name__", str(tp))


def value_text(v: Any) -> str:
    """A value as it would be written in YAML (flow style)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v).replace("e-0", "e-").replace("e+0", "e+")
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, str):
        return (
            v
            if v and v.strip() == v and ":" not in v and v[0] not in "[{&*!|>'\"%@`#"
            else f'"{v}"'
        )
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if dataclasses.is_dataclass(v):
        base = type(v)()
        parts = [
            f"{f.name}: {value_text(getattr(v, f.name))}"
            for f in dataclasses.fields(v)
            if f.name == "name" or getattr(v, f.name) != getattr(base, f.name)
        ]
        return "{" + ", ".join(parts) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value_text(x)}" for k, x in v.items()) + "}"
    return str(v)


def _list_item_class(tp: Any) -> type | None:
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def collect(cls: type, prefix: str = "", instance: Any = None) -> list[SectionDoc]:
    """Sections for ``cls`` and every dataclass it nests, depth first, in field order."""
    instance = instance if instance is not None else cls()
    meanings, summary, path = field_meanings(cls)
    hints = typing.get_type_hints(cls)
    here: list[FieldDoc] = []
    nested: list[SectionDoc] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            nested.extend(collect(tp, f"{key}.", value))
            continue
        item = _list_item_class(tp)
        if item is not None:
            sub = collect(item, f"{key}[].", item())
            sub[0].summary = (
                f"Each entry of `{key}` (a list; default `{value_text(value)}`). " + sub[0].summary
            )
            nested.extend(sub)
        here.append(FieldDoc(key, type_name(tp), value_text(value), meanings.get(f.name, "")))
    try:
        rel = path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        rel = path.name
    section = SectionDoc(prefix.rstrip("."), cls, summary, rel, here)
    return [section, *nested]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def packaged_recipes() -> list[tuple[str, str, list[tuple[str, Any]]]]:
    """(name, header comment, [(key, value) differing from the defaults]) per packaged recipe."""
    from mcjepa_cli.config import Recipe, load_recipe

    folder = REPO / "mcjepa_cli" / "recipes"
    defaults = _flatten(Recipe())
    out = []
    for path in sorted(folder.glob("*.yaml")):
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        values = _flatten(load_recipe(str(path)))
        diff = [(k, v) for k, v in values.items() if k != "name" and defaults.get(k) != v]
        out.append((path.stem, " ".join(header), diff))
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf field of a recipe (lists of sources stay whole)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_flatten(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


# ---------------------------------------------------------------------------------------
# provenance (paper or choice)


def value_keys(key: str, value: Any) -> list[str]:
    """Provenance keys of a packaged recipe's value: ``key`` itself, or for a list of sources
    ``key[].field`` for every field its table shows (``name`` and the non-default ones)."""
    if not (isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value)):
        return [key]
    shown: list[str] = []
    for item in value:
        base = type(item)()
        for f in dataclasses.fields(item):
            if f.name not in shown and (
                f.name == "name" or getattr(item, f.name) != getattr(base, f.name)
            ):
                shown.append(f.name)
    return [f"{key}[].{name}" for name in shown]


def _source(entry: tuple[str, str] | None) -> str:
    if entry is None:
        return "**unclassified**"
    kind, source = entry
    return f"*{kind}*, {_text(source)}"


def _value_source(table: dict[str, tuple[str, str]], key: str, value: Any) -> str:
    keys = value_keys(key, value)
    if keys == [key]:
        return _source(table.get(key))
    return "; ".join(f"`{k.rsplit('.', 1)[1]}`: {_source(table.get(k))}" for k in keys)


def _text(text: str) -> str:
    """Source text for Markdown: no raw HTML, no column breaks, RST ``literals`` as `code`."""
    parts = text.replace("``", "`").split("`")  # odd parts are inside `code`
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    text = "`".join(parts).replace("|", "\\|")
    return text or "—"


def render() -> str:
    """The full text of docs/recipes.md."""
    sys.path.insert(0, str(REPO))
    from mcjepa_cli.config import Recipe
    from mcjepa_cli.provenance import PROVENANCE, RECIPE_PROVENANCE

    sections = collect(Recipe)
    keys = [f.key for s in sections for f in s.fields]
    n_paper = sum(PROVENANCE.get(k, ("",))[0] == "paper" for k in keys)
    out = [
        "# Recipe reference",
        "",
        f"<!-- GENERATED by {GENERATOR} from the typed defaults and their source comments; "
        "do not edit by hand. Regenerate with: python scripts/gen_recipe_docs.py -->",
        "",
        "A recipe is a YAML file that lists only what differs from the typed defaults below, "
        "optionally on top of another recipe (`base: <name or path>`). Any field can be overridden "
        "on the command line with `--set <key>=<value>` (the value is read as YAML: "
        "`--set data.flow_size=[256,320]`, `--set model.encoder.init=null`). Unknown keys and "
        "values of the wrong type stop the command with one line that names the key. The "
        "resolved recipe is written to every run directory (`recipe.yaml`) and stored in every "
        "checkpoint.",
        "",
        "```bash",
        "mcjepa pretrain quickstart --set optim.lr_encoder=5e-4 --set data.flow_batch_size=4",
        "```",
        "",
        "Types: `null` is YAML's empty value; `list of X` is a YAML list; a key written "
        "`section.list[].field` is a field of each entry of that list.",
        "",
        "## Defaults",
        "",
        "Defaults follow the paper (Bardes, Ponce & LeCun 2023) where it publishes a value; other "
        "values are choices, marked with their source. The *source* column of every table says "
        "which: *paper* with where the paper gives it, or *choice* with where the value comes "
        "from: a method it follows (ARFlow, UFlow, PWC-Net, VICReg, ConvNeXt/timm, PyTorch), a "
        "measurement of this toolkit with the page that has it, `not published` where the paper "
        "is silent, or `toolkit` for how a run is executed, logged and stored. The paper publishes "
        "the architecture, VICReg's weights, expander and augmentations, the optimiser, learning "
        "rates, batch sizes, schedule, dataset list and the variance-covariance ablation; it does "
        "not publish the flow-loss weights, the SSIM share, the smoothness constants, the "
        "occlusion schedule, the dataset sampling ratios, the flow crop size or the decoder "
        "widths. "
        f"Of the {len(keys)} fields below, {n_paper} take the paper's value and "
        f"{len(keys) - n_paper} are choices; the sources are kept in `mcjepa_cli/provenance.py`.",
        "",
        "## Packaged recipes",
        "",
        "Reachable by name (`mcjepa pretrain quickstart`) or by path (`recipes/quickstart.yaml`). "
        "Each lists the resolved values that differ from the defaults (its `base` included).",
        "",
    ]
    for name, header, diff in packaged_recipes():
        out += [f"### `{name}`", "", _text(header), ""]
        table = RECIPE_PROVENANCE.get(name)
        if table is None:
            out += ["| key | value |", "|---|---|"]
            out += [f"| `{k}` | `{_cell(value_text(v))}` |" for k, v in diff]
        else:
            out += [
                "Source of each value below; the values equal to the defaults have the defaults' "
                "source ([Fields](#fields)).",
                "",
                "| key | value | source |",
                "|---|---|---|",
            ]
            out += [
                f"| `{k}` | `{_cell(value_text(v))}` | {_value_source(table, k, v)} |"
                for k, v in diff
            ]
        out.append("")
    out += ["## Fields", ""]
    out += [
        "Sections: " + ", ".join(f"[`{s.key or 'top level'}`](#{_anchor(s)})" for s in sections),
        "",
    ]
    for s in sections:
        title = f"`{s.key}`" if s.key else "Top level"
        summary = _text(s.summary) + " " if s.summary else ""
        out += [f"### {title}", "", f"{summary}(`{s.cls.__name__}` in `{s.source}`)", ""]
        out += ["| key | type | default | meaning | source |", "|---|---|---|---|---|"]
        for f in s.fields:
            out.append(
                f"| `{f.key}` | {_cell(f.type)} | `{_cell(f.default)}` | {_text(f.meaning)} "
                f"| {_source(PROVENANCE.get(f.key))} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _anchor(s: SectionDoc) -> str:
    """GitHub's heading anchor for a section title."""
    text = s.key if s.key else "top level"
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/recipes.md is stale")
    parser.add_argument(
        "--output", type=Path, default=DOC, help="where to write (default docs/recipes.md)"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run python {GENERATOR}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    from mcjepa_cli.io.atomic import atomic_write_text

    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
