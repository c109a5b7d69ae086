"""`vdial synth` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from vdial.synth.cli import synth

app = typer.Typer()
app.command()(synth)


def test_cli_writes_the_dataset_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["--out", str(out), "--size", "tiny", "--seed", "3", "--videos", "2", "--images", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "AVSD videos" in result.output and "VisDial images" in result.output
    assert str(out / "synth.json") in result.output.replace("\n", "")
    train = json.loads((out / "avsd" / "train.json").read_text())
    assert len(train["dialogs"]) == 2
    assert len(list((out / "videos").glob("*.mp4"))) == 2 + 2 + 4
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 1
    truth = json.loads((out / "synth.json").read_text())
    assert truth["seed"] == 3 and truth["params"]["avsd_train"] == 2


def test_cli_rejects_unknown_size_and_zero_counts(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--out", str(tmp_path), "--size", "huge"])
    assert result.exit_code == 2 and "tiny" in result.output
    result = runner.invoke(app, ["--out", str(tmp_path), "--videos", "0"])
    assert result.exit_code == 2 and "at least 1" in result.output
    assert not (tmp_path / "avsd").exists()


def test_cli_module_imports_no_heavy_modules() -> None:
    code = (
        "import sys, vdial.synth.cli; "
        "heavy = {'numpy', 'av', 'PIL', 'torch', 'rich'} & {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
