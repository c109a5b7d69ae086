"""AVSD reference/prediction loading and the last-turn and all-turn metrics, with the done-when
check: vdial's numbers on the real DSTC10 multiref file equal pycocoevalcap's run directly."""

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
from vdial.evaluate.coco import FastScorer, OfficialScorer, java_missing, meteor_process
from vdial.evaluate.text import normalize

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "avsd"
MULTIREF = REAL / "test_set4DSTC10-AVSD_multiref+reason.json"


FAST = FastScorer()


def _official() -> OfficialScorer:
    if java_missing():
        pytest.skip(java_missing())
    return OfficialScorer()


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
    result = evaluate_avsd(
        {k: predictions[k] for k in subset}, {k: refs[k] for k in subset}, scorer=FAST
    )
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
    result = evaluate_avsd({"d1": "The man is eating.", "d2": "yes"}, refs, scorer=FAST)
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


def test_fast_metrics_equal_pycocoevalcap_called_directly() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    result = evaluate_avsd({k: v[1] for k, v in CASES.items()}, refs, scorer=FAST)
    gts = {k: [normalize(a) for a in v[0]] for k, v in CASES.items()}
    res = {k: [normalize(v[1])] for k, v in CASES.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"Bleu_{n + 1}": b for n, b in enumerate(bleu)}
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    expected["exact_match"] = 1 / 5  # only d4 ("it 's a woman") matches after normalisation
    assert result["overall"].pop("METEOR") is None  # unavailable, never 0
    assert result["overall"] == pytest.approx(expected, rel=1e-12)
    assert result["protocol"] == "avsd/last-turn"
    assert result["scorer"] == "fast-inprocess"
    assert result["normalisation"] == "vdial-inprocess-ptb"
    assert result["meteor"].startswith("unavailable: ")
    assert result["by_type"] == {}
    assert expected["CIDEr"] > 0 and expected["Bleu_4"] > 0


