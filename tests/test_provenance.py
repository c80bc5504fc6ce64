"""Every recipe default, and every value of the paper recipe, is marked as the paper's (with where)
or as a choice (with its source), and no stale entry survives a renamed field.

docs/recipes.md shows these marks; tests/test_docs.py checks that the page is regenerated.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from mcjepa_cli.config import Recipe, load_recipe
from mcjepa_cli.provenance import KINDS, PROVENANCE, RECIPE_PROVENANCE

REPO = Path(__file__).resolve().parents[1]


def _generator():
    name = "gen_recipe_docs"
    if name not in sys.modules:  # tests/test_docs.py loads the same module
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being built
        spec.loader.exec_module(module)
    return sys.modules[name]


gen = _generator()


def _field_keys() -> list[str]:
    """Every recipe field as docs/recipes.md lists it."""
    return [f.key for s in gen.collect(Recipe) for f in s.fields]


def _bad_entries(table: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {
        k: v
        for k, v in table.items()
        if not (isinstance(v, tuple) and len(v) == 2 and v[0] in KINDS and v[1].strip())
    }


def test_every_field_has_a_provenance():
    keys = _field_keys()
    missing = [k for k in keys if k not in PROVENANCE]
    assert not missing, f"classify as paper or choice in mcjepa_cli/provenance.py: {missing}"
    assert not _bad_entries(PROVENANCE)


def test_no_stale_provenance_entries():
    stale = sorted(set(PROVENANCE) - set(_field_keys()))
    assert not stale, f"entries for fields that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted(RECIPE_PROVENANCE))
def test_packaged_recipe_values_have_a_provenance(name):
    """Each value that differs from the defaults has its own entry; no entry is stale."""
    table = RECIPE_PROVENANCE[name]
    defaults = gen._flatten(Recipe())
    values = gen._flatten(load_recipe(name))
    needed = [
        key
        for k, v in values.items()
        if k != "name" and defaults.get(k) != v
        for key in gen.value_keys(k, v)
    ]
    missing = [k for k in needed if k not in table]
    assert not missing, f"{name}: classify in RECIPE_PROVENANCE: {missing}"
    assert not sorted(set(table) - set(needed)), f"{name}: stale entries"
    assert not _bad_entries(table)


def test_unpublished_values_are_not_marked_paper():
    """What the paper does not publish (DESIGN.md section 6) is never marked as the paper's."""
    unpublished = [
        "loss.flow_weight",
        "loss.photometric",
        "loss.photo_l1",
        "loss.photo_ssim",
        "loss.smoothness",
        "loss.smoothness_edge",
        "loss.feature_regression",
        "loss.cycle",
        "schedule.occlusion_start",
        "schedule.ssim_start",
        "data.flow[].repeat",
        "data.flow_size",
        "model.flow_head.decoder_channels",
    ]
    marked = [k for k in unpublished if PROVENANCE.get(k, ("choice",))[0] == "paper"]
    paper_recipe = RECIPE_PROVENANCE["mcjepa_convnext_tiny"]
    marked += [
        f"mcjepa_convnext_tiny: {k}"
        for k in ("data.flow[].repeat", "data.flow_size", "model.flow_head.decoder_channels")
        if paper_recipe.get(k, ("choice",))[0] == "paper"
    ]
    assert not marked


def test_recipe_reference_shows_the_sources():
    text = gen.render()
    assert "**unclassified**" not in text
    assert "## Defaults" in text
    rows = [line for line in text.splitlines() if re.match(r"\| `[^`]+` \| ", line)]
    field_rows = [r for r in rows if r.count(" | ") >= 4]  # key, type, default, meaning, source
    assert len(field_rows) == len(_field_keys())
    assert all(re.search(r"\| \*(paper|choice)\*, \S", r) for r in field_rows)


def test_no_claim_that_every_default_is_the_papers():
    """The docs and docstrings never say the defaults (or the loss weights) are all the paper's."""
    claims = re.compile(
        r"defaults are the paper|paper's (loss weights|defaults|values|setup\) unless)"
        r"|paper defaults",
        re.IGNORECASE,
    )
    files = [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "mcjepa_cli").rglob("*.py"),
    ]
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if claims.search(line)
    ]
    assert not found
