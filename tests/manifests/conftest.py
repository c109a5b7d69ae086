"""Fixtures for the manifest tests: the real AVSD files and small AVSD/VisDial files built here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"

NUM_ANSWERS = 150


class Files:
    """Builders for annotation files, handed to tests by the `files` fixture."""

    num_answers = NUM_ANSWERS

    @staticmethod
    def write_json(path: Path, data: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path

    @staticmethod
    def avsd_dialog(video_id: str, turns: int, *, caption: bool = True) -> dict[str, Any]:
        """A DSTC7 train-style dialog: caption, summary and `turns` answered turns."""
        dialog: dict[str, Any] = {
            "image_id": video_id,
            "dialog": [
                {"question": f"{video_id} q{j} ?", "answer": f"{video_id} a{j} ."}
                for j in range(turns)
            ],
        }
        if caption:
            dialog["caption"] = f"caption of {video_id}"
            dialog["summary"] = f"summary of {video_id}"
        return dialog

    @staticmethod
    def avsd_file(dialogs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "scene_aware_dialog", "version": "0.1", "dialogs": dialogs}

    @staticmethod
    def visdial_round(j: int, *, answer: bool = True, options: bool = True) -> dict[str, Any]:
        """Round j: question j, answer 7j, 100 options holding the answer at gt_index 13j % 100.

        The other options are the 100 answer indices after the answer, so the answer appears
        exactly once among them.
        """
        answer_index = (7 * j) % NUM_ANSWERS
        gt_index = (13 * j) % 100
        opts = [(answer_index + 1 + k) % NUM_ANSWERS for k in range(100)]
        opts[gt_index] = answer_index
        rnd: dict[str, Any] = {"question": j}
        if answer:
            rnd["answer"] = answer_index
        if options:
            rnd["answer_options"] = opts
        if answer and options:
            rnd["gt_index"] = gt_index
        return rnd

    @classmethod
    def visdial_file(cls, split: str, image_ids: list[int], rounds: int = 10) -> dict[str, Any]:
        """A VisDial v1.0 file; test dialogs have `rounds` rounds, the last one unanswered."""
        dialogs = []
        for image_id in image_ids:
            entry: dict[str, Any] = {"image_id": image_id, "caption": f"image {image_id}"}
            if split.startswith("test"):
                entry["dialog"] = [cls.visdial_round(j, options=False) for j in range(rounds - 1)]
                entry["dialog"].append(cls.visdial_round(rounds - 1, answer=False))
                entry["round_id"] = rounds
            else:
                entry["dialog"] = [cls.visdial_round(j) for j in range(rounds)]
            dialogs.append(entry)
        return {
            "version": "1.0",
            "split": split,
            "data": {
                "questions": [f"question {k}" for k in range(12)],
                "answers": [f"answer {k}" for k in range(NUM_ANSWERS)],
                "dialogs": dialogs,
            },
        }

    @staticmethod
    def relevance(seed: int) -> list[float]:
        """100 scores in [0, 1] that differ with `seed`."""
        return [((seed * 31 + k * 17) % 11) / 10 for k in range(100)]


@pytest.fixture(scope="session")
def files() -> type[Files]:
    return Files


@pytest.fixture(scope="session")
def real() -> Path:
    if not (REAL / "avsd").is_dir():
        pytest.skip(f"real data not available at {REAL}")
    return REAL