def _direct_coco(
    refs: dict[Any, list[str]], hyps: dict[Any, str], *, meteor: bool
) -> tuple[dict[str, float], dict[Any, list[str]], dict[Any, list[str]]]:
    """pycocoevalcap as coco-caption calls it: PTBTokenizer on each side, then the scorers.

    Returns the scores and the tokenized references and hypotheses.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": a} for a in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": h}] for k, h in hyps.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"Bleu_{n + 1}": b for n, b in enumerate(bleu)}
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    if meteor:
        # pycocoevalcap's Meteor object, the one vdial also uses: a second JVM would cost
        # 10-20 s more to load, and its requests are independent, so nothing is shared but
        # the process (the inputs here are built without vdial).
        scores["METEOR"] = meteor_process().compute_score(gts, res)[0]
    return scores, gts, res


def test_official_metrics_equal_pycocoevalcap_called_directly() -> None:
    official = _official()
    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    result = evaluate_avsd({k: v[1] for k, v in CASES.items()}, refs, scorer=official)
    assert result["scorer"] == "official-ptb-java"
    assert result["normalisation"] == "ptb-corenlp-3.4.1-java"
    assert result["meteor"] == "available"
    expected, _, _ = _direct_coco(
        {k: v[0] for k, v in CASES.items()}, {k: v[1] for k, v in CASES.items()}, meteor=True
    )
    assert result["overall"].pop("exact_match") == 1 / 5
    assert result["overall"] == pytest.approx(expected, rel=1e-12)
    assert 0 < expected["METEOR"] < 1


def test_perfect_predictions() -> None:
    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    # Identical to one reference up to case and punctuation.
    predictions = {k: v[0][-1].upper().replace(" .", "!") for k, v in CASES.items()}
    overall = evaluate_avsd(predictions, refs, scorer=FAST)["overall"]
    for n in range(1, 5):
        assert overall[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert overall["ROUGE_L"] == pytest.approx(1.0)
    assert overall["exact_match"] == 1.0


def test_missing_predictions_are_listed_and_scored_empty() -> None:
    refs = _refs(**{k: v[0] for k, v in CASES.items()})
    partial = {k: v[1] for k, v in CASES.items() if k not in ("d2", "d5")}
    result = evaluate_avsd(partial, refs, scorer=FAST)
    assert result["missing"] == ["d2", "d5"]
    assert result["n"] == 5
    explicit = evaluate_avsd({**partial, "d2": "", "d5": ""}, refs, scorer=FAST)
    assert explicit["missing"] == []
    assert result["overall"] == explicit["overall"]
    full = evaluate_avsd({k: v[1] for k, v in CASES.items()}, refs, scorer=FAST)
    assert result["overall"]["ROUGE_L"] < full["overall"]["ROUGE_L"]


def test_prediction_for_unknown_dialog_is_an_error() -> None:
    with pytest.raises(EvaluationError, match=r"1 prediction\(s\) are not in the references"):
        evaluate_avsd({"zz": "x"}, _refs(a=["x"]), scorer=FAST)
    with pytest.raises(EvaluationError, match="no references"):
        evaluate_avsd({}, {}, scorer=FAST)


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
    result = evaluate_avsd(predictions, refs, question_types=types, scorer=FAST)
    assert {t: s["n"] for t, s in result["by_type"].items()} == {
        "audio": 1,
        "person": 1,
        "scene": 3,
    }
    assert result["by_type"]["person"]["exact_match"] == 1.0
    scene = ["d1", "d3", "d5"]
    alone = evaluate_avsd(
        {k: predictions[k] for k in scene}, {k: refs[k] for k in scene}, scorer=FAST
    )["overall"]
    assert result["by_type"]["scene"] == pytest.approx({**alone, "n": 3})
    with pytest.raises(
        EvaluationError, match=r"3 scored dialog\(s\) have no entry, e.g. \['d3', 'd4', 'd5'\]"
    ):
        evaluate_avsd(
            predictions, refs, question_types={k: types[k] for k in ("d1", "d2")}, scorer=FAST
        )
    with pytest.raises(EvaluationError, match="dialog 'd1' lists 1 turn"):
        evaluate_avsd(predictions, refs, question_types={**types, "d1": ["count"]}, scorer=FAST)


# --- all turns --------------------------------------------------------------------------


def test_real_multiref_all_turns() -> None:
    refs = load_references(_real(MULTIREF.name), turns="all")
    assert len(refs) == 12399 + 1804
    assert refs["CGRUM", 0] == Reference(
        dialog_id="CGRUM",
        turn=0,
        question="it is a man or a woman ?",
        answers=("it is a man on the bed",),
    )
    assert refs["CGRUM", 7] == load_references(MULTIREF)["CGRUM"]
    assert sum(len(r.answers) == 6 for r in refs.values()) == 1804
    with pytest.raises(EvaluationError, match=r"dialogs\[0\]\.dialog\[7\] \(CGRUM\) and 1803 more"):
        load_references(_real("test_set4DSTC10-AVSD.json"), turns="all")


def test_all_turn_predictions_need_turn_keys(tmp_path: Path) -> None:
    refs = load_references(
        _write(tmp_path / "ref.json", _avsd({"v": [("q0", "a0"), ("q1", ["b", "c"])]})),
        turns="all",
    )
    assert set(refs) == {("v", 0), ("v", 1)}
    rows = [
        {"dialog_id": "v", "turn": 1, "answer": "b"},
        {"dialog_id": "v", "turn": 0, "answer": "x"},
    ]
    path = _write(tmp_path / "rows.json", rows)
    assert load_predictions(path, references=refs, turns="all") == {("v", 1): "b", ("v", 0): "x"}
    extra = _write(tmp_path / "extra.json", [*rows, {"dialog_id": "v", "turn": 2, "answer": "z"}])
    with pytest.raises(EvaluationError, match=r"extra.json: \[2\] \(v\): turn 2 is not a turn"):
        load_predictions(extra, references=refs, turns="all")
    for data, kind in (({"v": "b"}, "dict"), (_avsd({"v": [("q0", "a0"), ("q1", "b")]}), "dict")):
        with pytest.raises(EvaluationError, match=f"keyed by dialog and turn.*got {kind}"):
            load_predictions(_write(tmp_path / "p.json", data), turns="all")
    with pytest.raises(ValueError, match="unknown turns 'first'"):
        load_predictions(path, turns="first")


def test_all_turns_evaluation(tmp_path: Path) -> None:
    data = _avsd(
        {
            "v1": [("q", "A red cup."), ("q", "two"), ("q", ["it is blue .", "blue"])],
            "v2": [("q", "No sound."), ("q", ["a dog", "the dog ."])],
        }
    )
    refs = load_references(_write(tmp_path / "ref.json", data), turns="all")
    predictions = {("v1", 0): "a red cup", ("v1", 2): "It is blue!", ("v2", 1): "a cat"}
    types = {"v1": ["colour", "count", "colour"], "v2": ["audio", "animal"]}
    result = evaluate_avsd(predictions, refs, turns="all", question_types=types, scorer=FAST)
    assert result["protocol"] == "avsd/all-turns"
    assert result["n"] == 5
    assert result["missing"] == [["v1", 1], ["v2", 0]]
    assert {t: s["n"] for t, s in result["by_type"].items()} == {
        "animal": 1,
        "audio": 1,
        "colour": 2,
        "count": 1,
    }
    assert result["overall"]["exact_match"] == pytest.approx(2 / 5)
    assert result["by_type"]["colour"]["exact_match"] == 1.0
    # The same items keyed by an opaque id score the same: keys only pair the two sides.
    flat = {f"{d}/{t}": r for (d, t), r in refs.items()}
    same = evaluate_avsd({f"{d}/{t}": a for (d, t), a in predictions.items()}, flat, scorer=FAST)
    assert same["overall"] == result["overall"]
    with pytest.raises(EvaluationError, match=r"turns='all' needs references keyed by \(dialog"):
        evaluate_avsd({}, flat, turns="all", scorer=FAST)
    with pytest.raises(EvaluationError, match="turns='last' needs references keyed by dialog_id"):
        evaluate_avsd({}, refs, scorer=FAST)


# --- done when: vdial equals pycocoevalcap on the real multiref file ----------------------


def _one_against_five() -> tuple[dict[str, str], dict[str, Reference]]:
    """Reference 1 of each last turn as the prediction, the other five as references."""
    scored = load_references(_real(MULTIREF.name))
    refs = {
        k: Reference(dialog_id=k, turn=r.turn, question=r.question, answers=r.answers[1:])
        for k, r in scored.items()
    }
    return {k: r.answers[0] for k, r in scored.items()}, refs


# The acceptance test, so it runs in `make test`: ~25 s idle (METEOR over 1804 items
# twice, once through vdial and once directly).
def test_official_scorer_equals_pycocoevalcap_on_real_multiref() -> None:
    official = _official()
    predictions, refs = _one_against_five()
    result = evaluate_avsd(predictions, refs, scorer=official)
    expected, _, _ = _direct_coco(
        {k: list(r.answers) for k, r in refs.items()}, predictions, meteor=True
    )
    assert result["meteor"] == "available"
    assert result["n"] == 1804 and result["missing"] == []
    overall = {k: v for k, v in result["overall"].items() if k != "exact_match"}
    assert overall == pytest.approx(expected, rel=1e-12)
    # Human answers against the other humans' (a sanity range, not a specification).
    assert 0.2 < expected["METEOR"] < 0.35 and expected["CIDEr"] > 0.5


def test_fast_scorer_equals_pycocoevalcap_on_real_multiref() -> None:
    """The in-process tokens equal the Java PTBTokenizer's on all 1804 x 6 answers, so the
    fast scorer gives pycocoevalcap's BLEU, ROUGE-L and CIDEr-D on the official tokens."""
    predictions, refs = _one_against_five()
    if java_missing():
        pytest.skip(java_missing())
    expected, gts, res = _direct_coco(
        {k: list(r.answers) for k, r in refs.items()}, predictions, meteor=False
    )
    assert {k: [normalize(predictions[k])] for k in res} == res
    assert {k: [normalize(a) for a in refs[k].answers] for k in gts} == gts
    fast = evaluate_avsd(predictions, refs, scorer=FAST)["overall"]
    assert fast.pop("METEOR") is None
    assert fast.pop("exact_match") == pytest.approx(
        sum(res[k][0] in gts[k] for k in res) / len(res)
    )
    assert fast == pytest.approx(expected, rel=1e-12)
    assert expected["Bleu_4"] > 0.05 and expected["CIDEr"] > 0.5


