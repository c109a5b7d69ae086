"""`vdial eval avsd` and `vdial eval compare` through typer's test runner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vdial.evaluate.avsd import evaluate_avsd, load_references
from vdial.evaluate.cli import app

RUNNER = CliRunner(env={"COLUMNS": "200"})
REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "avsd"


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    refs = {
        "type": "scene_aware_dialog",
        "version": "0.1",
        "dialogs": [
            {
                "image_id": f"v{i}",
                "dialog": [
                    {"question": "how many shapes are there ?", "answer": "two ."},
                    {"question": "what colour is it ?", "answer": [f"it is red {i} .", "red ."]},
                ],
            }
            for i in range(4)
        ],
    }
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    run = tmp_path / "run"
    run.mkdir()
    predictions = {"v0": "It is red 0.", "v1": "red", "v2": "it is blue ."}
    (run / "predictions.json").write_text(json.dumps(predictions))
    types = {f"v{i}": ["count", "colour" if i < 2 else "shape"] for i in range(4)}
    (tmp_path / "types.json").write_text(json.dumps(types))
    return run / "predictions.json", tmp_path / "refs.json", tmp_path / "types.json"


def test_eval_avsd_writes_metrics_beside_predictions(tmp_path: Path) -> None:
    predictions, refs, types = _files(tmp_path)
    args = ["avsd", "--predictions", str(predictions), "--references", str(refs)]
    result = RUNNER.invoke(app, [*args, "--question-types", str(types)])
    assert result.exit_code == 0, result.output
    written = json.loads((predictions.parent / "metrics.json").read_text())
    assert written["references"] == str(refs)
    assert written["predictions"] == str(predictions)
    assert written["references_sha256"] == hashlib.sha256(refs.read_bytes()).hexdigest()
    assert written["missing"] == ["v3"]
    assert written["overall"]["exact_match"] == pytest.approx(0.5)
    assert {k: v["n"] for k, v in written["by_type"].items()} == {"colour": 2, "shape": 2}
    assert written["by_type"]["colour"]["exact_match"] == 1.0
    direct = evaluate_avsd(json.loads(predictions.read_text()), load_references(refs))
    assert written["overall"] == pytest.approx(direct["overall"])
    lines = result.output.splitlines()
    overall = next(line for line in lines if "overall" in line)
    assert f"{direct['overall']['Bleu_1']:.4f}" in overall and " 4 " in overall
    assert any("shape" in line for line in lines)
    assert "1 dialog(s) had no prediction" in result.output


def test_eval_avsd_out_option(tmp_path: Path) -> None:
    predictions, refs, _ = _files(tmp_path)
    out = tmp_path / "elsewhere" / "m.json"
    args = ["avsd", "--predictions", str(predictions), "--references", str(refs), "--out", str(out)]
    assert RUNNER.invoke(app, args).exit_code == 0
    assert json.loads(out.read_text())["by_type"] == {}
    assert not (predictions.parent / "metrics.json").exists()


def test_eval_avsd_error_exits_1_with_message(tmp_path: Path) -> None:
    predictions, refs, _ = _files(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"dialog_id": "v0", "turn": 0, "answer": "x"}]))
    result = RUNNER.invoke(app, ["avsd", "--predictions", str(bad), "--references", str(refs)])
    assert result.exit_code == 1
    assert (
        "error:" in result.stderr and "predicted turn 0 is not the scored turn 1" in result.stderr
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)
    dstc7 = REAL / "test_set4DSTC7-AVSD.json"
    if dstc7.is_file():
        args = ["avsd", "--predictions", str(predictions), "--references", str(dstc7)]
        result = RUNNER.invoke(app, args)
        assert result.exit_code == 1
        assert "not a reference file" in result.stderr


def test_eval_compare(tmp_path: Path) -> None:
    predictions, refs, types = _files(tmp_path)
    args = ["avsd", "--predictions", str(predictions), "--references", str(refs)]
    assert RUNNER.invoke(app, [*args, "--question-types", str(types)]).exit_code == 0
    run = predictions.parent
    out = tmp_path / "report" / "report.md"
    result = RUNNER.invoke(app, ["compare", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['overall']['ROUGE_L']:.4f}" in out.read_text()
    assert f"{metrics['overall']['ROUGE_L']:.4f}" in result.output
    assert (tmp_path / "report" / "report_loss.png").is_file()

    result = RUNNER.invoke(app, ["compare", str(run), str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1
    assert f"{tmp_path}: no metrics.json" in result.stderr


def test_help_texts() -> None:
    result = RUNNER.invoke(app, ["--help"])
    assert result.exit_code == 0 and "avsd" in result.output and "compare" in result.output
    avsd_help = RUNNER.invoke(app, ["avsd", "--help"]).output
    for option in ("--predictions", "--references", "--question-types", "--out"):
        assert option in avsd_help
    assert "per-type breakdown" in avsd_help
    assert "<stem>_loss.png" in RUNNER.invoke(app, ["compare", "--help"]).output
