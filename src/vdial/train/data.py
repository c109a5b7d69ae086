"""Batches: samples of one or more datasets, their features, a family's processor, and the
order they are read in (a pure function of seed, stage and step).

* `DatasetPart`: one dataset's samples of a split with its `FeatureSet`;
* `ProcessedDataset`: a map-style dataset over several parts (global indices, part after
  part) whose items are the family processor's encoding of (sample, features, options);
* `StagePlan`: the global batch of each step. Each step draws its dataset by the stage's
  weights (V2Dial's mixing: every batch comes from one dataset), and each dataset is read as
  a stream of seeded permutations, so every item is read once per epoch and a batch is
  always full; nothing depends on how many steps ran before in this process;
* `StageSampler`: the contiguous slice of each global batch one rank (and micro-batch)
  takes, in the order `objectives.gather` concatenates ranks, with every sample's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vdial.train.features import FeatureSet
from vdial.train.models.base import Processor
from vdial.train.samples import SampleSet


@dataclass
class DatasetPart:
    """One dataset's samples of a split, with the features they read."""

    name: str  # the recipe's dataset name
    kind: str  # "avsd" or "visdial"
    samples: SampleSet
    features: FeatureSet


class ProcessedDataset(torch.utils.data.Dataset):
    """Items of several parts (global index = the part's offset + the sample's index)."""

    def __init__(self, parts: list[DatasetPart], processor: Processor) -> None:
        self.parts = parts
        self.processor = processor
        self.offsets = np.cumsum([0, *(len(p.samples) for p in parts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[DatasetPart, int]:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part], index - int(self.offsets[part])

    def sample(self, index: int):
        part, local = self.locate(index)
        return part.samples.samples[local]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, dict[str, Any]]:
        """Item `key` = index, or (index, seed of its random choices); the seed defaults to
        the index (validation and prediction)."""
        index, seed = key if isinstance(key, tuple) else (key, key)
        part, local = self.locate(index)
        sample = part.samples.samples[local]
        features = part.features.read(sample)
        rng = np.random.default_rng(seed)
        return index, self.processor.encode(sample, features, part.samples.options(sample), rng)

    def collate(self, items: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        batch = self.processor.collate([item for _, item in items])
        batch["index"] = torch.tensor([index for index, _ in items], dtype=torch.long)
        return batch


def stream_indices(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Positions [start, start + count) of the stream of seeded permutations of range(n)."""
    positions = np.arange(start, start + count)
    epochs, within = np.divmod(positions, n)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = np.random.default_rng([seed, int(epoch)]).permutation(n)
        out[epochs == epoch] = order[within[epochs == epoch]]
    return out


def dataset_choices(weights: list[float], seed: int, stage: int, steps: int) -> np.ndarray:
    """The dataset (index into `weights`) each step of a stage reads."""
    if len(weights) == 1:
        return np.zeros(steps, dtype=np.int64)
    p = np.asarray(weights, dtype=np.float64)
    return np.random.default_rng([seed, stage, 7]).choice(len(p), size=steps, p=p / p.sum())


class StagePlan:
    """The global batch of every step of one stage (indices into a ProcessedDataset)."""

    def __init__(
        self,
        sizes: list[int],
        weights: list[float],
        batch_size: int,
        seed: int,
        stage: int,
        steps: int,
    ) -> None:
        if min(sizes) < 1:
            raise ValueError("every dataset of a stage needs at least one sample")
        self.sizes, self.batch_size, self.seed, self.stage = sizes, batch_size, seed, stage
        self.choices = dataset_choices(weights, seed, stage, steps)
        # how many batches the step's dataset gave before it: its position in that stream
        self.uses = np.zeros(steps, dtype=np.int64)
        for part in range(len(sizes)):
            chosen = self.choices == part
            self.uses[chosen] = np.arange(int(chosen.sum()))
        self.offsets = np.cumsum([0, *sizes])

    def __len__(self) -> int:
        return len(self.choices)

    def __getitem__(self, step: int) -> list[int]:
        part = int(self.choices[step])
        local = stream_indices(
            self.sizes[part],
            self.seed * 1000 + self.stage * 31 + part,
            int(self.uses[step]) * self.batch_size,
            self.batch_size,
        )
        return (local + int(self.offsets[part])).tolist()


def item_seed(seed: int, stage: int, step: int, position: int) -> int:
    """The seed of one sample's random choices: its place in the run, not in a process."""
    return int(np.random.SeedSequence([seed, stage, step, position]).generate_state(1)[0])


class StageSampler(torch.utils.data.Sampler):
    """(index, seed) lists of this rank's micro-batches, step after step from `start`."""

    def __init__(
        self, plan: StagePlan, start: int, rank: int, world: int, accumulation: int, seed: int
    ) -> None:
        self.plan, self.start = plan, start
        self.rank, self.world, self.accumulation, self.seed = rank, world, accumulation, seed

    def __len__(self) -> int:
        return (len(self.plan) - self.start) * self.accumulation

    def __iter__(self):
        per = self.plan.batch_size // (self.world * self.accumulation)
        for step in range(self.start, len(self.plan)):
            batch = self.plan[step]
            for micro in range(self.accumulation):
                first = (micro * self.world + self.rank) * per
                yield [
                    (index, item_seed(self.seed, self.plan.stage, step, first + k))
                    for k, index in enumerate(batch[first : first + per])
                ]