# --- `vdial eval avsd --turns/--scorer` -----------------------------------------------------


def _cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from vdial.evaluate.cli import app

    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["avsd", *args])


def test_cli_all_turns_fast_scorer(tmp_path: Path) -> None:
    data = _avsd(
        {"v1": [("q", "A red cup."), ("q", ["it is blue .", "blue"])], "v2": [("q", "no")]}
    )
    refs = _write(tmp_path / "ref.json", data)
    rows = [
        {"dialog_id": "v1", "turn": 1, "answer": "blue"},
        {"dialog_id": "v2", "turn": 0, "answer": "No."},
    ]
    preds = _write(tmp_path / "preds.json", rows)
    out = tmp_path / "m.json"
    args = ["--predictions", str(preds), "--references", str(refs), "--out", str(out)]
    result = _cli([*args, "--turns", "all", "--scorer", "fast"])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["protocol"] == "avsd/all-turns"
    assert written["scorer"] == "fast-inprocess"
    assert written["missing"] == [["v1", 0]]
    assert written["overall"]["METEOR"] is None
    assert written["meteor"].startswith("unavailable: ")
    assert written["overall"]["exact_match"] == pytest.approx(2 / 3)
    assert "METEOR unavailable: " in result.output
    assert "1 turn(s) had no prediction" in result.output
    assert "avsd/all-turns, fast-inprocess" in result.output
    # Without --turns all, the same rows are read as last-turn predictions: v1's is turn 1.
    result = _cli([*args, "--scorer", "fast"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["overall"]["exact_match"] == 1.0


def test_cli_default_scorer_follows_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = _write(tmp_path / "ref.json", _avsd({"v": [("q", "a red cup .")]}))
    preds = _write(tmp_path / "p.json", {"v": "A red cup!"})
    out = tmp_path / "m.json"
    args = ["--predictions", str(preds), "--references", str(refs), "--out", str(out)]
    if not java_missing():
        assert _cli(args).exit_code == 0
        written = json.loads(out.read_text())
        assert written["scorer"] == "official-ptb-java" and written["meteor"] == "available"
        assert written["overall"]["METEOR"] == pytest.approx(1.0, abs=1e-3)
    from vdial.evaluate import coco

    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    result = _cli(args)
    assert result.exit_code == 0, result.output
    assert "java is not on the PATH: using the fast in-process scorer" in result.output
    assert json.loads(out.read_text())["meteor"] == "unavailable: java is not on the PATH"
    result = _cli([*args, "--scorer", "official"])
    assert result.exit_code == 1 and "official scorer needs Java" in result.stderr


@pytest.mark.parametrize(("option", "value"), [("--scorer", "java"), ("--turns", "first")])
def test_cli_rejects_unknown_choices(tmp_path: Path, option: str, value: str) -> None:
    refs = _write(tmp_path / "ref.json", _avsd({"v": [("q", "a")]}))
    result = _cli(["--predictions", str(refs), "--references", str(refs), option, value])
    assert result.exit_code == 2
    assert option in result.output and "expected one of" in result.output
