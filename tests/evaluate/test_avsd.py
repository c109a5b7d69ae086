"""AVSD reference/prediction loading and last-turn metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from vdial.evaluate.avsd import (
    EvaluationError,
    Reference,
    evaluate_avsd,
    load_predictions,
    load_question_types,
    load_references,
)
from vdial.evaluate.text import normalize

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "avsd"
MULTIREF = REAL / "test_set4DSTC10-AVSD_multiref+reason.json"


def _real(name: str) -> Path:
    path = REAL / name
    if not path.is_file():
        pytest.skip("real AVSD data not available")
    return path


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _avsd(dialogs: dict[str, list[tuple[str, Any]]]) -> dict[str, Any]:
    """An AVSD file (DSTC7 keys) from {image_id: [(question, answer), ...]}."""
    return {
        "type": "scene_aware_dialog",
        "version": "0.1",
        "dialogs": [
            {
                "image_id": k,
                "caption": "c",
                "summary": "s",
                "dialog": [{"question": q, "answer": a} for q, a in turns],
            }
            for k, turns in dialogs.items()
        ],
    }


def _refs(**answers: list[str]) -> dict[str, Reference]:
    return {
        k: Reference(dialog_id=k, turn=0, question="q ?", answers=tuple(v))
        for k, v in answers.items()
    }


# --- references -------------------------------------------------------------------------


def test_real_multiref_references() -> None:
    refs = load_references(_real(MULTIREF.name))
    assert len(refs) == 1804
    assert all(len(r.answers) == 6 for r in refs.values())
    cgrum = refs["CGRUM"]
    assert cgrum.turn == 7
    assert cgrum.question == "can you see what he is watching ?"
    assert cgrum.answers[0] == "a little bit , but i cant tell what it is"
    assert cgrum.answers[5] == "no i can 't tell what kind of show that is ."


@pytest.mark.parametrize(
    ("name", "location", "more"),
    [
        ("test_set4DSTC7-AVSD.json", "dialogs[0].dialog[0] (VC5RZ)", "1709 more"),
        ("test_set4DSTC10-AVSD.json", "dialogs[0].dialog[7] (CGRUM)", "1803 more"),
    ],
)
def test_real_input_files_are_not_references(name: str, location: str, more: str) -> None:
    with pytest.raises(EvaluationError) as err:
        load_references(_real(name))
    message = str(err.value)
    assert name in message and location in message and more in message
    assert "__UNDISCLOSED__" in message and "not a reference file" in message


def test_single_reference_format(tmp_path: Path) -> None:
    data = _avsd({"v1": [("q0 ?", "a0 ."), ("q1 ?", "a1 .")], "v2": [("only ?", "yes .")]})
    refs = load_references(_write(tmp_path / "val.json", data))
    assert refs == {
        "v1": Reference(dialog_id="v1", turn=1, question="q1 ?", answers=("a1 .",)),
        "v2": Reference(dialog_id="v2", turn=0, question="only ?", answers=("yes .",)),
    }


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"dialogs": [{"dialog": [{"question": "q", "answer": "a"}]}]},
            "dialogs[0]: missing 'image_id'",
        ),
        (_avsd({"v": [("q", [])]}), "dialogs[0].dialog[0].answer (v): empty reference list"),
        (_avsd({"v": [("q", 3)]}), "dialogs[0].dialog[0].answer: expected str, got 3"),
        (_avsd({"v": [("q", ["a", None])]}), "dialogs[0].dialog[0].answer[1]: expected str"),
        (_avsd({"v": []}), "dialogs[0] (v): the dialog has no turns"),
        (_avsd({}), "the file has no dialogs"),
        ({"data": []}, "top-level 'dialogs' list"),
    ],
)
def test_malformed_references(tmp_path: Path, data: Any, fragment: str) -> None:
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(EvaluationError, match="bad.json") as err:
        load_references(path)
    assert fragment in str(err.value)


def test_duplicate_and_unreadable_reference_files(tmp_path: Path) -> None:
    data = _avsd({"v": [("q", "a")]})
    data["dialogs"].append(data["dialogs"][0])
    with pytest.raises(EvaluationError, match=r"dialogs\[1\]: duplicate image_id 'v'"):
        load_references(_write(tmp_path / "dup.json", data))
    (tmp_path / "broken.json").write_text('{"dialogs": [\n  {,]}')
    with pytest.raises(EvaluationError, match=r"broken.json: invalid JSON at line 2, column 4"):
        load_references(tmp_path / "broken.json")
    with pytest.raises(EvaluationError, match="absent.json: file not found"):
        load_references(tmp_path / "absent.json")


# --- predictions ------------------------------------------------------------------------


def test_filled_in_real_test_file_scores_perfectly(tmp_path: Path) -> None:
    refs = load_references(_real(MULTIREF.name))
    test = json.loads(_real("test_set4DSTC10-AVSD.json").read_text())
    with pytest.raises(EvaluationError, match=r"dialogs\[0\]\.dialog\[7\] \(CGRUM\).*still"):
        load_predictions(_write(tmp_path / "unfilled.json", test))
    for dialog in test["dialogs"]:
        dialog["dialog"][-1]["answer"] = refs[dialog["image_id"]].answers[3]
    predictions = load_predictions(_write(tmp_path / "filled.json", test), references=refs)
    assert len(predictions) == 1804
    assert predictions["CGRUM"] == "yes he appears to be watching the news ."
    # Scoring all 1804 dialogs takes seconds in pycocoevalcap; a slice checks the same path.
    subset = sorted(refs)[:300]
    result = evaluate_avsd({k: predictions[k] for k in subset}, {k: refs[k] for k in subset})
    assert result["n"] == 300 and result["missing"] == []
    assert result["overall"]["exact_match"] == 1.0
    assert result["overall"]["ROUGE_L"] == pytest.approx(1.0)
    for n in range(1, 5):
        assert result["overall"][f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)


def test_filled_in_file_with_wrong_last_turn(tmp_path: Path) -> None:
    refs = load_references(_write(tmp_path / "ref.json", _avsd({"v": [("q", "a"), ("q", "b")]})))
    path = _write(tmp_path / "pred.json", _avsd({"v": [("q", "a")]}))
    with pytest.raises(EvaluationError, match=r"pred.json: dialogs\[0\] \(v\): predicted turn 0"):
        load_predictions(path, references=refs)
    assert load_predictions(path) == {"v": "a"}


def test_flat_list_keeps_last_turn_and_checks_it(tmp_path: Path) -> None:
    rows = [
        {"dialog_id": "a", "turn": 0, "answer": "first"},
        {"dialog_id": "a", "turn": 2, "answer": "last"},
        {"dialog_id": "a", "turn": 1, "answer": "middle"},
        {"dialog_id": "b", "turn": 0, "answer": "only"},
    ]
    path = _write(tmp_path / "p.json", rows)
    assert load_predictions(path) == {"a": "last", "b": "only"}
    refs = {
        "a": Reference(dialog_id="a", turn=2, question="q", answers=("x",)),
        "b": Reference(dialog_id="b", turn=3, question="q", answers=("x",)),
    }
    with pytest.raises(EvaluationError, match=r"p.json: \[3\] \(b\): predicted turn 0 is not the"):
        load_predictions(path, references=refs)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([{"dialog_id": "a", "answer": "x"}], "[0]: missing 'turn'"),
        ([{"dialog_id": "a", "turn": True, "answer": "x"}], "[0].turn: expected int, got True"),
        ([{"dialog_id": 5, "turn": 0, "answer": "x"}], "[0].dialog_id: expected str"),
        ([{"dialog_id": "a", "turn": 0, "answer": ["x"]}], "[0].answer: expected str"),
        (
            [{"dialog_id": "a", "turn": 1, "answer": "x"}] * 2,
            "[1] (a): turn 1 predicted twice",
        ),
        (["a"], "[0]: expected dict"),
        ({"a": "fine", "b": 3}, "['b']: expected str, got 3"),
        ("just text", "got str"),
    ],
)
def test_malformed_predictions(tmp_path: Path, rows: Any, fragment: str) -> None:
    with pytest.raises(EvaluationError, match="preds.json") as err:
        load_predictions(_write(tmp_path / "preds.json", rows))
    assert fragment in str(err.value)


def test_mapping_predictions(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", {"a": "yes .", "b": ""})
    assert load_predictions(path) == {"a": "yes .", "b": ""}


def test_question_types_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "qt.json", {"a": ["colour", "shape"]})
    assert load_question_types(path) == {"a": ["colour", "shape"]}
    with pytest.raises(EvaluationError, match=r"bad.json: \['a'\]\[1\]: expected str"):
        load_question_types(_write(tmp_path / "bad.json", {"a": ["colour", 2]}))


# --- metrics ----------------------------------------------------------------------------


def test_hand_computed_bleu1_and_rouge() -> None:
    refs = _refs(d1=["a man is sitting on the couch ."], d2=["Yes, he is."])
    result = evaluate_avsd({"d1": "The man is eating.", "d2": "yes"}, refs)
    # Clipped unigram matches 3/4 + 1/1; hypothesis length 5 vs reference length 10.
    assert result["overall"]["Bleu_1"] == pytest.approx(4 / 5 * math.exp(1 - 10 / 5), rel=1e-6)

    def rouge(lcs: int, hyp: int, ref: int, beta: float = 1.2) -> float:
        p, r = lcs / hyp, lcs / ref
        return (1 + beta**2) * p * r / (r + beta**2 * p)

    expected = (rouge(2, 4, 7) + rouge(1, 1, 3)) / 2
    assert result["overall"]["ROUGE_L"] == pytest.approx(expected, rel=1e-9)
    assert result["overall"]["exact_match"] == 0.0


CASES = {
    "d1": (["a man is sitting on the couch .", "he sits on a sofa ."], "A man sits on the couch."),
    "d2": (["no , there is no sound .", "i hear nothing ."], "there is no sound"),
    "d3": (["she is holding a cup of coffee", "a cup"], "she holds a red cup."),
    "d4": (["it 's a woman", "a woman", "the person is a woman ."], "It's a woman!"),
    "d5": (["the video ends with him leaving the room ."], "he leaves the room at the end"),
}


def test_metrics_equal_pycocoevalcap_called_directly() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    result = evaluate_avsd({k: v[1] for k, v in CASES.items()}, refs)
    gts = {k: [normalize(a) for a in v[0]] for k, v in CASES.items()}
    res = {k: [normalize(v[1])] for k, v in CASES.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"Bleu_{n + 1}": b for n, b in enumerate(bleu)}
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    expected["exact_match"] = 1 / 5  # only d4 ("it 's a woman") matches after normalisation
    assert result["overall"] == pytest.approx(expected, rel=1e-12)
    assert result["protocol"] == "avsd/last-turn"
    assert result["normalisation"] == "vdial-inprocess-ptb"
    assert result["by_type"] == {}
    assert expected["CIDEr"] > 0 and expected["Bleu_4"] > 0


def test_perfect_predictions() -> None:
    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    # Identical to one reference up to case and punctuation.
    predictions = {k: v[0][-1].upper().replace(" .", "!") for k, v in CASES.items()}
    overall = evaluate_avsd(predictions, refs)["overall"]
    for n in range(1, 5):
        assert overall[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert overall["ROUGE_L"] == pytest.approx(1.0)
    assert overall["exact_match"] == 1.0


def test_missing_predictions_are_listed_and_scored_empty() -> None:
    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    partial = {k: v[1] for k, v in CASES.items() if k not in ("d2", "d5")}
    result = evaluate_avsd(partial, refs)
    assert result["missing"] == ["d2", "d5"]
    assert result["n"] == 5
    explicit = evaluate_avsd({**partial, "d2": "", "d5": ""}, refs)
    assert explicit["missing"] == []
    assert result["overall"] == explicit["overall"]
    full = evaluate_avsd({k: v[1] for k, v in CASES.items()}, refs)
    assert result["overall"]["ROUGE_L"] < full["overall"]["ROUGE_L"]


def test_prediction_for_unknown_dialog_is_an_error() -> None:
    with pytest.raises(EvaluationError, match=r"1 predicted dialog\(s\) are not in the references"):
        evaluate_avsd({"zz": "x"}, _refs(a=["x"]))
    with pytest.raises(EvaluationError, match="no references"):
        evaluate_avsd({}, {})


def test_breakdown_by_question_type_of_the_scored_turn() -> None:
    refs = {
        k: Reference(dialog_id=k, turn=1, question="q", answers=tuple(v[0]))
        for k, v in CASES.items()
    }
    predictions = {k: v[1] for k, v in CASES.items()}
    # The first turn's type must not be used: only index 1 (the scored turn) counts.
    types = {
        "d1": ["count", "scene"],
        "d2": ["scene", "audio"],
        "d3": ["count", "scene"],
        "d4": ["audio", "person"],
        "d5": ["audio", "scene"],
        "unrelated": ["audio"],
    }
    result = evaluate_avsd(predictions, refs, question_types=types)
    assert {t: s["n"] for t, s in result["by_type"].items()} == {
        "audio": 1,
        "person": 1,
        "scene": 3,
    }
    assert result["by_type"]["person"]["exact_match"] == 1.0
    scene = ["d1", "d3", "d5"]
    alone = evaluate_avsd({k: predictions[k] for k in scene}, {k: refs[k] for k in scene})[
        "overall"
    ]
    assert result["by_type"]["scene"] == pytest.approx({**alone, "n": 3})
    with pytest.raises(
        EvaluationError, match=r"3 scored dialog\(s\) have no entry, e.g. \['d3', 'd4', 'd5'\]"
    ):
        evaluate_avsd(predictions, refs, question_types={k: types[k] for k in ("d1", "d2")})
    with pytest.raises(EvaluationError, match="dialog 'd1' lists 1 turn"):
        evaluate_avsd(predictions, refs, question_types={**types, "d1": ["count"]})
