"""AVSD answer-generation metrics, on the last turn (the challenge protocol) or on every turn.

The AVSD challenges (DSTC7, DSTC8, DSTC10) score one generated answer per dialog, the answer
to its last question, against one reference (DSTC7/DSTC8: `"answer"` is a string) or six
(DSTC10 multiref: `"answer"` is a list) with coco-caption's BLEU-1..4, METEOR, ROUGE-L and
CIDEr-D ("avsd/last-turn"). "avsd/all-turns" scores every turn instead, earlier turns against
their single answer; predictions are then keyed by (dialog id, turn). Text goes through a
scorer back end (`vdial.evaluate.coco`): the official Java pipeline or the fast in-process
one. `exact_match` is added because short factual answers (synthetic data, yes/no questions)
are often judged better by it than by n-gram overlap.

Turns are 0-based, as in the manifests' `turn` column. Dialog ids are the files' `image_id`.
Last-turn results are keyed by dialog id, all-turn results by (dialog id, turn).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdial.evaluate.coco import COCO_KEYS, Scorer, make_scorer

UNDISCLOSED = "__UNDISCLOSED__"
TURNS = ("last", "all")
PROTOCOLS = {"last": "avsd/last-turn", "all": "avsd/all-turns"}
METRIC_KEYS = (*COCO_KEYS, "exact_match")

# A scored item: the dialog id (last turn) or (dialog id, 0-based turn) (all turns).
Key = str | tuple[str, int]


class EvaluationError(ValueError):
    """Malformed or mismatched evaluation input; the message names the file and location."""


@dataclass(frozen=True, kw_only=True)
class Reference:
    """One scored turn of a dialog."""

    dialog_id: str  # the file's image_id
    turn: int  # 0-based index of the scored turn
    question: str  # the question being answered
    answers: tuple[str, ...]  # reference answers: 1 (DSTC7/8) or 6 (DSTC10 multiref)


def read_json(path: Path) -> Any:
    """Parsed JSON of `path`; a missing or invalid file is an EvaluationError naming it."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise EvaluationError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None


def _require(value: Any, kind: type, where: str) -> Any:
    # bool is an int subclass; a turn of `true` is malformed, not turn 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EvaluationError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _dialogs(data: Any, path: Path) -> list[tuple[str, list[dict[str, Any]], str]]:
    """(image_id, turns, location) of each dialog in an AVSD-format file."""
    if not isinstance(data, dict) or not isinstance(data.get("dialogs"), list):
        raise EvaluationError(f"{path}: expected an AVSD file with a top-level 'dialogs' list")
    out, seen = [], set()
    for i, dialog in enumerate(data["dialogs"]):
        where = f"{path}: dialogs[{i}]"
        _require(dialog, dict, where)
        for key in ("image_id", "dialog"):
            if key not in dialog:
                raise EvaluationError(f"{where}: missing {key!r}")
        dialog_id = _require(dialog["image_id"], str, f"{where}.image_id")
        turns = _require(dialog["dialog"], list, f"{where}.dialog")
        if not turns:
            raise EvaluationError(f"{where} ({dialog_id}): the dialog has no turns")
        for t, turn in enumerate(turns):
            _require(turn, dict, f"{where}.dialog[{t}]")
            if "answer" not in turn:
                raise EvaluationError(f"{where}.dialog[{t}] ({dialog_id}): missing 'answer'")
        if dialog_id in seen:
            raise EvaluationError(f"{where}: duplicate image_id {dialog_id!r}")
        seen.add(dialog_id)
        out.append((dialog_id, turns, where))
    if not out:
        raise EvaluationError(f"{path}: the file has no dialogs")
    return out


def _check_turns(turns: str) -> None:
    if turns not in TURNS:
        raise ValueError(f"unknown turns {turns!r}; expected one of {TURNS}")


def _answers(answer: Any, loc: str, dialog_id: str) -> tuple[str, ...]:
    if isinstance(answer, list):
        if not answer:
            raise EvaluationError(f"{loc}.answer ({dialog_id}): empty reference list")
        return tuple(_require(a, str, f"{loc}.answer[{k}]") for k, a in enumerate(answer))
    return (_require(answer, str, f"{loc}.answer"),)


