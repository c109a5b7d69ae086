"""Question semantics: answers, what a history reveals, paraphrases and graded relevance."""

from __future__ import annotations

import pytest

from vdial.synth.dialogs import answer_pool, relevance
from vdial.synth.questions import (
    Knowledge,
    Phrase,
    Question,
    all_questions,
    answer_phrases,
    answer_value,
    reference_phrases,
)
from vdial.synth.scenes import Scene, Shape


def _scene(*objects: tuple[str, str], direction: str | None = "left") -> Scene:
    shapes = tuple(
        Shape(kind=k, colour=c, size=20, start=(10, 10 + 20 * i), end=(50, 10 + 20 * i))
        for i, (k, c) in enumerate(objects)
    )
    return Scene(
        width=64,
        height=64,
        frames=16 if direction else 1,
        fps=8 if direction else 0,
        background="gray",
        direction=direction,
        shapes=shapes,
    )


def test_answer_values() -> None:
    scene = _scene(("circle", "red"), ("square", "blue"), direction="up")
    assert answer_value(Question("colour_of", "circle"), scene) == "red"
    assert answer_value(Question("colour_of", "triangle"), scene) is None
    assert answer_value(Question("kind_of", "blue"), scene) == "square"
    assert answer_value(Question("count"), scene) == "2"
    assert answer_value(Question("direction"), scene) == "up"
    assert answer_value(Question("has_kind", "triangle"), scene) == "no"
    assert answer_value(Question("has_colour", "red"), scene) == "yes"
    assert answer_value(Question("several"), scene) == "yes"
    assert answer_value(Question("moving", "down"), scene) == "no"


def test_questions_apply_only_to_present_objects_and_images_have_no_direction() -> None:
    know = Knowledge(_scene(("circle", "red")))
    asked = know.questions()
    assert Question("colour_of", "circle") in asked
    assert Question("colour_of", "square") not in asked
    assert Question("kind_of", "red") in asked and Question("kind_of", "blue") not in asked
    still = Knowledge(_scene(("circle", "red"), direction=None)).questions()
    assert not any(q.qtype == "direction" for q in still)
    assert len(all_questions(video=True)) == len(all_questions(video=False)) + 5


def test_naming_a_colour_reveals_the_shape_of_that_colour() -> None:
    know = Knowledge(_scene(("circle", "red"), ("square", "blue")))
    assert not know.inferable(Question("kind_of", "red"))
    assert know.inferable(Question("kind_of", "red"), after=Question("colour_of", "circle"))
    know.tell(Question("colour_of", "circle"))
    assert know.inferable(Question("kind_of", "red"))
    assert not know.inferable(Question("kind_of", "blue"))


def test_count_follows_from_three_present_kinds_but_not_from_two() -> None:
    know = Knowledge(_scene(("circle", "red"), ("square", "blue"), ("triangle", "green")))
    know.tell(Question("has_kind", "circle"))
    know.tell(Question("has_kind", "square"))
    assert not know.inferable(Question("count"))
    know.tell(Question("has_kind", "triangle"))
    assert know.inferable(Question("count"))


def test_direction_follows_from_three_denials() -> None:
    know = Knowledge(_scene(("circle", "red"), direction="down"))
    for d in ("left", "right"):
        know.tell(Question("moving", d))
        assert not know.inferable(Question("direction"))
    know.tell(Question("moving", "up"))
    assert know.inferable(Question("direction"))


def test_vectorised_checks_agree_with_the_scalar_one() -> None:
    scene = _scene(("circle", "red"), ("triangle", "yellow"), direction="right")
    know = Knowledge(scene)
    know.tell(Question("has_colour", "red"))
    scored = Question("kind_of", "red")
    keeps = know.keeps_unknown(scored)
    unknown = know.unknown()
    assert set(keeps) == set(unknown) == set(know.questions())
    for q in know.questions():
        assert keeps[q] == (not know.inferable(scored, after=q))
        assert unknown[q] == (not know.inferable(q))
    assert keeps[Question("colour_of", "circle")] is False
    assert keeps[Question("count")] is True


@pytest.mark.parametrize(
    ("question", "value"),
    [
        (Question("colour_of", "circle"), "red"),
        (Question("kind_of", "blue"), "square"),
        (Question("count"), "1"),
        (Question("count"), "3"),
        (Question("direction"), "up"),
    ],
)
def test_six_distinct_references_that_state_the_value(question: Question, value: str) -> None:
    refs = reference_phrases(question, value)
    assert len({r.text for r in refs}) == 6
    word = {"1": "one", "3": "three"}.get(value, value)
    assert all(word in r.text.replace("upwards", "up") for r in refs)
    assert all(r.text.endswith(" .") for r in refs)
    assert all(p.value == value for p in answer_phrases(question, value))
    with pytest.raises(ValueError, match="not a wh-question"):
        reference_phrases(Question("has_kind", "circle"), "yes")


def test_relevance_grades() -> None:
    q = Question("colour_of", "circle")
    assert relevance(q, "red", Phrase("the circle is red", "colour", "red", "circle")) == 1.0
    assert relevance(q, "red", Phrase("red", "colour", "red", None)) == 1.0
    assert relevance(q, "red", Phrase("the square is red", "colour", "red", "square")) == 0.5
    assert relevance(q, "red", Phrase("blue", "colour", "blue", None)) == 0.0
    assert relevance(q, "red", Phrase("a circle", "shape", "circle", None)) == 0.0
    yn = Question("has_kind", "triangle")
    assert relevance(yn, "no", Phrase("no", "yesno", "no", None)) == 1.0
    assert relevance(yn, "no", Phrase("no, there is no triangle", "yesno", "no", "triangle")) == 1.0
    assert relevance(yn, "no", Phrase("no, there is no square", "yesno", "no", "square")) == 0.5
    assert relevance(yn, "no", Phrase("no, there is only one", "yesno", "no", "several")) == 0.5
    assert relevance(yn, "no", Phrase("yes", "yesno", "yes", None)) == 0.0


def test_answer_pool_is_large_unique_and_visdial_spelled() -> None:
    pool = answer_pool()
    texts = [p.text for p in pool]
    assert len(texts) == len(set(texts)) >= 100
    assert not any(t.endswith((" .", " ?")) or " , " in t for t in texts)
    assert {"yes", "no", "red", "a circle", "there are two shapes"} <= set(texts)
