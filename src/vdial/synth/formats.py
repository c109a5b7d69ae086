"""The synthetic dialogs in the benchmarks' own JSON formats, byte for byte deterministic.

AVSD (the real files are in shared/data/real/avsd):
* DSTC7 train/val: {"type": "scene_aware_dialog", "version": "0.1", "dialogs": [{"image_id",
  "caption", "dialog": [{"answer", "question"}], "summary"}]};
* DSTC7 test: the same, each dialog ending at its scored turn, answered "__UNDISCLOSED__";
* DSTC10 multiref+reason: {"dialogs", "version", "type"}, dialogs without caption/summary,
  the last turn's "answer" a list of 6 references plus
  "reason": [{"timestamp": [start, end], "sentence"}].

VisDial v1.0: {"version": "1.0", "split", "data": {"questions", "answers", "dialogs":
[{"image_id": int, "caption", "dialog": [{"question": idx, "answer": idx,
"answer_options": [100 idx], "gt_index": int}]}]}}. In test, a dialog has 1-10 rounds; its
last round has "question" and "answer_options" only, earlier rounds "question" and
"answer" only, and the dialog carries "round_id" (the 1-based number of the scored
round). Dense annotations: [{"image_id", "round_id" (1-based), "gt_relevance": [100]}].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vdial.synth.dialogs import (
    UNDISCLOSED,
    AvsdDialog,
    VisdialDialog,
    answer_pool,
    plain,
    relevance,
)

AVSD_TYPE = "scene_aware_dialog"
AVSD_VERSION = "0.1"
VISDIAL_VERSION = "1.0"


def write_json(path: Path, obj: Any, *, indent: int | None = None) -> None:
    """Write `obj` as UTF-8 JSON; key order is insertion order, so output is reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def avsd_json(dialogs: list[AvsdDialog]) -> dict[str, Any]:
    """DSTC7 format; test dialogs get their scored (last) answer withheld."""
    out = []
    for d in dialogs:
        turns = [{"answer": t.answer.text, "question": t.text} for t in d.turns]
        if d.split == "test":
            turns[-1]["answer"] = UNDISCLOSED
        out.append({"image_id": d.id, "caption": d.caption, "dialog": turns, "summary": d.summary})
    return {"type": AVSD_TYPE, "version": AVSD_VERSION, "dialogs": out}


def avsd_multiref_json(dialogs: list[AvsdDialog]) -> dict[str, Any]:
    """DSTC10 multiref+reason format of test dialogs: six references on the last turn."""
    out = []
    for d in dialogs:
        if not d.references:
            raise ValueError(f"{d.id}: a multiref dialog needs references on its scored turn")
        turns: list[dict[str, Any]] = [
            {"question": t.text, "answer": t.answer.text} for t in d.turns
        ]
        turns[-1]["answer"] = list(d.references)
        turns[-1]["reason"] = [
            {"timestamp": [0.0, d.scene.duration], "sentence": d.evidence},
        ]
        out.append({"image_id": d.id, "dialog": turns})
    return {"dialogs": out, "version": AVSD_VERSION, "type": AVSD_TYPE}


def question_types(dialogs: list[AvsdDialog]) -> dict[str, list[str]]:
    """{video id: [type of each turn]} (colour, shape, count, direction)."""
    return {d.id: [t.question.qtype for t in d.turns] for d in dialogs}


def visdial_question_types(dialogs: list[VisdialDialog]) -> dict[str, list[str]]:
    """{image id (as a string, JSON keys are strings): [type of each round]}."""
    return {str(d.image_id): [t.question.qtype for t in d.rounds] for d in dialogs}


def visdial_json(split: str, dialogs: list[VisdialDialog]) -> dict[str, Any]:
    """VisDial v1.0 format of one split; questions and answers are indexed string lists."""
    answers = [p.text for p in answer_pool()]
    answer_index = {text: i for i, text in enumerate(answers)}
    questions: list[str] = []
    question_index: dict[str, int] = {}

    def q_idx(text: str) -> int:
        text = plain(text)
        if text not in question_index:
            question_index[text] = len(questions)
            questions.append(text)
        return question_index[text]

    out = []
    for d in dialogs:
        if d.split != split:
            raise ValueError(f"image {d.image_id} is in split {d.split!r}, not {split!r}")
        rounds: list[dict[str, Any]] = []
        last = len(d.rounds) - 1
        for r, turn in enumerate(d.rounds):
            entry: dict[str, Any] = {"question": q_idx(turn.text)}
            if split != "test" or r < last:
                entry["answer"] = answer_index[plain(turn.answer.text)]
            if split != "test" or r == last:
                entry["answer_options"] = list(d.options[r])
            if split != "test":
                entry["gt_index"] = d.gt_index[r]
            rounds.append(entry)
        dialog: dict[str, Any] = {"image_id": d.image_id, "caption": d.caption, "dialog": rounds}
        if split == "test":
            dialog["round_id"] = len(d.rounds)
        out.append(dialog)
    return {
        "version": VISDIAL_VERSION,
        "split": split,
        "data": {"questions": questions, "answers": answers, "dialogs": out},
    }


def dense_annotations(dialogs: list[VisdialDialog]) -> list[dict[str, Any]]:
    """Graded relevance of the 100 options of one round per val image."""
    pool = answer_pool()
    out = []
    for d in dialogs:
        if d.dense_round is None:
            raise ValueError(f"image {d.image_id} has no dense round (only val images do)")
        turn = d.rounds[d.dense_round - 1]
        scores = [
            relevance(turn.question, turn.answer.value, pool[i])
            for i in d.options[d.dense_round - 1]
        ]
        out.append({"image_id": d.image_id, "round_id": d.dense_round, "gt_relevance": scores})
    return out
