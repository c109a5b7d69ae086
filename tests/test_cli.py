"""The `vdial` and `vdial-train` commands: help everywhere, light imports, the whole path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vdial
from vdial.cli import app
from vdial.train.cli import app as train_app

runner = CliRunner()

COMMANDS = [
    [],
    ["synth"],
    ["manifest"],
    ["manifest", "build", "avsd"],
    ["manifest", "build", "visdial"],
    ["manifest", "build", "folder"],
    ["manifest", "show"],
    ["extract"],
    ["encoders"],
    ["cache"],
    ["cache", "info"],
    ["cache", "failures"],
    ["cache", "pool"],
    ["eval"],
    ["eval", "avsd"],
    ["eval", "compare"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vdial")
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("command", [[], ["fit"], ["predict"]], ids=lambda c: " ".join(c) or "top")
def test_train_commands_have_help(command):
    result = runner.invoke(train_app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_help_imports_nothing_heavy():
    """`vdial --help` must answer at once: the CLI modules import no torch, zarr, pyarrow, av."""
    code = (
        "import sys, vdial.cli, vdial.train.cli; "
        "print(sorted(m for m in ('torch', 'zarr', 'pyarrow', 'av', 'decord', 'timm', "
        "'transformers', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def invoke(application, args, cwd: Path):
    result = runner.invoke(application, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_whole_path_on_tiny_synthetic_data(tmp_path, monkeypatch):
    """synth -> manifest -> extract (resumable, broken video recorded) -> pool -> fit -> eval."""
    monkeypatch.chdir(tmp_path)
    invoke(app, ["synth", "--out", "data", "--size", "tiny"], tmp_path)
    # a truncated mp4: its index (the moov box, written last) is gone
    video = (tmp_path / "data" / "videos" / "shapes_00000.mp4").read_bytes()
    (tmp_path / "data" / "videos" / "broken.mp4").write_bytes(video[: len(video) // 3])
    train = json.loads((tmp_path / "data" / "avsd" / "train.json").read_text())
    train["dialogs"].append({**train["dialogs"][0], "image_id": "broken"})
    (tmp_path / "data" / "avsd" / "train.json").write_text(json.dumps(train))
    invoke(
        app,
        [
            "manifest",
            "build",
            "avsd",
            "--name",
            "tiny",
            "--videos",
            "data/videos",
            "--annotations",
            "train=data/avsd/train.json",
            "--annotations",
            "val=data/avsd/val.json",
            "--annotations",
            "test=data/avsd/test.json",
        ],
        tmp_path,
    )
    extract = [
        "extract",
        "--dataset",
        "tiny",
        "--encoder",
        "dinov2:tiny",
        "--random-init",
        "--frames",
        "4",
        "--no-progress",
    ]
    first = invoke(app, extract, tmp_path)
    assert "broken" in first and "decode" in first
    from vdial.cache import FeatureStore

    feature = FeatureStore.open("cache/tiny")["dinov2"]
    assert len(feature) == 12 and "broken" in feature.failures
    assert feature.failures["broken"]["stage"] == "decode"
    assert feature.spec["weights"] == "random:0" and feature.spec["grid"] == [4, 4]
    assert feature.spec["code_version"] == vdial.__version__ and feature.spec["frames"] == 4
    assert feature["shapes_00000"].shape == (4, 16, 32)
    before = feature.fingerprint()
    again = invoke(app, extract, tmp_path)  # resume: nothing left to do
    assert FeatureStore.open("cache/tiny")["dinov2"].fingerprint() == before
    row = next(line for line in again.splitlines() if "dinov2" in line)
    # nothing written, 12 already there, the broken one skipped as an earlier failure
    assert [c.strip() for c in row.split("│")[1:6]] == ["dinov2", "0", "12", "1", "0"]
    invoke(
        app, ["cache", "pool", "--dataset", "tiny", "--feature", "dinov2", "--grid", "2"], tmp_path
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "family: prefix-lm\n"
        "model: {frames: 4, lm: {d_model: 32, n_layers: 1, n_heads: 2}}\n"
        "optim: {batch_size: 4, warmup_steps: 2}\nstages: [{name: train, steps: 6}]\n"
        "eval_every: 3\ncheckpoint_every: 3\nlog_every: 3\n"
    )
    for visual in ("real", "zero"):
        run = f"runs/{visual}"
        invoke(
            train_app,
            [
                "fit",
                "--features",
                "cache/tiny",
                "--feature",
                "dinov2/pool2x2",
                "--config",
                recipe,
                "--out",
                run,
                "--visual",
                visual,
                "--no-progress",
            ],
            tmp_path,
        )
        invoke(train_app, ["predict", "--run", run, "--split", "test"], tmp_path)
        invoke(
            app,
            [
                "eval",
                "avsd",
                "--predictions",
                f"{run}/predictions_test.json",
                "--references",
                "data/avsd/test_multiref.json",
                "--question-types",
                "data/avsd/question_types.json",
                "--out",
                f"{run}/metrics.json",
            ],
            tmp_path,
        )
        store = json.loads((tmp_path / run / "store.json").read_text())
        assert store["tiny"]["excluded_failed_items"] == ["broken"]
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["n"] == 4 and not metrics["missing"]
    invoke(app, ["eval", "compare", "runs/real", "runs/zero", "--out", "runs/report.md"], tmp_path)
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "real" in report and "zero" in report
    assert (tmp_path / "runs" / "report_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
