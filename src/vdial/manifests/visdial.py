"""Reader for VisDial v1.0 dialog files and dense relevance annotations -> Manifest.

Dialog files (train / val / test)::

    {"version": "1.0", "split": "val2018",
     "data": {"questions": [str], "answers": [str],
              "dialogs": [{"image_id": int, "caption": str,
                           "dialog": [{"question": q, "answer": a,
                                       "answer_options": [100 answer indices], "gt_index": g}]}]}}

Questions, answers and options are indices into the shared string lists, and
`answer_options[gt_index] == answer`. Test dialogs stop at a random round and carry a 1-based
"round_id" (the round to answer); their earlier rounds have question and answer only, and the
last round has question and answer_options only.

Dense files are lists of {"image_id", "round_id", "gt_relevance"} (val) or {..., "relevance"}
(train sample), one annotated round per image; "round_id" is 1-based in both (the reference
NDCG code indexes rounds with `round_id - 1`), so it maps to our 0-based `turn` as round_id - 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vdial.manifests.locate import Where, load_json
from vdial.manifests.manifest import Manifest
from vdial.manifests.media import ImageIndex
from vdial.manifests.schema import DIALOG_SCHEMA, MEDIA_SCHEMA, TableBuilder, media_row

NUM_OPTIONS = 100


def _index(where: Where, turn: dict[str, Any], key: str, table: list[str]) -> int | None:
    value = where.field(turn, key, int, optional=True)
    if value is not None and not 0 <= value < len(table):
        raise where.error(f"'{key}' index {value} out of range 0..{len(table) - 1}")
    return value


def _options(where: Where, turn: dict[str, Any], answers: list[str]) -> list[int] | None:
    if "answer_options" not in turn:
        return None
    options = where.items(turn, "answer_options", int)
    if len(options) != NUM_OPTIONS:
        raise where.error(f"'answer_options' has {len(options)} entries, expected {NUM_OPTIONS}")
    if min(options) < 0 or max(options) >= len(answers):
        k, option = next((k, o) for k, o in enumerate(options) if not 0 <= o < len(answers))
        at = where.key("answer_options").at(k)
        raise at.error(f"answer index {option} out of range 0..{len(answers) - 1}")
    return options


def _dense(path: Path) -> dict[tuple[int, int], tuple[list[float], Where]]:
    """(image_id, 0-based turn) -> (relevance, location) from one dense annotation file."""
    top = Where(path)
    entries = load_json(path)
    if not isinstance(entries, list):
        raise top.error("dense annotations must be a list of objects")
    found: dict[tuple[int, int], tuple[list[float], Where]] = {}
    for i, raw in enumerate(entries):
        at = top.at(i)
        entry = at.object(raw)
        image_id = at.field(entry, "image_id", int)
        round_id = at.field(entry, "round_id", int)
        # the val file says "gt_relevance", the train sample says "relevance"
        key = "gt_relevance" if "gt_relevance" in entry else "relevance"
        if key not in entry:
            raise at.error("missing 'gt_relevance' (or 'relevance')")
        scores = at.items(entry, key, float)
        if len(scores) != NUM_OPTIONS:
            raise at.error(f"'{key}' has {len(scores)} scores, expected {NUM_OPTIONS}")
        if (image_id, round_id - 1) in found:
            raise at.error(
                f"duplicate annotation for image_id {image_id} round_id {round_id}, "
                f"first at {found[image_id, round_id - 1][1]}"
            )
        found[image_id, round_id - 1] = ([float(s) for s in scores], at)
    return found


def _round(
    where: Where,
    turn: dict[str, Any],
    questions: list[str],
    answers: list[str],
    relevance: tuple[list[float], Where] | None,
) -> dict[str, Any]:
    """The per-round columns of one dialog row, with indices resolved to strings."""
    question = _index(where, turn, "question", questions)
    if question is None:
        raise where.error("missing 'question'")
    answer = _index(where, turn, "answer", answers)
    options = _options(where, turn, answers)
    gt_index = where.field(turn, "gt_index", int, optional=True)
    if gt_index is not None:
        if options is None:
            raise where.error("'gt_index' without 'answer_options'")
        if not 0 <= gt_index < NUM_OPTIONS:
            raise where.error(f"'gt_index' {gt_index} out of range 0..{NUM_OPTIONS - 1}")
        if answer is not None and options[gt_index] != answer:
            raise where.error(
                f"answer_options[gt_index={gt_index}] is answer {options[gt_index]}, "
                f"but 'answer' is {answer}"
            )
    if relevance is not None and options is None:
        raise relevance[1].error(f"relevance for a round without answer_options (see {where})")
    return {
        "question": questions[question],
        "answer": answers[answer] if answer is not None else None,
        "answers": [answers[answer]] if answer is not None else [],
        "summary": None,
        "reason": None,
        "answer_options": list(map(answers.__getitem__, options)) if options is not None else None,
        "gt_index": gt_index,
        "relevance": relevance[0] if relevance is not None else None,
        "source": where.source,
    }


def _read_file(
    path: Path,
    split: str,
    dense: dict[tuple[int, int], tuple[list[float], Where]],
    images: ImageIndex | None,
    seen: dict[int, str],
    media: TableBuilder,
    dialogs: TableBuilder,
) -> None:
    top = Where(path)
    root = top.object(load_json(path))
    data = top.field(root, "data", dict)
    # the file's own split name ("val2018") tells VisualDialog_val2018_* from COCO_val2014_*
    declared = top.field(root, "split", str, optional=True)
    hints = tuple(dict.fromkeys(h for h in (declared, split) if h))
    at_data = top.key("data")
    questions = at_data.items(data, "questions", str)
    answers = at_data.items(data, "answers", str)
    rounds_of: dict[int, int] = {}
    for i, raw in enumerate(at_data.items(data, "dialogs", dict)):
        at = at_data.key("dialogs").at(i)
        image_id = at.field(raw, "image_id", int)
        if image_id in seen:
            raise at.error(f"duplicate image_id {image_id}, first seen at {seen[image_id]}")
        seen[image_id] = f"{at} (split '{split}')"
        caption = at.field(raw, "caption", str, optional=True)
        turns = at.items(raw, "dialog", dict)
        if not turns:
            raise at.error("'dialog' has no rounds")
        round_id = at.field(raw, "round_id", int, optional=True)
        if round_id is not None and round_id != len(turns):
            raise at.error(f"'round_id' is {round_id} but the dialog has {len(turns)} round(s)")
        rounds_of[image_id] = len(turns)
        media_id = str(image_id)
        found = images.find(image_id, hints) if images is not None else None
        media.add(media_row(id=media_id, path=found, kind="image", split=split))
        for j, turn in enumerate(turns):
            row = _round(
                at.key("dialog").at(j), turn, questions, answers, dense.pop((image_id, j), None)
            )
            dialogs.add(
                {"dialog_id": media_id, "media_id": media_id, "split": split, "turn": j}
                | row
                | {"caption": caption}
            )
    for (image_id, turn), (_, where) in dense.items():
        if image_id not in rounds_of:
            raise where.error(f"image_id {image_id} has no dialog in {path} (split '{split}')")
        raise where.error(
            f"round_id {turn + 1} out of range 1..{rounds_of[image_id]} for image_id {image_id}"
            " (round_id is 1-based)"
        )


def read_visdial(
    annotations: dict[str, Path],
    image_dir: Path | None,
    *,
    name: str,
    dense: dict[str, Path] | None = None,
) -> Manifest:
    """Build a manifest from VisDial v1.0 files, one per split, plus optional dense files.

    `dense` maps a split to its dense relevance file; each score list lands on the turn it
    annotates. Media ids are str(image_id) and must be unique across splits. Images are found
    by indexing `image_dir` recursively for files whose name ends in the image id; when ids
    collide, the file naming the split ("val2018", then "val") is taken.
    """
    dense = dict(dense or {})
    unknown = sorted(set(dense) - set(annotations))
    if unknown:
        raise ValueError(f"dense annotations for split(s) {unknown} without a dialog file")
    images = ImageIndex(Path(image_dir)) if image_dir is not None else None
    media = TableBuilder(MEDIA_SCHEMA)
    dialogs = TableBuilder(DIALOG_SCHEMA)
    seen: dict[int, str] = {}
    for split, path in annotations.items():
        scores = _dense(Path(dense[split])) if split in dense else {}
        _read_file(Path(path), split, scores, images, seen, media, dialogs)
    return Manifest(name=name, media=media.table(), dialogs=dialogs.table())
