"""Reader for AVSD annotation files (DSTC7, DSTC8 and DSTC10 formats) -> Manifest.

All AVSD releases share one layout::

    {"type": "scene_aware_dialog", "version": "0.1",
     "dialogs": [{"image_id": "CGRUM", "caption": ..., "summary": ...,
                  "dialog": [{"question": ..., "answer": ...}, ...]}]}

Differences handled here: DSTC10 test files have no caption/summary; their last turn carries
"reason": [{"timestamp": [start, end], "sentence": ...}]; test last turns answer
"__UNDISCLOSED__"; the DSTC10 multi-reference file's last "answer" is a list of 6 strings.
One dialog per video, so the video id (image_id) is both the dialog id and the media id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vdial.manifests.locate import Where, load_json, type_name
from vdial.manifests.manifest import Manifest
from vdial.manifests.media import VideoDir
from vdial.manifests.schema import (
    DIALOG_SCHEMA,
    MEDIA_SCHEMA,
    UNDISCLOSED,
    TableBuilder,
    media_row,
)


def _answers(turn: dict[str, Any], where: Where) -> tuple[str | None, list[str]]:
    """(answer, answers): a list answer is a set of references; the first one is `answer`."""
    if "answer" not in turn:
        return None, []
    value = turn["answer"]
    if isinstance(value, str):
        return (None, []) if value == UNDISCLOSED else (value, [value])
    if isinstance(value, list):
        if not value:
            raise where.error("'answer' is an empty list of references")
        for i, ref in enumerate(value):
            if not isinstance(ref, str):
                raise where.key("answer").at(i).error(f"must be a string, got {type_name(ref)}")
            if ref == UNDISCLOSED:
                raise where.key("answer").at(i).error(f"{UNDISCLOSED} inside a list of references")
        return value[0], list(value)
    raise where.error(f"'answer' must be a string or a list of strings, got {type_name(value)}")


def _reason(turn: dict[str, Any], where: Where) -> list[dict[str, Any]] | None:
    """DSTC10 evidence: [{"timestamp": [start, end], "sentence": str}] -> start/end/sentence."""
    if "reason" not in turn:
        return None
    parsed = []
    for k, item in enumerate(where.items(turn, "reason", dict)):
        at = where.key("reason").at(k)
        stamp = at.items(item, "timestamp", float)
        if len(stamp) != 2:
            raise at.error(f"'timestamp' must be [start, end], got {len(stamp)} value(s)")
        parsed.append(
            {
                "start": float(stamp[0]),
                "end": float(stamp[1]),
                "sentence": at.field(item, "sentence", str),
            }
        )
    return parsed


def _read_file(
    path: Path,
    split: str,
    videos: VideoDir | None,
    seen: dict[str, str],
    media: TableBuilder,
    dialogs: TableBuilder,
) -> None:
    root = Where(path).object(load_json(path))
    top = Where(path)
    entries = top.items(root, "dialogs", dict)
    for i, entry in enumerate(entries):
        at = top.key("dialogs").at(i)
        video_id = at.field(entry, "image_id", str)
        if video_id in seen:
            raise at.error(f"duplicate image_id {video_id!r}, first seen at {seen[video_id]}")
        seen[video_id] = f"{at} (split '{split}')"
        caption = at.field(entry, "caption", str, optional=True)
        summary = at.field(entry, "summary", str, optional=True)
        turns = at.items(entry, "dialog", dict)
        if not turns:
            raise at.error("'dialog' has no turns")
        path_found = videos.find(video_id) if videos is not None else None
        media.add(media_row(id=video_id, path=path_found, kind="video", split=split))
        for j, turn in enumerate(turns):
            where = at.key("dialog").at(j)
            answer, answers = _answers(turn, where)
            dialogs.add(
                {
                    "dialog_id": video_id,
                    "media_id": video_id,
                    "split": split,
                    "turn": j,
                    "question": where.field(turn, "question", str),
                    "answer": answer,
                    "answers": answers,
                    "caption": caption,
                    "summary": summary,
                    "reason": _reason(turn, where),
                    "answer_options": None,
                    "gt_index": None,
                    "relevance": None,
                    "source": where.source,
                }
            )


def read_avsd(annotations: dict[str, Path], video_dir: Path | None, *, name: str) -> Manifest:
    """Build a manifest from AVSD files, one per split (e.g. {"train": ..., "test": ...}).

    A video id may appear only once across all files (ids key the feature store). Videos are
    looked up as `<video_dir>/<image_id>.<ext>`; a missing video keeps its row with a null
    path, which `Manifest.validate` reports.
    """
    videos = VideoDir(Path(video_dir)) if video_dir is not None else None
    media = TableBuilder(MEDIA_SCHEMA)
    dialogs = TableBuilder(DIALOG_SCHEMA)
    seen: dict[str, str] = {}
    for split, path in annotations.items():
        _read_file(Path(path), split, videos, seen, media, dialogs)
    return Manifest(name=name, media=media.table(), dialogs=dialogs.table())
