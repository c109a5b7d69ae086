"""Dialog-turn datasets over a feature store: (visual tokens, context, answer) per turn.

A sample is one turn: the visual tokens of its video (read from the store through a
`FeatureReader`, so DataLoader workers each open the store lazily), the caption and the most
recent turns of history, the question, and, for training, the answer. The `visual` ablation
replaces the tokens with zeros or with another video's tokens (a fixed derangement), which is
how the demo shows that the answers come from the cached features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vdial.cache import FeatureReader
from vdial.train.config import TrainConfig
from vdial.train.tokenizer import Tokenizer


@dataclass(frozen=True)
class Turn:
    """One dialog turn to train on or answer."""

    dialog_id: str
    media_id: str
    turn: int
    context: str  # caption, history and question, separated by <sep>
    answer: str | None  # None where the answer is to be predicted


def dialog_turns(dialogs: pa.Table, split: str, config: TrainConfig, *, scored: bool) -> list[Turn]:
    """Turns of `split`: answered turns (training) or the unanswered last turns (`scored`)."""
    rows = dialogs.filter(pc.equal(dialogs["split"], split)).to_pylist()
    by_dialog: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_dialog.setdefault(row["dialog_id"], []).append(row)
    out = []
    for dialog_id, turns in by_dialog.items():
        turns.sort(key=lambda r: r["turn"])
        for k, row in enumerate(turns):
            answered = row["answer"] is not None
            if scored and (answered or k != len(turns) - 1):
                continue
            if not scored and not answered:
                continue
            history = turns[max(0, k - config.history_turns) : k]
            parts = []
            if config.use_caption:
                parts.append(" ".join(t for t in (row["caption"], row["summary"]) if t))
            parts += [f"{h['question']} {h['answer'] or ''}".strip() for h in history]
            parts.append(row["question"])
            context = " <sep> ".join(parts)
            out.append(Turn(dialog_id, row["media_id"], row["turn"], context, row["answer"]))
    return out


def _derangement(ids: list[str], seed: int) -> dict[str, str]:
    """Map each id to a different id (fixed by `seed`), for the shuffled-visual ablation."""
    if len(ids) < 2:
        raise ValueError("the shuffled-visual ablation needs at least two videos")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    return {ids[order[i]]: ids[order[(i + 1) % len(ids)]] for i in range(len(ids))}


class DialogDataset:
    """Map-style dataset of `Turn`s with their visual tokens and token ids."""

    def __init__(
        self,
        turns: list[Turn],
        reader: FeatureReader,
        tokenizer: Tokenizer,
        config: TrainConfig,
        *,
        visual: str | None = None,
    ) -> None:
        self.turns = turns
        self.reader = reader
        self.tokenizer = tokenizer
        self.config = config
        self.visual = visual or config.visual
        media = sorted({t.media_id for t in turns})
        self.swap = _derangement(media, config.seed) if self.visual == "shuffle" else {}
        self._cache: dict[str, np.ndarray] = {}
        self._cache_left = config.feature_cache_mb * 2**20

    def _read(self, media_id: str) -> np.ndarray:
        """An item as stored, kept in RAM while the cache budget lasts (many turns per video)."""
        item = self._cache.get(media_id)
        if item is None:
            item = self.reader[media_id]
            if item.nbytes <= self._cache_left:
                self._cache[media_id] = item
                self._cache_left -= item.nbytes
        return item

    def __len__(self) -> int:
        return len(self.turns)

    def visual_tokens(self, media_id: str) -> np.ndarray:
        """(frames * tokens_per_frame, D) float32, frames uniformly subsampled or zero-padded."""
        item = np.asarray(self._read(self.swap.get(media_id, media_id)), dtype=np.float32)
        if item.ndim == 2:  # one token per frame
            item = item[:, None, :]
        frames = self.config.frames
        if len(item) > frames:
            item = item[np.linspace(0, len(item) - 1, frames).round().astype(int)]
        elif len(item) < frames:
            pad = np.zeros((frames - len(item), *item.shape[1:]), dtype=np.float32)
            item = np.concatenate([item, pad])
        if self.visual == "zero":
            item = np.zeros_like(item)
        return item.reshape(-1, item.shape[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        turn = self.turns[index]
        context = self.tokenizer.encode(turn.context)[-(self.config.max_context_tokens - 1) :]
        context = context + [self.tokenizer.sep_id]
        answer = []
        if turn.answer is not None:
            answer = self.tokenizer.encode(turn.answer)[: self.config.max_answer_tokens - 1]
            answer = answer + [self.tokenizer.eos_id]
        return {
            "index": index,
            "visual": self.visual_tokens(turn.media_id),
            "context": context,
            "answer": answer,
        }


def collate(samples: list[dict[str, Any]], pad_id: int):
    """Right-pad context+answer; labels are the answer tokens only (-100 elsewhere)."""
    import torch

    lengths = [len(s["context"]) + len(s["answer"]) for s in samples]
    width = max(lengths)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        seq = s["context"] + s["answer"]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        if s["answer"]:
            start = len(s["context"])
            labels[row, start : len(seq)] = torch.tensor(s["answer"])
    return {
        "index": torch.tensor([s["index"] for s in samples]),
        "visual": torch.from_numpy(np.stack([s["visual"] for s in samples])),
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "context_lengths": torch.tensor([len(s["context"]) for s in samples]),
    }
