"""Dialog content at demo size (scenes and dialogs only, nothing rendered)."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest

from vdial.synth.api import Plan, plan
from vdial.synth.questions import Question
from vdial.synth.scenes import COLOURS, DIRECTIONS, KINDS

NUMBERS = {"1": "one", "2": "two", "3": "three"}
# Words a caption must not contain: they would answer a question.
GIVEAWAYS = set(COLOURS) | set(KINDS) | set(DIRECTIONS) | {
    "one", "two", "three", "single", "several", "1", "2", "3", "upwards", "downwards",
    "leftwards", "rightwards",
}  # fmt: skip


def _truth(q: Question, objects: frozenset, direction: str | None) -> str | None:
    """Reference semantics written independently of the generator's answer table."""
    kinds = {k: c for k, c in objects}
    colours = {c: k for k, c in objects}
    return {
        "colour_of": lambda: kinds.get(q.arg),
        "kind_of": lambda: colours.get(q.arg),
        "count": lambda: str(len(objects)),
        "direction": lambda: direction,
        "has_kind": lambda: "yes" if q.arg in kinds else "no",
        "has_colour": lambda: "yes" if q.arg in colours else "no",
        "several": lambda: "yes" if len(objects) > 1 else "no",
        "moving": lambda: "yes" if direction == q.arg else "no",
    }[q.fact]()


ALL_SCENES = [
    (frozenset(zip(ks, cs, strict=True)), d)
    for n in (1, 2, 3)
    for ks in itertools.combinations(KINDS, n)
    for cs in itertools.permutations(COLOURS, n)
    for d in DIRECTIONS
]


@pytest.fixture(scope="module")
def demo() -> Plan:
    return plan(size="demo", seed=0)


def test_demo_counts_and_unique_ids(demo: Plan) -> None:
    assert {s: len(v) for s, v in demo.avsd.items()} == {"train": 800, "val": 40, "test": 160}
    assert {s: len(v) for s, v in demo.visdial.items()} == {"train": 200, "val": 40, "test": 40}
    ids = [d.id for v in demo.avsd.values() for d in v]
    assert len(set(ids)) == len(ids) and ids[0] == "shapes_00000"
    assert all(re.fullmatch(r"shapes_\d{5}", i) for i in ids)
    image_ids = [d.image_id for v in demo.visdial.values() for d in v]
    assert len(set(image_ids)) == len(image_ids)
    frames = {d.scene.frames for v in demo.avsd.values() for d in v}
    assert min(frames) >= 16 and max(frames) <= 24 and len(frames) > 1  # 2-3 s at 8 fps
    assert {d.scene.width for v in demo.avsd.values() for d in v} == {128}


def test_scored_turn_types_are_balanced(demo: Plan) -> None:
    types = Counter(d.turns[-1].question.qtype for d in demo.avsd["test"])
    assert set(types) == {"colour", "shape", "count", "direction"}
    assert max(types.values()) - min(types.values()) <= 1
    assert all(d.turns[-1].question.is_wh for d in demo.avsd["test"])


def test_scored_answer_does_not_follow_from_history(demo: Plan) -> None:
    table: dict[Question, list[str | None]] = {}

    def answers(q: Question) -> list[str | None]:
        if q not in table:
            table[q] = [_truth(q, *s) for s in ALL_SCENES]
        return table[q]

    for d in demo.avsd["test"]:
        truth = (frozenset((s.kind, s.colour) for s in d.scene.shapes), d.scene.direction)
        *history, scored = d.turns
        consistent = range(len(ALL_SCENES))
        for t in history:
            told = _truth(t.question, *truth)
            consistent = [i for i in consistent if answers(t.question)[i] == told]
        possible = {answers(scored.question)[i] for i in consistent} - {None}
        assert _truth(scored.question, *truth) in possible
        assert len(possible) >= 2, (d.id, [t.text for t in d.turns])


def test_every_answer_is_true_and_no_question_repeats(demo: Plan) -> None:
    for d in [*demo.avsd["train"], *demo.avsd["test"]]:
        objects = frozenset((s.kind, s.colour) for s in d.scene.shapes)
        assert len({t.question for t in d.turns}) == len(d.turns)
        for t in d.turns:
            value = _truth(t.question, objects, d.scene.direction)
            assert value is not None and t.answer.value == value
            word = NUMBERS.get(value, value)
            if t.question.is_wh:
                assert word in t.answer.text.replace("wards", ""), (t.text, t.answer.text)
            else:
                assert t.answer.text.startswith(value)


def test_dialog_lengths(demo: Plan) -> None:
    for split in ("train", "val"):
        assert {len(d.turns) for d in demo.avsd[split]} == {6, 7, 8}
    assert {len(d.turns) for d in demo.avsd["test"]} == set(range(1, 9))
    assert {len(d.rounds) for s in ("train", "val") for d in demo.visdial[s]} == {10}
    assert {len(d.rounds) for d in demo.visdial["test"]} <= set(range(1, 11))
    assert len({len(d.rounds) for d in demo.visdial["test"]}) > 3


def test_captions_and_summaries_give_nothing_away(demo: Plan) -> None:
    texts = [d.caption for v in demo.avsd.values() for d in v]
    texts += [d.summary for v in demo.avsd.values() for d in v]
    texts += [d.caption for v in demo.visdial.values() for d in v]
    for text in texts:
        assert not set(re.findall(r"[a-z0-9]+", text)) & GIVEAWAYS, text


def test_visdial_questions_are_about_colour_shape_count_only(demo: Plan) -> None:
    types = Counter(t.question.qtype for v in demo.visdial.values() for d in v for t in d.rounds)
    assert set(types) == {"colour", "shape", "count"}
    for d in demo.visdial["train"]:
        assert len({t.question for t in d.rounds}) == len(d.rounds)


def test_overrides_and_bad_sizes() -> None:
    p = plan(size="tiny", seed=0, videos=3, images=5)
    assert len(p.avsd["train"]) == 3 and len(p.visdial["train"]) == 5
    assert len(p.avsd["test"]) == 4
    # An item's content depends on its own seed only, not on the other counts.
    assert p.avsd["train"][1].scene == plan(size="tiny", seed=0).avsd["train"][1].scene
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        plan(size="huge")
    with pytest.raises(ValueError, match="videos must be at least 1"):
        plan(size="tiny", videos=0)
