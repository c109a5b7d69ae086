"""The written JSON files match the AVSD (DSTC7, DSTC10) and VisDial v1.0 formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vdial.synth import SynthSummary
from vdial.synth.dialogs import answer_pool

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "avsd"
TYPES = {"colour", "shape", "count", "direction"}


def _load(path: Path) -> dict | list:
    return json.loads(path.read_text(encoding="utf-8"))


def _real(name: str) -> dict:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real AVSD file not available: {path}")
    return _load(path)


def test_avsd_train_val_are_dstc7_with_full_dialogs(tiny: SynthSummary) -> None:
    for split, n in (("train", 6), ("val", 2)):
        data = _load(tiny.avsd_dir / f"{split}.json")
        assert data["type"] == "scene_aware_dialog" and data["version"] == "0.1"
        assert list(data) == ["type", "version", "dialogs"]
        assert len(data["dialogs"]) == n
        for d in data["dialogs"]:
            assert set(d) == {"image_id", "caption", "summary", "dialog"}
            assert 6 <= len(d["dialog"]) <= 8
            for turn in d["dialog"]:
                assert set(turn) == {"question", "answer"}
                assert turn["question"].endswith(" ?") and turn["answer"].endswith(" .")


def test_avsd_keys_match_the_real_dstc7_test_file(tiny: SynthSummary) -> None:
    real = _real("test_set4DSTC7-AVSD.json")
    ours = _load(tiny.avsd_dir / "test.json")
    assert set(ours) == set(real)
    assert {ours["type"], ours["version"]} == {real["type"], real["version"]}
    assert set(ours["dialogs"][0]) == set(real["dialogs"][0])
    real_turn_keys = {frozenset(t) for d in real["dialogs"] for t in d["dialog"]}
    assert {frozenset(t) for d in ours["dialogs"] for t in d["dialog"]} <= real_turn_keys


def test_avsd_test_ends_with_the_undisclosed_scored_turn(tiny: SynthSummary, truth: dict) -> None:
    data = _load(tiny.avsd_dir / "test.json")
    assert [d["image_id"] for d in data["dialogs"]] == [f"shapes_{i:05d}" for i in range(8, 12)]
    for d in data["dialogs"]:
        *history, last = d["dialog"]
        assert last["answer"] == "__UNDISCLOSED__"
        assert all(t["answer"] != "__UNDISCLOSED__" for t in history)
        scored = truth["avsd"][d["image_id"]]["scored"]
        assert scored["turn"] == len(d["dialog"]) and scored["question"] == last["question"]


def test_multiref_matches_the_real_dstc10_file(tiny: SynthSummary, truth: dict) -> None:
    ours = _load(tiny.avsd_dir / "test_multiref.json")
    test = _load(tiny.avsd_dir / "test.json")
    real = _real("test_set4DSTC10-AVSD_multiref+reason.json")
    assert list(ours) == list(real)
    assert {frozenset(d) for d in ours["dialogs"]} == {frozenset(d) for d in real["dialogs"]}
    assert len(ours["dialogs"]) == len(test["dialogs"])
    for d, t in zip(ours["dialogs"], test["dialogs"], strict=True):
        assert d["image_id"] == t["image_id"]
        *history, last = d["dialog"]
        assert [h["question"] for h in history] == [h["question"] for h in t["dialog"][:-1]]
        assert [h["answer"] for h in history] == [h["answer"] for h in t["dialog"][:-1]]
        assert all(set(h) == {"question", "answer"} for h in history)
        assert (
            set(last) == set(real["dialogs"][0]["dialog"][-1]) == {"question", "answer", "reason"}
        )
        assert isinstance(last["answer"], list) and len(set(last["answer"])) == 6
        scored = truth["avsd"][d["image_id"]]["scored"]
        assert last["answer"] == scored["references"]
        (reason,) = last["reason"]
        assert set(reason) == {"timestamp", "sentence"}
        duration = truth["avsd"][d["image_id"]]["scene"]["duration"]
        assert reason["timestamp"] == [0.0, duration] and reason["sentence"] in last["answer"]


def test_visdial_question_types_cover_every_round(tiny: SynthSummary) -> None:
    types = _load(tiny.visdial_dir / "question_types.json")
    rounds = {
        str(d["image_id"]): d["dialog"]
        for split in ("train", "val", "test")
        for d in _load(tiny.visdial_dir / f"visdial_1.0_{split}.json")["data"]["dialogs"]
    }
    assert set(types) == set(rounds)
    for image_id, dialog in rounds.items():
        assert len(types[image_id]) == len(dialog) and set(types[image_id]) <= TYPES


def test_question_types_cover_every_turn_of_every_dialog(tiny: SynthSummary) -> None:
    types = _load(tiny.avsd_dir / "question_types.json")
    dialogs = {
        d["image_id"]: d
        for split in ("train", "val", "test")
        for d in _load(tiny.avsd_dir / f"{split}.json")["dialogs"]
    }
    assert set(types) == set(dialogs)
    for vid, d in dialogs.items():
        assert len(types[vid]) == len(d["dialog"]) and set(types[vid]) <= TYPES
        for kind, turn in zip(types[vid], d["dialog"], strict=True):
            if "how many" in turn["question"]:
                assert kind == "count"
            if "colour" in turn["question"] or "color" in turn["question"]:
                assert kind == "colour"


def _visdial(tiny: SynthSummary, split: str) -> dict:
    return _load(tiny.visdial_dir / f"visdial_1.0_{split}.json")


def test_visdial_train_val_schema_and_ground_truth_index(tiny: SynthSummary) -> None:
    for split, n in (("train", 4), ("val", 2)):
        data = _visdial(tiny, split)
        assert data["version"] == "1.0" and data["split"] == split
        assert set(data["data"]) == {"questions", "answers", "dialogs"}
        questions, answers = data["data"]["questions"], data["data"]["answers"]
        assert len(data["data"]["dialogs"]) == n
        for d in data["data"]["dialogs"]:
            assert set(d) == {"image_id", "caption", "dialog"} and isinstance(d["image_id"], int)
            assert len(d["dialog"]) == 10
            for r in d["dialog"]:
                assert set(r) == {"question", "answer", "answer_options", "gt_index"}
                assert 0 <= r["question"] < len(questions)
                assert len(r["answer_options"]) == len(set(r["answer_options"])) == 100
                assert all(0 <= i < len(answers) for i in r["answer_options"])
                assert r["answer_options"][r["gt_index"]] == r["answer"]
                assert not questions[r["question"]].endswith("?")


def test_visdial_test_rounds_end_with_options_only(tiny: SynthSummary) -> None:
    data = _visdial(tiny, "test")
    assert data["split"] == "test"
    for d in data["data"]["dialogs"]:
        assert set(d) == {"image_id", "caption", "dialog", "round_id"}
        assert 1 <= len(d["dialog"]) <= 10 and d["round_id"] == len(d["dialog"])
        *history, last = d["dialog"]
        assert set(last) == {"question", "answer_options"} and len(last["answer_options"]) == 100
        assert all(set(r) == {"question", "answer"} for r in history)


def test_image_ids_are_unique_across_splits(tiny: SynthSummary) -> None:
    ids = [
        d["image_id"]
        for s in ("train", "val", "test")
        for d in _visdial(tiny, s)["data"]["dialogs"]
    ]
    assert len(ids) == len(set(ids)) == 8


def test_dense_annotations_grade_the_ground_truth_fully(tiny: SynthSummary) -> None:
    dense = _load(tiny.visdial_dir / "visdial_1.0_val_dense_annotations.json")
    val = {d["image_id"]: d for d in _visdial(tiny, "val")["data"]["dialogs"]}
    answers = _visdial(tiny, "val")["data"]["answers"]
    assert [a["image_id"] for a in dense] == list(val)
    for a in dense:
        assert set(a) == {"image_id", "round_id", "gt_relevance"}
        assert 1 <= a["round_id"] <= 10  # 1-based, as in the real file
        assert len(a["gt_relevance"]) == 100
        assert set(a["gt_relevance"]) <= {0.0, 0.5, 1.0}
        r = val[a["image_id"]]["dialog"][a["round_id"] - 1]
        assert a["gt_relevance"][r["gt_index"]] == 1.0
        gt_text = answers[r["answer"]]
        # Identical wording elsewhere in the options would be an exact duplicate option.
        assert [answers[i] for i in r["answer_options"]].count(gt_text) == 1
        # Relevant options state the true value; half-relevant ones qualify it differently.
        pool = {p.text: p for p in answer_pool()}
        gt = pool[gt_text]
        for i, grade in zip(r["answer_options"], a["gt_relevance"], strict=True):
            option = pool[answers[i]]
            if grade > 0:
                assert (option.family, option.value) == (gt.family, gt.value)
            if grade == 0.5:
                assert option.ref is not None


def test_images_and_videos_are_where_the_files_say(tiny: SynthSummary, truth: dict) -> None:
    for split in ("train", "val", "test"):
        for d in _visdial(tiny, split)["data"]["dialogs"]:
            name = f"VisualDialog_{split}2018_{d['image_id']:012d}.jpg"
            assert (tiny.images_dir / split / name).is_file()
            assert truth["visdial"][str(d["image_id"])]["split"] == split
    for vid, entry in truth["avsd"].items():
        assert (tiny.videos_dir / f"{vid}.mp4").is_file()
        assert entry["scene"]["fps"] == 8 and entry["scene"]["frames"] == 16
    assert truth["seed"] == 0 and truth["size"] == "tiny"
