"""Raw training samples from a manifest: dialog turns (with history and options) or captions.

A `Sample` is everything a family may read of one unit of text, before any tokenisation:
the caption and summary, every earlier (question, answer) pair, the question and answer, and
for VisDial the round's answer options (indices into the split's option vocabulary), the
ground-truth index and dense relevances. Families decide what they keep (the last k turns,
the caption or not); features are read separately, by `vdial.train.features`.

Units:
* "turn": every answered turn (training), or the turns to answer (prediction: AVSD's
  unanswered last turns; every VisDial round with options, its answer withheld);
* "caption": one sample per dialog with a caption (V2Dial's and BT-Adapter's video-text
  pre-training pairs), the caption in `answer`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Sample:
    """One unit of text of a dialog dataset."""

    dataset: str  # the recipe's dataset name
    kind: str  # "avsd" (video dialog) or "visdial" (image dialog, answer options)
    dialog_id: str  # dialog id (AVSD: the video id; VisDial: the image id)
    media_id: str  # the media item whose features the sample reads
    turn: int  # 0-based turn; -1 for a caption unit
    caption: str | None  # the media's caption
    summary: str | None  # AVSD's summary, where annotated
    history: tuple[tuple[str, str], ...]  # every earlier (question, answer), oldest first
    question: str | None  # the question (None for a caption unit)
    answer: str | None  # the answer, the caption of a caption unit, None where withheld
    options: tuple[int, ...] | None = None  # VisDial: indices into SampleSet.vocabulary
    gt_index: int | None = None  # VisDial: index of the ground truth among the options
    relevance: tuple[float, ...] | None = None  # VisDial: dense relevance of each option


@dataclass
class SampleSet:
    """The samples of one split of one dataset, and the option texts they index."""

    samples: list[Sample]
    vocabulary: list[str]  # option texts (VisDial); [] for datasets without options

    def __len__(self) -> int:
        return len(self.samples)

    def options(self, sample: Sample) -> list[str]:
        return [self.vocabulary[i] for i in sample.options or ()]


def dataset_kind(dialogs: pa.Table) -> str:
    """ "visdial" when the rounds have answer options, else "avsd"."""
    if dialogs.num_rows and dialogs["answer_options"].null_count < dialogs.num_rows:
        return "visdial"
    return "avsd"


def _rows_by_dialog(dialogs: pa.Table, split: str) -> dict[str, list[dict[str, Any]]]:
    rows = dialogs.filter(pc.equal(dialogs["split"], split)).to_pylist()
    by_dialog: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_dialog.setdefault(row["dialog_id"], []).append(row)
    for turns in by_dialog.values():
        turns.sort(key=lambda r: r["turn"])
    return by_dialog


def build_samples(
    dialogs: pa.Table, split: str, *, dataset: str, unit: str = "turn", mode: str = "train"
) -> SampleSet:
    """The samples of `split`: `mode` "train" (answered turns) or "predict" (turns to answer).

    VisDial rounds keep their options in both modes; in "predict" their answers are withheld
    (history still uses the dataset's earlier answers, as the VisDial protocol does).
    """
    if unit not in ("turn", "caption"):
        raise ValueError(f"unknown sample unit {unit!r}; expected 'turn' or 'caption'")
    kind = dataset_kind(dialogs)
    vocabulary: list[str] = []
    index: dict[str, int] = {}

    def option_ids(options: list[str] | None) -> tuple[int, ...] | None:
        if options is None:
            return None
        out = []
        for text in options:
            if text not in index:
                index[text] = len(vocabulary)
                vocabulary.append(text)
            out.append(index[text])
        return tuple(out)

    samples: list[Sample] = []
    for dialog_id, turns in _rows_by_dialog(dialogs, split).items():
        first = turns[0]
        if unit == "caption":
            if first["caption"]:
                samples.append(
                    Sample(
                        dataset=dataset,
                        kind=kind,
                        dialog_id=dialog_id,
                        media_id=first["media_id"],
                        turn=-1,
                        caption=first["caption"],
                        summary=first["summary"],
                        history=(),
                        question=None,
                        answer=first["caption"],
                    )
                )
            continue
        for k, row in enumerate(turns):
            answered = row["answer"] is not None
            has_options = row["answer_options"] is not None
            if mode == "train":
                keep = answered and (kind == "avsd" or has_options)
            elif kind == "visdial":
                keep = has_options
            else:
                keep = not answered and k == len(turns) - 1
            if not keep:
                continue
            history = tuple((h["question"], h["answer"] or "") for h in turns[:k])
            relevance = row["relevance"]
            samples.append(
                Sample(
                    dataset=dataset,
                    kind=kind,
                    dialog_id=dialog_id,
                    media_id=row["media_id"],
                    turn=row["turn"],
                    caption=row["caption"],
                    summary=row["summary"],
                    history=history,
                    question=row["question"],
                    answer=row["answer"] if mode == "train" else None,
                    options=option_ids(row["answer_options"]),
                    gt_index=row["gt_index"],
                    relevance=tuple(relevance) if relevance is not None else None,
                )
            )
    return SampleSet(samples, vocabulary)


def without_answers(samples: SampleSet) -> SampleSet:
    """The same samples with the answers withheld (what a predictor may see)."""
    return SampleSet(
        [dataclasses.replace(s, answer=None) for s in samples.samples], samples.vocabulary
    )
