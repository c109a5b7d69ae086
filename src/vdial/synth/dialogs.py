"""Dialogs about synthetic scenes: AVSD-style video dialogs and VisDial-style image dialogs.

AVSD: 6-8 turns per video. A turn prefers questions whose answer does not follow from the
earlier turns, so dialogs do not repeat themselves. A test dialog is cut after a random
turn, the scored one; its type is given by the caller (cycling over the four types keeps
the test set balanced), and every history turn is chosen so that the scored answer stays
unknowable from the history: it can only come from the pixels.

VisDial: 10 rounds of distinct colour/shape/count questions per image (1-10 in test), each
with 100 answer options drawn from a fixed pool of answer sentences: the ground truth,
its paraphrases, partly right answers and wrong ones. `relevance` grades an option for the
dense annotations: 1 for a fully right answer, 0.5 for the right value with the wrong
qualifier (or a right yes/no about another topic), 0 otherwise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

from vdial.synth.questions import (
    STILL_FACTS,
    WH_FACTS,
    Knowledge,
    Phrase,
    Question,
    all_questions,
    answer_phrases,
    answer_value,
    reference_phrases,
)
from vdial.synth.scenes import COLOURS, KINDS, QUESTION_TYPES, Scene

UNDISCLOSED = "__UNDISCLOSED__"
OPTIONS = 100
VISDIAL_ROUNDS = 10
AVSD_TURNS = (6, 8)
# How often a history turn is an open (wh) question rather than a yes/no one.
WH_PREFERENCE = 0.7

# Captions and summaries name the background only: never a colour of a shape, a kind, a
# number or a direction, and nothing singular or plural that would give the count away.
VIDEO_CAPTIONS = (
    "something moves across a {bg} background .",
    "a short animated clip on a {bg} background .",
    "simple graphics slide over a {bg} background .",
)
VIDEO_SUMMARIES = (
    "an animation plays on a {bg} background .",
    "the clip shows motion on a {bg} background .",
    "flat graphics travel over a {bg} backdrop .",
)
IMAGE_CAPTIONS = (
    "a simple drawing on a {bg} background",
    "flat graphics on a {bg} background",
    "a synthetic picture with a {bg} background",
)


@dataclass(frozen=True, kw_only=True)
class Turn:
    """A question and its true answer."""

    question: Question  # what is asked
    text: str  # how it is asked
    answer: Phrase  # the answer given (always true)


@dataclass(frozen=True, kw_only=True)
class AvsdDialog:
    """One AVSD dialog; for a test dialog the last turn is the scored one."""

    id: str  # video id, "shapes_00000"
    split: str  # train | val | test
    scene: Scene  # ground truth
    caption: str  # uninformative caption
    summary: str  # uninformative summary
    turns: tuple[Turn, ...]  # all turns with true answers
    references: tuple[str, ...] = ()  # test only: 6 paraphrases of the scored answer
    evidence: str = ""  # test only: the sentence of the "reason" annotation


@dataclass(frozen=True, kw_only=True)
class VisdialDialog:
    """One VisDial dialog with its answer options (indices into `answer_pool()`)."""

    image_id: int  # unique over all splits
    split: str  # train | val | test
    scene: Scene  # ground truth
    caption: str  # uninformative caption
    rounds: tuple[Turn, ...]  # 10 rounds (train/val) or 1-10 (test), true answers
    options: tuple[tuple[int, ...], ...]  # per round: 100 answer-pool indices
    gt_index: tuple[int, ...]  # per round: position of the true answer in `options`
    dense_round: int | None = None  # val: the 1-based round with dense relevance


def _pick(rng: random.Random, pool: list[Question]) -> Question:
    """A type uniformly among those available, then mostly an open question of that type."""
    types = [t for t in QUESTION_TYPES if any(q.qtype == t for q in pool)]
    qtype = rng.choice(types)
    same = [q for q in pool if q.qtype == qtype]
    wh = [q for q in same if q.is_wh]
    yes_no = [q for q in same if not q.is_wh]
    if wh and (not yes_no or rng.random() < WH_PREFERENCE):
        return rng.choice(wh)
    return rng.choice(yes_no)


def _turn(rng: random.Random, question: Question, scene: Scene) -> Turn:
    value = answer_value(question, scene)
    if value is None:
        raise ValueError(f"{question} does not apply to the scene")
    return Turn(
        question=question,
        text=rng.choice(question.templates()),
        answer=rng.choice(answer_phrases(question, value)),
    )


def scored_question(rng: random.Random, scene: Scene, qtype: str) -> Question:
    """The open question of type `qtype` asked in a scored test turn."""
    match qtype:
        case "colour":
            return Question("colour_of", rng.choice(sorted(s.kind for s in scene.shapes)))
        case "shape":
            return Question("kind_of", rng.choice(sorted(s.colour for s in scene.shapes)))
        case "count":
            return Question("count")
        case "direction":
            if scene.direction is None:
                raise ValueError("a still image has no direction to ask about")
            return Question("direction")
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


def avsd_turns(
    rng: random.Random, scene: Scene, n_history: int, scored: Question | None = None
) -> tuple[Turn, ...]:
    """`n_history` turns, then the `scored` question (if any), not inferable from them."""
    know = Knowledge(scene)
    asked: set[Question] = set()
    turns = []
    for _ in range(n_history):
        unknown = know.unknown()
        # Without a scored question every applicable question is allowed.
        hides = know.keeps_unknown(scored) if scored is not None else dict.fromkeys(unknown, True)
        candidates = [q for q in unknown if q not in asked and q != scored and hides[q]]
        fresh = [q for q in candidates if unknown[q]]
        if not candidates:
            raise RuntimeError(f"no question left for a history of {n_history} turns: {scene}")
        question = _pick(rng, fresh or candidates)
        turns.append(_turn(rng, question, scene))
        know.tell(question)
        asked.add(question)
    if scored is not None:
        if know.inferable(scored):
            raise RuntimeError(f"scored question {scored} became inferable")
        turns.append(_turn(rng, scored, scene))
    return tuple(turns)


def avsd_dialog(
    rng: random.Random, *, id: str, split: str, scene: Scene, scored_type: str | None = None
) -> AvsdDialog:
    """A full dialog (train/val), or a test dialog cut after its scored turn."""
    bg = scene.background
    caption = rng.choice(VIDEO_CAPTIONS).format(bg=bg)
    summary = rng.choice(VIDEO_SUMMARIES).format(bg=bg)
    length = rng.randint(*AVSD_TURNS)
    if scored_type is None:
        turns = avsd_turns(rng, scene, length)
        return AvsdDialog(
            id=id, split=split, scene=scene, caption=caption, summary=summary, turns=turns
        )
    scored = scored_question(rng, scene, scored_type)
    cut = rng.randint(1, length)
    turns = avsd_turns(rng, scene, cut - 1, scored)
    refs = reference_phrases(scored, turns[-1].answer.value)
    # The reason sentence states the evidence in full: "the circle is red .".
    evidence = refs[1 if scored.fact == "count" else 2].text
    return AvsdDialog(
        id=id,
        split=split,
        scene=scene,
        caption=caption,
        summary=summary,
        turns=turns,
        references=tuple(r.text for r in refs),
        evidence=evidence,
    )


def plain(text: str) -> str:
    """VisDial spelling: no space before commas, no final " ?" or " ."."""
    return text.removesuffix(" ?").removesuffix(" .").replace(" , ", ", ")


@cache
def answer_pool() -> tuple[Phrase, ...]:
    """Every answer sentence about a still image, VisDial-spelled, each once, fixed order."""
    seen: dict[str, Phrase] = {}
    values = {"colour_of": COLOURS, "kind_of": KINDS, "count": ("1", "2", "3")}
    for question in all_questions(video=False):
        for value in values.get(question.fact, ("yes", "no")):
            phrases = answer_phrases(question, value)
            if question.fact in WH_FACTS:
                phrases += reference_phrases(question, value)
            for p in phrases:
                text = plain(p.text)
                seen.setdefault(text, Phrase(text, p.family, p.value, p.ref))
    return tuple(seen.values())


def relevance(question: Question, value: str, option: Phrase) -> float:
    """Graded relevance of `option` as an answer to `question` whose true answer is `value`."""
    if option.family != question.family or option.value != value:
        return 0.0
    # A yes/no sentence's ref is its topic; "several" has no argument, so its topic is the fact.
    topic = (question.arg or question.fact) if question.family == "yesno" else question.arg
    return 1.0 if option.ref in (None, topic) else 0.5


@cache
def _pool_index() -> tuple[dict[str, int], dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Pool lookups: text -> index, family -> its indices, family -> all other indices."""
    pool = answer_pool()
    families = sorted({p.family for p in pool})
    same = {f: tuple(i for i, p in enumerate(pool) if p.family == f) for f in families}
    other = {f: tuple(i for i, p in enumerate(pool) if p.family != f) for f in families}
    return {p.text: i for i, p in enumerate(pool)}, same, other


