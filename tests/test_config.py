"""Recipes: typed defaults <- YAML <- --set, with errors that name the key."""

from __future__ import annotations

import pytest

from mcjepa_cli.config import available_recipes, dump_recipe, load_recipe, recipe_from_dict, to_dict
from mcjepa_cli.errors import UserError


def test_packaged_recipes_load():
    assert {"quickstart", "mcjepa_convnext_tiny", "mjepa_flow_only"} <= set(available_recipes())
    q = load_recipe("quickstart")
    assert q.model.encoder.arch == "convnext_atto"
    assert q.schedule.unit == "steps"
    paper = load_recipe("mcjepa_convnext_tiny")
    assert paper.model.encoder.arch == "convnext_tiny"
    assert paper.data.image_batch_size == 384 and paper.data.flow_batch_size == 8
    assert (paper.optim.lr_encoder, paper.optim.lr_flow_head) == (3e-4, 1e-4)
    assert (paper.schedule.total, paper.schedule.warmup, paper.schedule.flow_start) == (100, 10, 10)
    assert paper.model.expander.dims == [8192, 8192, 8192]
    assert {s.name for s in paper.data.flow} == {"chairs", "things", "sintel", "kitti-2015", "kitti-2012", "hd1k"}
    flow_only = load_recipe("mjepa_flow_only")
    assert flow_only.model.content is False and flow_only.data.images == []
    assert flow_only.model.encoder.arch == "convnext_tiny"  # inherited through base:


def test_set_overrides_are_typed():
    r = load_recipe("quickstart", ["optim.lr_encoder=2e-3", "schedule.total=5", "train.seed=7",
                                   "model.flow_head.strides=[32,16,8]"])
    assert r.optim.lr_encoder == pytest.approx(2e-3)
    assert r.schedule.total == 5 and r.train.seed == 7
    assert r.model.flow_head.strides == [32, 16, 8]


@pytest.mark.parametrize(
    "override, culprit, hint",
    [
        ("optim.lr_encodr=1", "optim.lr_encodr", "optim.lr_encoder"),
        ("optimm.lr_encoder=1", "optimm", "optim"),
        ("train.seed=abc", "train.seed", "expected int"),
        ("data.flow_batch_size=1.5", "data.flow_batch_size", "expected int"),
        ("train.channels_last=3", "train.channels_last", "expected bool"),
        ("optim.lr_encoder", "--set optim.lr_encoder", "section.key=value"),
    ],
)
def test_bad_override_names_key_and_nearest(override, culprit, hint):
    with pytest.raises(UserError) as e:
        load_recipe("quickstart", [override])
    msg = str(e.value)
    assert culprit in msg and hint in msg
    assert "\n" not in msg


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  encoder:\n    archh: convnext_atto\n")
    with pytest.raises(UserError) as e:
        load_recipe(str(p))
    assert "model.encoder.archh" in str(e.value) and "model.encoder.arch" in str(e.value)
    assert str(p) in str(e.value)


def test_wrong_type_in_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("schedule:\n  total: many\n")
    with pytest.raises(UserError) as e:
        load_recipe(str(p))
    assert "schedule.total" in str(e.value) and "expected float" in str(e.value)


def test_yaml_syntax_error_and_missing_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(UserError) as e:
        load_recipe(str(p))
    assert "YAML error" in str(e.value) and "line" in str(e.value)
    with pytest.raises(UserError) as e:
        load_recipe(str(tmp_path / "nope.yaml"))
    assert "not found" in str(e.value)
    with pytest.raises(UserError) as e:
        load_recipe("no_such_recipe_name")
    assert "quickstart" in str(e.value)  # lists the packaged recipes


def test_python_tags_are_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "marker"
    p.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError):
        load_recipe(str(p))
    assert not marker.exists()


def test_base_chain_and_roundtrip(tmp_path):
    p = tmp_path / "child.yaml"
    p.write_text("base: quickstart\nname: child\noptim:\n  lr_encoder: 5.0e-4\n")
    r = load_recipe(str(p))
    assert r.name == "child" and r.optim.lr_encoder == 5e-4
    assert r.model.encoder.arch == "convnext_atto"  # from the base
    again = recipe_from_dict(to_dict(r))
    assert again == r
    assert "lr_encoder: 0.0005" in dump_recipe(r)


def test_cross_field_validation(tmp_path):
    with pytest.raises(UserError) as e:
        load_recipe("quickstart", ["data.flow_size=[100,160]"])
    assert "data.flow_size" in str(e.value)
    with pytest.raises(UserError) as e:
        load_recipe("quickstart", ["data.on_error=ignore"])
    assert "data.on_error" in str(e.value)
