"""Recipes: the run-level block, the family's `model:` block, stages, and the command line."""

from __future__ import annotations

import pytest
import yaml

from vdial.config import ConfigError
from vdial.train.config import load_recipe, model_config, read_run_config, save_recipe
from vdial.train.lm import LMConfig


def _write(tmp_path, recipe: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


BASE = {
    "family": "prefix-lm",
    "inputs": {"visual": "dinov2/pool4x4"},
    "model": {"frames": 2, "lm": {"d_model": 64}},
    "stages": [{"name": "a", "steps": 10}, {"name": "b", "steps": 5, "optim": {"lr": 1e-4}}],
}


def test_recipe_resolves_with_defaults_filled_in(tmp_path):
    config = load_recipe(_write(tmp_path, BASE), features="cache/avsd")
    assert list(config.datasets) == ["avsd"] and config.datasets["avsd"].features == "cache/avsd"
    assert config.inputs == {"visual": ("dinov2/pool4x4",)}
    cfg = model_config(config)
    assert cfg.frames == 2 and cfg.lm == LMConfig(d_model=64) and cfg.history_turns == 3
    assert config.model["max_answer_tokens"] == 20  # every default recorded in the run
    a, b = config.stage_list()
    assert config.stage_optim(a).lr == 1e-3 and config.stage_optim(b).lr == 1e-4
    assert str(config.manifest_dir("avsd")) == "manifests/avsd"
    save_recipe(config, tmp_path / "saved.yaml")
    assert read_run_config(tmp_path / "saved.yaml") == config


def test_command_line_overrides(tmp_path):
    config = load_recipe(
        _write(tmp_path, BASE),
        features="cache/x",
        manifest="m/x",
        feature="clip/pool",
        assignments=("model.lm.n_layers=1", "optim.batch_size=8", "model.use_caption=false"),
        steps=3,
        seed=7,
    )
    assert config.inputs["visual"] == ("clip/pool",) and config.datasets["x"].manifest == "m/x"
    assert model_config(config).lm.n_layers == 1 and not model_config(config).use_caption
    assert config.optim.batch_size == 8 and config.seed == 7
    assert [s.steps for s in config.stage_list()] == [3, 3]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model": {"frame": 2}},
            "recipe.yaml: unknown key 'model.frame'; valid keys of model: lm, visual_input, frames",
        ),
        ({"model": {"lm": {"arch": "bert"}}}, "model.lm.arch: 'bert' is not one of"),
        ({"model": {"frames": "two"}}, "recipe.yaml: model.frames: expected int, got 'two'"),
        ({"optim": {"lrr": 1}}, "unknown key 'optim.lrr'; valid keys of optim: optimizer, lr"),
        ({"stages": [{"name": "a"}]}, "recipe.yaml: stages[0]: missing required key(s) steps"),
        (
            {"stages": [{"name": "a", "steps": 1, "optim": {"warmup": 3}}]},
            "recipe: unknown key 'stages.a.optim.warmup'",
        ),
        ({"family": "vgd"}, "recipe.yaml: family: unknown model family 'vgd'; registered: "),
        ({"inputs": {}}, "the prefix-lm family needs role(s) ['visual'] mapped"),
        ({"inputs": {"visual": "a", "audio": "b"}}, "unknown role(s) ['audio']"),
        ({"eval_evry": 3}, "unknown key 'eval_evry'; valid keys: family, datasets, inputs"),
    ],
)
def test_a_wrong_recipe_is_one_line_naming_the_file_and_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, {**BASE, **change}), features="cache/avsd")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stage_datasets_must_exist_and_names_be_unique(tmp_path):
    two = {**BASE, "stages": [{"name": "a", "steps": 1}, {"name": "a", "steps": 1}]}
    with pytest.raises(ConfigError, match="stage names must be unique"):
        load_recipe(_write(tmp_path, two), features="cache/avsd")
    other = {**BASE, "stages": [{"name": "a", "steps": 1, "datasets": {"visdial": 1.0}}]}
    with pytest.raises(ConfigError, match=r"unknown dataset\(s\) \['visdial'\]"):
        load_recipe(_write(tmp_path, other), features="cache/avsd")
    with pytest.raises(ConfigError, match="--set .model.frames.: expected KEY=VALUE"):
        load_recipe(_write(tmp_path, BASE), features="c/a", assignments=("model.frames",))
