"""Every recipe field has a range or a set of values, checked before anything runs
(issue 23, item 3): a table-driven test over every field."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from mcjepa_cli.config import Recipe, load_recipe
from mcjepa_cli.main import app
from mcjepa_cli.recipe_checks import leaf_keys, rules

runner = CliRunner()
KEYS = leaf_keys(Recipe)


def test_every_recipe_field_has_a_rule():
    assert sorted(KEYS) == sorted(rules())


def test_the_eval_set_names_follow_flow_eval():
    from mcjepa_cli.data.flow_eval_datasets import FLOW_DATASETS

    assert set(rules()["train.eval_sets[].name"].values) == set(FLOW_DATASETS)


def _override(key: str, bad) -> tuple[str, str]:
    """The --set text putting ``bad`` at ``key``, and the key the error must name."""
    text = yaml.safe_dump(bad, default_flow_style=True, width=10**6).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    if "[]." not in key:
        return f"{key}={text}", key
    section, field = key.split("[].")
    base = {"data.flow": "{name: synthetic", "data.images": "{name: synthetic",
            "train.eval_sets": "{name: synthetic"}[section]
    return f"{section}=[{base}, {field}: {text}}}]", f"{section}[0].{field}"


@pytest.mark.parametrize("key", KEYS)
def test_an_out_of_range_value_is_one_line_naming_the_key(key):
    bad = rules()[key].bad_example()
    override, named = _override(key, bad)
    r = runner.invoke(app, ["pretrain", "quickstart", "--set", override])
    assert r.exit_code == 2, (override, r.output)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (override, r.output)
    assert named in lines[0], (override, lines[0])
    assert "Traceback" not in r.output


@pytest.mark.parametrize("override,words", [
    ("optim.betas=[0.9, 1.0]", "optim.betas: expected a value in [0, 1], got 1.0"),
    ("optim.lr_encoder=-1e-3", "optim.lr_encoder: expected a value in [0, 10], got -0.001"),
    ("optim.weight_decay=-0.05", "optim.weight_decay"),
    ("model.flow_head.radius=-1", "model.flow_head.radius"),
    ("model.flow_head.proj_channels=0", "model.flow_head.proj_channels"),
    ("model.flow_head.decoder_channels=[0, 8]", "model.flow_head.decoder_channels"),
    ("model.encoder.drop_path_rate=5", "model.encoder.drop_path_rate"),
    ("model.expander.dims=[0]", "model.expander.dims"),
    ("loss.vc_samples=0", "loss.vc_samples"),
    ("model.flow_head.max_flow=-1", "model.flow_head.max_flow"),
    ("data.flow_batch_size=100000000", "data.flow_batch_size"),
    ("name=../outside", "name: expected a name of letters"),
    ("name=" + "x" * 300, "name: expected a name of letters"),
    ("data.augment.crop_scale=[0.9, 0.2]", "min <= max"),
    ("data.synthetic.min_layers=9", "data.synthetic.max_layers: expected an integer in [min_layers=9, 16]"),
    ("train.device=cuda:abc", "train.device"),
])
def test_the_values_the_issue_names_are_refused(override, words):
    r = runner.invoke(app, ["pretrain", "quickstart", "--set", override])
    assert r.exit_code == 2, r.output
    assert words in r.output, r.output


def test_a_recipe_file_name_becomes_a_safe_run_name(tmp_path):
    path = tmp_path / "my recipe (v2).yaml"
    path.write_text("base: quickstart\nname: ''\n")
    assert load_recipe(str(path)).name == "my_recipe__v2_"