def _options(rng: random.Random, turn: Turn) -> tuple[tuple[int, ...], int]:
    """100 pool indices: the truth, every same-family sentence, then random others."""
    by_text, same, other = _pool_index()
    gt = by_text[plain(turn.answer.text)]
    family = [i for i in same[turn.question.family] if i != gt]
    chosen = [gt, *rng.sample(family, min(len(family), OPTIONS - 1))]
    chosen += rng.sample(other[turn.question.family], OPTIONS - len(chosen))
    rng.shuffle(chosen)
    return tuple(chosen), chosen.index(gt)


def visdial_dialog(rng: random.Random, *, image_id: int, split: str, scene: Scene) -> VisdialDialog:
    """10 rounds (train/val) or 1-10 (test) of distinct questions with answer options."""
    n_rounds = rng.randint(1, VISDIAL_ROUNDS) if split == "test" else VISDIAL_ROUNDS
    applicable = [q for q in Knowledge(scene).questions() if q.fact in STILL_FACTS]
    rounds: list[Turn] = []
    for _ in range(n_rounds):
        asked = {t.question for t in rounds}
        question = _pick(rng, [q for q in applicable if q not in asked])
        rounds.append(_turn(rng, question, scene))
    options, gt_index = zip(*(_options(rng, t) for t in rounds), strict=True)
    return VisdialDialog(
        image_id=image_id,
        split=split,
        scene=scene,
        caption=rng.choice(IMAGE_CAPTIONS).format(bg=scene.background),
        rounds=tuple(rounds),
        options=tuple(options),
        gt_index=tuple(gt_index),
        dense_round=rng.randint(1, n_rounds) if split == "val" else None,
    )
