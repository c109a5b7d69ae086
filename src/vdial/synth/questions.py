"""Questions about a scene, how they are phrased, and what a dialog history already reveals.

Every question is a function of the scene's abstract content (the set of (kind, colour)
objects and the direction). `Knowledge` enumerates every abstract scene there can be (228
object sets, times 4 directions for videos) and keeps those consistent with the answers
given so far; a question is *inferable* when all consistent scenes in which it makes sense
give it the same answer. The dialog samplers use this to keep a scored test turn
unanswerable from its history: the answer has to come from the pixels.

Phrasing: each question has a few templates; each answer value has the phrases a dialog
uses, and wh-questions also have six reference paraphrases (the AVSD multiref format).
Every phrase records its family, value and the qualifier it commits to (`ref`), which is
what VisDial's dense relevance is computed from.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np

from vdial.synth.scenes import COLOURS, DIRECTIONS, KINDS, Scene

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
# Every answer value, so the answer table can hold small integer codes.
_VALUES = ("yes", "no", *KINDS, *COLOURS, *DIRECTIONS, "1", "2", "3")
# Direction phrases: (after a verb, bare) - "everything moves leftwards", "left". One word
# each: with "to the left" the horizontal directions shared a first word ("to") that collected
# half the probability, so greedy decoding rarely chose "upwards" or "downwards" at all.
DIRECTION_WORDS = {
    "left": ("leftwards", "left"),
    "right": ("rightwards", "right"),
    "up": ("upwards", "up"),
    "down": ("downwards", "down"),
}

# fact -> (question type, answer family, question templates). `{a}` is the argument.
FACTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "colour_of": (
        "colour",
        "colour",
        ("what colour is the {a} ?", "what color is the {a} ?", "which colour does the {a} have ?"),
    ),
    "has_colour": ("colour", "yesno", ("is anything {a} ?", "do you see anything {a} ?")),
    "kind_of": (
        "shape",
        "shape",
        ("what shape is the {a} object ?", "what kind of shape is the {a} one ?"),
    ),
    "has_kind": ("shape", "yesno", ("is there a {a} ?", "can you see a {a} ?")),
    "count": (
        "count",
        "count",
        ("how many shapes are there ?", "how many objects can you see ?"),
    ),
    "several": ("count", "yesno", ("is there more than one shape ?", "are there several shapes ?")),
    "direction": (
        "direction",
        "direction",
        (
            "which way do things move ?",
            "in which direction is the movement ?",
            "where is everything heading ?",
        ),
    ),
    "moving": ("direction", "yesno", ("is everything moving {a} ?", "does the motion go {a} ?")),
}
WH_FACTS = ("colour_of", "kind_of", "count", "direction")
STILL_FACTS = ("colour_of", "has_colour", "kind_of", "has_kind", "count", "several")


@dataclass(frozen=True)
class Question:
    """One question: a fact about the scene and its argument (a kind, colour or direction)."""

    fact: str
    arg: str | None = None

    @property
    def qtype(self) -> str:
        return FACTS[self.fact][0]

    @property
    def family(self) -> str:
        return FACTS[self.fact][1]

    @property
    def is_wh(self) -> bool:
        return self.fact in WH_FACTS

    def templates(self) -> tuple[str, ...]:
        arg = DIRECTION_WORDS[self.arg][0] if self.fact == "moving" else self.arg
        return tuple(t.format(a=arg) for t in FACTS[self.fact][2])


@dataclass(frozen=True)
class Phrase:
    """An answer sentence and what it asserts: family, value and optional qualifier."""

    text: str
    family: str  # colour | shape | count | direction | yesno
    value: str  # "red", "circle", "2", "left", "yes", ...
    ref: str | None = None  # the kind/colour/direction it also names


def all_questions(*, video: bool) -> tuple[Question, ...]:
    """Every question that can be asked (directions only about videos)."""
    facts = tuple(FACTS) if video else STILL_FACTS
    args = {
        "colour_of": KINDS,
        "has_kind": KINDS,
        "kind_of": COLOURS,
        "has_colour": COLOURS,
        "moving": DIRECTIONS,
    }
    return tuple(Question(f, a) for f in facts for a in args.get(f, (None,)))


def content(scene: Scene) -> frozenset[tuple[str, str]]:
    """The abstract objects of a scene: its (kind, colour) pairs."""
    return frozenset((s.kind, s.colour) for s in scene.shapes)


def answer_value(question: Question, scene: Scene) -> str | None:
    """The true answer value, or None when the question does not apply (no such object)."""
    return _value(question, content(scene), scene.direction)


def _value(
    question: Question, objects: frozenset[tuple[str, str]], direction: str | None
) -> str | None:
    a = question.arg
    match question.fact:
        case "colour_of":
            return next((c for k, c in objects if k == a), None)
        case "kind_of":
            return next((k for k, c in objects if c == a), None)
        case "count":
            return str(len(objects))
        case "direction":
            return direction
        case "has_kind":
            return "yes" if any(k == a for k, _ in objects) else "no"
        case "has_colour":
            return "yes" if any(c == a for _, c in objects) else "no"
        case "several":
            return "yes" if len(objects) > 1 else "no"
        case "moving":
            return "yes" if direction == a else "no"
    raise ValueError(f"unknown fact {question.fact!r}")


def answer_phrases(question: Question, value: str) -> tuple[Phrase, ...]:
    """Phrases a dialog may use to answer `question` with `value` (all fully correct)."""
    fam, a = question.family, question.arg
    if question.fact == "colour_of":
        texts = [(f"the {a} is {value} .", a), (f"it is {value} .", None), (f"{value} .", None)]
    elif question.fact == "kind_of":
        texts = [
            (f"it is a {value} .", None),
            (f"the {a} one is a {value} .", a),
            (f"a {value} .", None),
        ]
    elif question.fact == "count":
        n = int(value)
        word = NUMBER_WORDS[n]
        if n == 1:
            texts = [("there is one shape .", None), ("just one .", None), ("one .", None)]
        else:
            texts = [
                (f"there are {word} shapes .", None),
                (f"{word} .", None),
                (f"i see {word} shapes .", None),
            ]
    elif question.fact == "direction":
        phrase = DIRECTION_WORDS[value][0]
        texts = [
            (f"everything moves {phrase} .", None),
            (f"{phrase} .", None),
            (f"the movement is {phrase} .", None),
        ]
    else:
        # A yes/no sentence names its topic; "several" has no argument, so it names the fact.
        texts = [(_yes_no_sentence(question, value), a or question.fact), (f"{value} .", None)]
    return tuple(Phrase(t, fam, value, r) for t, r in texts)


def _yes_no_sentence(question: Question, value: str) -> str:
    a = question.arg
    yes = value == "yes"
    match question.fact:
        case "has_kind":
            return f"yes , there is a {a} ." if yes else f"no , there is no {a} ."
        case "has_colour":
            return f"yes , something is {a} ." if yes else f"no , nothing is {a} ."
        case "several":
            return "yes , there is more than one ." if yes else "no , there is only one ."
        case "moving":
            words = DIRECTION_WORDS[a][0]
            return f"yes , everything moves {words} ." if yes else f"no , not {words} ."
    raise ValueError(f"{question.fact!r} is not a yes/no question")


def reference_phrases(question: Question, value: str) -> tuple[Phrase, ...]:
    """Six paraphrases of the correct answer to a wh-question (the multiref references)."""
    a = question.arg
    match question.fact:
        case "colour_of":
            texts = [
                (f"{value} .", None),
                (f"it is {value} .", None),
                (f"the {a} is {value} .", a),
                (f"the {a} is coloured {value} .", a),
                (f"it looks {value} .", None),
                (f"the {a} appears {value} .", a),
            ]
        case "kind_of":
            texts = [
                (f"a {value} .", None),
                (f"it is a {value} .", None),
                (f"the {a} object is a {value} .", a),
                (f"it looks like a {value} .", None),
                (f"that one is a {value} .", None),
                (f"the {a} one is shaped like a {value} .", a),
            ]
        case "count":
            w = NUMBER_WORDS[int(value)]
            plural = "" if w == "one" else "s"
            texts = [
                (f"{w} .", None),
                (f"there {'is' if w == 'one' else 'are'} {w} shape{plural} .", None),
                (f"i can see {w} shape{plural} .", None),
                (f"{w} shape{plural} in total .", None),
                (f"there {'is only' if w == 'one' else 'are'} {w} object{plural} .", None),
                (f"i count {w} shape{plural} .", None),
            ]
        case "direction":
            phrase, bare = DIRECTION_WORDS[value]
            texts = [
                (f"{bare} .", None),
                (f"{phrase} .", None),
                (f"everything moves {phrase} .", None),
                (f"the movement is {phrase} .", None),
                (f"it all goes {phrase} .", None),
                (f"the motion heads {phrase} .", None),
            ]
        case _:
            raise ValueError(f"{question.fact!r} has no reference paraphrases (not a wh-question)")
    return tuple(Phrase(t, question.family, value, r) for t, r in texts)


@cache
def _universe(video: bool) -> tuple[tuple[Question, ...], np.ndarray, dict]:
    """All abstract scenes, and the answer of every question in each (-1: does not apply)."""
    questions = all_questions(video=video)
    scenes: list[tuple[frozenset[tuple[str, str]], str | None]] = []
    for n in (1, 2, 3):
        for kinds in itertools.combinations(KINDS, n):
            for colours in itertools.permutations(COLOURS, n):
                objects = frozenset(zip(kinds, colours, strict=True))
                for d in DIRECTIONS if video else (None,):
                    scenes.append((objects, d))
    table = np.full((len(questions), len(scenes)), -1, dtype=np.int8)
    for j, (objects, d) in enumerate(scenes):
        for i, q in enumerate(questions):
            value = _value(q, objects, d)
            if value is not None:
                table[i, j] = _VALUES.index(value)
    index = {key: j for j, key in enumerate(scenes)}
    return questions, table, index


class Knowledge:
    """What a listener knows about one scene after some questions were answered."""

    def __init__(self, scene: Scene) -> None:
        video = scene.direction is not None
        self._questions, self._table, index = _universe(video)
        self._row = {q: i for i, q in enumerate(self._questions)}
        self._truth = index[(content(scene), scene.direction)]
        self._mask = np.ones(self._table.shape[1], dtype=bool)

    def questions(self) -> tuple[Question, ...]:
        """Questions that apply to the true scene (their presupposition holds)."""
        col = self._table[:, self._truth]
        return tuple(q for q, v in zip(self._questions, col, strict=True) if v >= 0)

    def inferable(self, question: Question, *, after: Question | None = None) -> bool:
        """Whether the answer follows from what is known (plus `after`, if given)."""
        mask = self._mask if after is None else self._mask & self._agrees(after)
        values = self._table[self._row[question], mask]
        values = values[values >= 0]
        return values.size == 0 or values.min() == values.max()

    def unknown(self) -> dict[Question, bool]:
        """For every applicable question: whether its answer does not follow yet."""
        spread = _spread(self._table[:, self._mask], np.ones(1, dtype=bool))
        return {q: bool(spread[self._row[q]]) for q in self.questions()}

    def keeps_unknown(self, scored: Question) -> dict[Question, bool]:
        """For every applicable question: whether answering it next leaves `scored` open."""
        sub = self._table[:, self._mask]
        agree = sub == self._table[:, self._truth, None]
        spread = _spread(self._table[self._row[scored], self._mask][None, :], agree)
        return {q: bool(spread[self._row[q]]) for q in self.questions()}

    def tell(self, question: Question) -> None:
        """Record that `question` was asked and truthfully answered."""
        self._mask &= self._agrees(question)

    def _agrees(self, question: Question) -> np.ndarray:
        row = self._table[self._row[question]]
        return row == row[self._truth]


def _spread(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Per row: whether the valid (>= 0) `values` selected by `where` take 2+ distinct values."""
    keep = where & (values >= 0)
    return np.where(keep, values, -1).max(1) > np.where(keep, values, 127).min(1)
