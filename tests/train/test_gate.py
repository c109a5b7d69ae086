"""The re-evaluation gate: the committed fixture re-evaluates exactly; changes are named."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vdial.train.cli import app
from vdial.train.gate import GATE_WEIGHTS, GateError, check_gate, record_gate
from vdial.train.loop import fit

from .conftest import build_colour_dataset, toy_config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gate"


def test_committed_fixture_reevaluates_exactly():
    result = check_gate(FIXTURE)
    expected = json.loads((FIXTURE / "expected" / "metrics.json").read_text())
    assert result.answers == 20 and result.dataset == "avsd"
    assert result.metrics == expected  # every value, bit for bit
    assert expected["scorer"] == "fast-inprocess"
    # the fixture's model answers from the features: 0.45 exact match, above the
    # zeroed-visual ablation's 0.25 on these 20 dialogs
    assert expected["overall"]["exact_match"] >= 0.4


def test_fixture_is_small_and_has_no_absolute_paths():
    files = [p for p in FIXTURE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2 * 2**20
    for path in files:
        data = path.read_bytes()
        assert b"/work/" not in data and b"/tmp/" not in data, path


@pytest.fixture
def gate_copy(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "gate"))


def test_changing_one_weight_fails_the_gate(gate_copy):
    checkpoint = gate_copy / "run" / "checkpoints" / GATE_WEIGHTS
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(checkpoint)
    state["lm.transformer.ln_f.bias"][0] += 5.0  # one scalar of 168k
    save_file(state, checkpoint, metadata=metadata)
    with pytest.raises(GateError) as err:
        check_gate(gate_copy)
    message = str(err.value)
    assert "inputs changed since the gate was recorded: checkpoint" in message
    assert "predictions: " in message and "answers differ" in message
    assert "metrics: " in message
    check_gate(FIXTURE)  # the committed fixture is untouched


def test_comparison_is_exact_to_the_last_bit(gate_copy):
    path = gate_copy / "expected" / "metrics.json"
    metrics = json.loads(path.read_text())
    bleu = metrics["overall"]["Bleu_1"]
    metrics["overall"]["Bleu_1"] = math.nextafter(bleu, 2.0)  # one ulp up
    path.write_text(json.dumps(metrics))
    with pytest.raises(GateError, match=r"metrics: 1 value\(s\) differ \(overall.Bleu_1 expected"):
        check_gate(gate_copy)


def test_changed_expected_answer_is_named(gate_copy):
    path = gate_copy / "expected" / "predictions.json"
    payload = json.loads(path.read_text())
    dialog = payload["dialogs"][3]
    dialog["dialog"][-1]["answer"] = "something else ."
    path.write_text(json.dumps(payload))
    with pytest.raises(GateError, match=rf"1 of 20 answers differ \({dialog['image_id']}: "):
        check_gate(gate_copy)


def _references(toy: dict, path: Path) -> Path:
    dialogs = [
        {
            "image_id": vid,
            "dialog": [
                {"question": "is it moving ?", "answer": "yes it is ."},
                {"question": "what colour is it ?", "answer": [f"it is {colour} ."]},
            ],
        }
        for vid, colour in toy["colour_of"].items()
        if int(vid[1:]) >= 24  # the test videos
    ]
    path.write_text(json.dumps({"dialogs": dialogs}))
    return path


def test_record_then_check_from_anywhere(tmp_path):
    toy = build_colour_dataset(tmp_path / "data")
    run = tmp_path / "run"
    fit(toy_config(toy, steps=10, checkpoint_every=10), run, progress=False)
    refs = _references(toy, tmp_path / "refs.json")
    result = record_gate(run, split="test", references=refs, dialogs=5)
    assert result.path == run / "gate" and result.answers == 5
    assert result.metrics["n"] == 5
    meta = json.loads((run / "gate" / "gate.json").read_text())
    assert meta["decoding"]["search"] == "greedy" and meta["dialogs"] == 5
    assert set(meta["inputs"]) >= {"checkpoint", "features:toy", "references", "manifest"}
    # relative paths only: the gate moves with its directory, away from the data it came from
    moved = Path(shutil.move(run / "gate", tmp_path / "elsewhere"))
    shutil.rmtree(tmp_path / "data")
    assert check_gate(moved).metrics == result.metrics
    runner = CliRunner()
    ok = runner.invoke(app, ["gate", "check", str(moved)])
    assert ok.exit_code == 0 and "ok" in ok.output and "5 answers and metrics" in ok.output
    (moved / "references.json").write_text((moved / "references.json").read_text() + " ")
    bad = runner.invoke(app, ["gate", "check", str(moved)])
    assert bad.exit_code == 1 and "inputs changed" in bad.output and "references" in bad.output


def test_record_refuses_a_directory_that_is_not_a_gate(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no gate"):
        record_gate(tmp_path / "run", tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_check_without_a_gate_says_how_to_record_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="vdial-train gate record"):
        check_gate(tmp_path)


def test_gate_does_not_depend_on_java(monkeypatch):
    """The fast scorer's note on METEOR says whether Java exists; the gate ignores it."""
    from vdial.evaluate import coco

    monkeypatch.setattr(coco, "java_missing", lambda: "java not found on PATH")
    assert check_gate(FIXTURE).metrics["overall"]["METEOR"] is None