def load_references(path: str | Path, *, turns: str = "last") -> dict[Any, Reference]:
    """The scored turns of an AVSD reference file: {dialog_id: Reference} for `turns="last"`,
    {(dialog_id, turn): Reference} for `turns="all"`.

    Accepts the DSTC7/DSTC8 format (answers are strings) and the DSTC10 multiref format (the
    last answer is a list of strings, with "reason"). A challenge *input* file, whose last
    answers are `__UNDISCLOSED__`, is an error.
    """
    _check_turns(turns)
    path = Path(path)
    references: dict[Any, Reference] = {}
    undisclosed: list[str] = []
    for dialog_id, dialog, where in _dialogs(read_json(path), path):
        last = len(dialog) - 1
        for t in range(last if turns == "last" else 0, last + 1):
            loc = f"{where}.dialog[{t}]"
            question = _require(dialog[t].get("question"), str, f"{loc}.question")
            answers = _answers(dialog[t]["answer"], loc, dialog_id)
            if UNDISCLOSED in answers:
                undisclosed.append(f"{loc.removeprefix(f'{path}: ')} ({dialog_id})")
            key = dialog_id if turns == "last" else (dialog_id, t)
            references[key] = Reference(
                dialog_id=dialog_id, turn=t, question=question, answers=answers
            )
    if undisclosed:
        more = f" and {len(undisclosed) - 1} more" if len(undisclosed) > 1 else ""
        raise EvaluationError(
            f"{path}: {undisclosed[0]}{more}: the scored answer is {UNDISCLOSED}; this is a "
            "challenge input file, not a reference file"
        )
    return references


def _check_turn(
    dialog_id: str, turn: int, references: Mapping[str, Reference] | None, where: str
) -> None:
    ref = references.get(dialog_id) if references is not None else None
    if ref is not None and ref.turn != turn:
        raise EvaluationError(
            f"{where} ({dialog_id}): predicted turn {turn} is not the scored turn {ref.turn}"
        )


def _turn_rows(data: list[Any], path: Path) -> dict[tuple[str, int], tuple[str, str]]:
    """{(dialog_id, turn): (answer, location)} of a list of turn predictions."""
    rows: dict[tuple[str, int], tuple[str, str]] = {}
    for i, row in enumerate(data):
        where = f"{path}: [{i}]"
        _require(row, dict, where)
        for key in ("dialog_id", "turn", "answer"):
            if key not in row:
                raise EvaluationError(f"{where}: missing {key!r}")
        dialog_id = _require(row["dialog_id"], str, f"{where}.dialog_id")
        turn = _require(row["turn"], int, f"{where}.turn")
        answer = _require(row["answer"], str, f"{where}.answer")
        if (dialog_id, turn) in rows:
            raise EvaluationError(f"{where} ({dialog_id}): turn {turn} predicted twice")
        rows[dialog_id, turn] = (answer, where)
    return rows


def load_predictions(
    path: str | Path,
    *,
    references: Mapping[Any, Reference] | None = None,
    turns: str = "last",
) -> dict[Any, str]:
    """Generated answers keyed like `load_references(..., turns=turns)`.

    For `turns="last"`, any of three formats: (a) the challenge's test JSON with the last
    answer of each dialog filled in; (b) a list of {"dialog_id": str, "turn": int (0-based),
    "answer": str}, of which the highest turn of each dialog is kept; (c) a mapping
    {dialog_id: answer}. With `references`, a last turn in (a) or (b) that is not the scored
    turn is an error. For `turns="all"`, only (b): the other formats do not say which turn an
    answer is for (a filled-in test file holds the ground truth in its earlier turns).
    """
    _check_turns(turns)
    path = Path(path)
    data = read_json(path)
    if turns == "all":
        if not isinstance(data, list):
            raise EvaluationError(
                f"{path}: scoring all turns needs predictions keyed by dialog and turn, a list "
                f'of {{"dialog_id", "turn", "answer"}}; got {type(data).__name__}'
            )
        predictions: dict[Any, str] = {}
        for (dialog_id, turn), (answer, where) in _turn_rows(data, path).items():
            if references is not None and (dialog_id, turn) not in references:
                raise EvaluationError(
                    f"{where} ({dialog_id}): turn {turn} is not a turn of the references"
                )
            predictions[dialog_id, turn] = answer
        return predictions
    predictions = {}
    if isinstance(data, dict) and isinstance(data.get("dialogs"), list):
        for dialog_id, dialog, where in _dialogs(data, path):
            t = len(dialog) - 1
            answer = _require(dialog[t]["answer"], str, f"{where}.dialog[{t}].answer")
            if answer == UNDISCLOSED:
                raise EvaluationError(
                    f"{where}.dialog[{t}] ({dialog_id}): the answer is still {UNDISCLOSED}"
                )
            _check_turn(dialog_id, t, references, where)
            predictions[dialog_id] = answer
    elif isinstance(data, list):
        last: dict[str, tuple[int, str, str]] = {}
        for (dialog_id, turn), (answer, where) in _turn_rows(data, path).items():
            if dialog_id not in last or turn > last[dialog_id][0]:
                last[dialog_id] = (turn, answer, where)
        for dialog_id, (turn, answer, where) in last.items():
            _check_turn(dialog_id, turn, references, where)
            predictions[dialog_id] = answer
    elif isinstance(data, dict):
        for dialog_id, answer in data.items():
            predictions[dialog_id] = _require(answer, str, f"{path}: [{dialog_id!r}]")
    else:
        raise EvaluationError(
            f"{path}: expected an AVSD test file, a list of turn predictions or a "
            f"{{dialog_id: answer}} mapping, got {type(data).__name__}"
        )
    return predictions


