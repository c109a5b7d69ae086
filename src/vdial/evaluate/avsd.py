"""AVSD answer-generation metrics on the scored (last) turn of each dialog.

The AVSD challenges (DSTC7, DSTC8, DSTC10) score one generated answer per dialog, the answer
to its last question, against one reference (DSTC7/DSTC8: `"answer"` is a string) or six
(DSTC10 multiref: `"answer"` is a list) with coco-caption's BLEU-1..4, ROUGE-L and CIDEr. Here
both sides are normalised in process (`vdial.evaluate.text.normalize`) and scored with
pycocoevalcap's own scorers; `exact_match` is added because short factual answers (synthetic
data, yes/no questions) are often judged better by it than by n-gram overlap.

Turns are 0-based, as in the manifests' `turn` column. Dialog ids are the files' `image_id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdial.evaluate.text import normalize

UNDISCLOSED = "__UNDISCLOSED__"
PROTOCOL = "avsd/last-turn"
NORMALISATION = "vdial-inprocess-ptb"
METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "exact_match")


class EvaluationError(ValueError):
    """Malformed or mismatched evaluation input; the message names the file and location."""


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The scored turn of one dialog."""

    dialog_id: str  # the file's image_id
    turn: int  # 0-based index of the scored (last) turn
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


def load_references(path: str | Path) -> dict[str, Reference]:
    """The scored turn of every dialog of an AVSD reference file, keyed by dialog id.

    Accepts the DSTC7/DSTC8 format (the last answer is a string) and the DSTC10 multiref
    format (a list of strings, with "reason"). A challenge *input* file, whose last answers
    are `__UNDISCLOSED__`, is an error.
    """
    path = Path(path)
    references: dict[str, Reference] = {}
    undisclosed: list[str] = []
    for dialog_id, turns, where in _dialogs(read_json(path), path):
        t = len(turns) - 1
        last, loc = turns[t], f"{where}.dialog[{t}]"
        question = _require(last.get("question"), str, f"{loc}.question")
        answer = last["answer"]
        if isinstance(answer, list):
            if not answer:
                raise EvaluationError(f"{loc}.answer ({dialog_id}): empty reference list")
            answers = tuple(_require(a, str, f"{loc}.answer[{k}]") for k, a in enumerate(answer))
        else:
            answers = (_require(answer, str, f"{loc}.answer"),)
        if UNDISCLOSED in answers:
            undisclosed.append(f"{loc.removeprefix(f'{path}: ')} ({dialog_id})")
        references[dialog_id] = Reference(
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


def load_predictions(
    path: str | Path, *, references: Mapping[str, Reference] | None = None
) -> dict[str, str]:
    """Generated answers keyed by dialog id, from any of three formats.

    (a) the challenge's test JSON with the last answer of each dialog filled in;
    (b) a list of {"dialog_id": str, "turn": int (0-based), "answer": str}, of which the
        highest turn of each dialog is kept; (c) a mapping {dialog_id: answer}.
    With `references`, a last turn in (a) or (b) that is not the scored turn is an error.
    """
    path = Path(path)
    data = read_json(path)
    predictions: dict[str, str] = {}
    if isinstance(data, dict) and isinstance(data.get("dialogs"), list):
        for dialog_id, turns, where in _dialogs(data, path):
            t = len(turns) - 1
            answer = _require(turns[t]["answer"], str, f"{where}.dialog[{t}].answer")
            if answer == UNDISCLOSED:
                raise EvaluationError(
                    f"{where}.dialog[{t}] ({dialog_id}): the answer is still {UNDISCLOSED}"
                )
            _check_turn(dialog_id, t, references, where)
            predictions[dialog_id] = answer
    elif isinstance(data, list):
        last: dict[str, tuple[int, str, str]] = {}
        for i, row in enumerate(data):
            where = f"{path}: [{i}]"
            _require(row, dict, where)
            for key in ("dialog_id", "turn", "answer"):
                if key not in row:
                    raise EvaluationError(f"{where}: missing {key!r}")
            dialog_id = _require(row["dialog_id"], str, f"{where}.dialog_id")
            turn = _require(row["turn"], int, f"{where}.turn")
            answer = _require(row["answer"], str, f"{where}.answer")
            previous = last.get(dialog_id)
            if previous is not None and previous[0] == turn:
                raise EvaluationError(f"{where} ({dialog_id}): turn {turn} predicted twice")
            if previous is None or turn > previous[0]:
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


def _scores(hypotheses: dict[str, str], refs: dict[str, list[str]]) -> dict[str, float]:
    """coco-caption metrics plus exact match over normalised text (same keys, same order)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res = {k: [hypotheses[k]] for k in refs}
    bleu, _ = Bleu(4).compute_score(refs, res, verbose=0)
    rouge, _ = Rouge().compute_score(refs, res)
    cider, _ = Cider().compute_score(refs, res)
    exact = sum(hypotheses[k] in refs[k] for k in refs) / len(refs)
    values = [*bleu, rouge, cider, exact]
    return {key: float(v) for key, v in zip(METRIC_KEYS, values, strict=True)}


def evaluate_avsd(
    predictions: Mapping[str, str],
    references: Mapping[str, Reference],
    *,
    question_types: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Score `predictions` against `references`, overall and per question type.

    Dialogs without a prediction are scored as empty answers and listed under "missing";
    a prediction for a dialog absent from the references is an error (mismatched files).
    Per-type scores are computed on each type's dialogs alone, so CIDEr's document
    frequencies come from that subset, as if it had been evaluated on its own.
    """
    if not references:
        raise EvaluationError("no references to score against")
    unknown = sorted(set(predictions) - set(references))
    if unknown:
        raise EvaluationError(
            f"{len(unknown)} predicted dialog(s) are not in the references, e.g. {unknown[:5]}"
        )
    ids = sorted(references)
    missing = [k for k in ids if k not in predictions]
    hyps = {k: normalize(predictions.get(k, "")) for k in ids}
    refs = {k: [normalize(a) for a in references[k].answers] for k in ids}
    result: dict[str, Any] = {
        "protocol": PROTOCOL,
        "normalisation": NORMALISATION,
        "n": len(ids),
        "missing": missing,
        "overall": _scores(hyps, refs),
        "by_type": {},
    }
    if question_types is not None:
        absent = [k for k in ids if k not in question_types]
        if absent:
            raise EvaluationError(
                f"question types: {len(absent)} scored dialog(s) have no entry, e.g. {absent[:5]}"
            )
        groups: dict[str, list[str]] = {}
        for k in ids:
            types = question_types[k]
            turn = references[k].turn
            if turn >= len(types):
                raise EvaluationError(
                    f"question types: dialog {k!r} lists {len(types)} turn(s), "
                    f"the scored turn is {turn}"
                )
            groups.setdefault(types[turn], []).append(k)
        for kind in sorted(groups):
            members = groups[kind]
            scores = _scores({k: hyps[k] for k in members}, {k: refs[k] for k in members})
            result["by_type"][kind] = {**scores, "n": len(members)}
    return result
