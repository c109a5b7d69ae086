"""`vdial-train`: what users get wrong is one line and exit 1, never a traceback."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from vdial.train.cli import app

from .conftest import toy_recipe


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ")
    return result.output


def test_missing_recipe(tmp_path):
    out = _one_line_error(["fit", "--config", str(tmp_path / "no.yaml"), "--out", str(tmp_path)])
    assert "config file not found: " in out and "no.yaml" in out


def test_typo_in_a_recipe_names_file_key_and_valid_keys(toy, tmp_path):
    recipe = toy_recipe(toy)
    recipe["model"]["histroy_turns"] = 2
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = _one_line_error(["fit", "--config", str(path), "--out", str(tmp_path / "run")])
    assert f"{path}: unknown key 'model.histroy_turns'; valid keys of model: lm," in out
    assert "history_turns" in out


def test_mistyped_value_on_the_command_line(toy, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(toy)))
    args = ["fit", "--config", str(path), "--out", str(tmp_path / "run")]
    out = _one_line_error([*args, "--set", "optim.lr=fast"])
    assert "optim.lr: expected float, got 'fast'" in out


def test_feature_the_store_lacks(toy, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(toy, feature="dinov2/pool4x4")))
    out = _one_line_error(["fit", "--config", str(path), "--out", str(tmp_path / "run")])
    assert "no feature 'dinov2/pool4x4'" in out and "features: toy" in out


@pytest.mark.parametrize("command", ["predict", "export"])
def test_run_without_a_checkpoint(tmp_path, command):
    (tmp_path / "run").mkdir()
    args = ["predict", "--run", str(tmp_path / "run")]
    if command == "export":
        args = ["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")]
    out = _one_line_error(args)
    assert "has no checkpoint (no checkpoints/latest.json); train it first" in out


def test_help_of_every_command():
    for args in (
        ["--help"],
        ["fit", "--help"],
        ["predict", "--help"],
        ["export", "--help"],
        ["gate", "record", "--help"],
        ["gate", "check", "--help"],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_fit_and_predict_from_the_command_line(toy, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(toy, steps=3)))
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["fit", "--config", str(path), "--out", str(run), "--no-progress", "--steps", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "stages train: last ran 2 steps" in result.output
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    result = CliRunner().invoke(app, ["predict", "--run", str(run), "--split", "nope"])
    assert result.exit_code == 1 and "has no dialogs in split 'nope'" in result.output