def load_question_types(path: str | Path) -> dict[str, list[str]]:
    """{dialog_id: [question type of each turn]} from a JSON file."""
    path = Path(path)
    data = _require(read_json(path), dict, str(path))
    for dialog_id, types in data.items():
        where = f"{path}: [{dialog_id!r}]"
        for k, kind in enumerate(_require(types, list, where)):
            _require(kind, str, f"{where}[{k}]")
    return data


def _scores(
    scorer: Scorer, hyps: Mapping[Key, str], refs: Mapping[Key, list[str]], keys: list[Key]
) -> dict[str, float | None]:
    """coco-caption metrics plus exact match of the normalised text of `keys`."""
    scores: dict[str, float | None] = dict(
        scorer.score({k: refs[k] for k in keys}, {k: hyps[k] for k in keys})
    )
    scores["exact_match"] = sum(hyps[k] in refs[k] for k in keys) / len(keys)
    return scores


def _group_by_type(
    keys: list[Key], references: Mapping[Any, Reference], question_types: Mapping[str, list[str]]
) -> dict[str, list[Key]]:
    """{question type of the scored turn: its items}, types in sorted order."""
    absent = sorted({references[k].dialog_id for k in keys} - set(question_types))
    if absent:
        raise EvaluationError(
            f"question types: {len(absent)} scored dialog(s) have no entry, e.g. {absent[:5]}"
        )
    groups: dict[str, list[Key]] = {}
    for k in keys:
        ref = references[k]
        types = question_types[ref.dialog_id]
        if ref.turn >= len(types):
            raise EvaluationError(
                f"question types: dialog {ref.dialog_id!r} lists {len(types)} turn(s), "
                f"the scored turn is {ref.turn}"
            )
        groups.setdefault(types[ref.turn], []).append(k)
    return {kind: groups[kind] for kind in sorted(groups)}


def evaluate_avsd(
    predictions: Mapping[Any, str],
    references: Mapping[Any, Reference],
    *,
    turns: str = "last",
    question_types: Mapping[str, list[str]] | None = None,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """Score `predictions` against `references` (both keyed as `turns` says), overall and per
    question type, with `scorer` (default: `make_scorer()`, official where Java exists).

    Items without a prediction are scored as empty answers and listed under "missing";
    a prediction for an item absent from the references is an error (mismatched files).
    Per-type scores are computed on each type's items alone, so CIDEr's document
    frequencies come from that subset, as if it had been evaluated on its own.
    """
    _check_turns(turns)
    if not references:
        raise EvaluationError("no references to score against")
    keyed_by_turn = turns == "all"
    if any(isinstance(k, tuple) != keyed_by_turn for k in references):
        shape = "(dialog_id, turn)" if keyed_by_turn else "dialog_id"
        raise EvaluationError(f"scoring turns={turns!r} needs references keyed by {shape}")
    unknown = sorted(set(predictions) - set(references), key=str)
    if unknown:
        raise EvaluationError(
            f"{len(unknown)} prediction(s) are not in the references, e.g. {unknown[:5]}"
        )
    scorer = make_scorer() if scorer is None else scorer
    keys = sorted(references)
    missing = [k for k in keys if k not in predictions]
    groups = {} if question_types is None else _group_by_type(keys, references, question_types)
    # One normalisation batch for both sides: the official scorer pays one JVM start for it.
    texts = [predictions.get(k, "") for k in keys]
    texts += [a for k in keys for a in references[k].answers]
    normalised = iter(scorer.normalize(texts))
    hyps = {k: next(normalised) for k in keys}
    refs = {k: [next(normalised) for _ in references[k].answers] for k in keys}
    overall = _scores(scorer, hyps, refs, keys)
    by_type = {
        kind: {**_scores(scorer, hyps, refs, members), "n": len(members)}
        for kind, members in groups.items()
    }
    return {
        "protocol": PROTOCOLS[turns],
        "scorer": scorer.name,
        "normalisation": scorer.normalisation,
        # Read after scoring: the official scorer learns on first use whether METEOR runs.
        "meteor": scorer.meteor,
        "n": len(keys),
        "missing": [list(k) for k in missing] if keyed_by_turn else missing,
        "overall": overall,
        "by_type": by_type,
    }
