"""The contract every model family follows (one file per family, one registration line).

A family is a `DialogModel` subclass with

* `Config`: its frozen, typed, keyword-only config dataclass (the recipe's `model:` block);
* `inputs(config)`: the roles it reads (`InputSpec` per role; the recipe maps them to store
  features), `special_tokens(config)`, `lm_config(config)` (its language model, if any) and
  `loss_names(config)` / `default_losses(config)` (the named losses it can compute);
* `processor(config, tokenizer)`: a picklable `Processor` that turns raw `Sample`s and their
  features into tensors in the DataLoader workers (`encode`, `collate`);
* `tiny()`: its smallest recipe (the contract tests build and train every family from it);
* `forward(batch, losses) -> {loss name: LossTerm}` for the losses a stage weights;
* generative families: `search(batch, decoding) -> [Hypothesis]` (driven by
  `vdial.train.generate`); discriminative ones: `score_options(batch) -> [B, N]` scores.

The trainer, the predictor and the contract tests use nothing else, so a new family is
picked up everywhere once `vdial.train.models` registers it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vdial.train.features import InputShape, InputSpec
from vdial.train.objectives import LossTerm
from vdial.train.samples import Sample
from vdial.train.tokenizer import Tokenizer


class Unsupported(TypeError):
    """A family (or this configuration of it) has no such capability, e.g. it does not
    generate answers or has no option head; the predictor checks before asking."""


@dataclass
class BuildContext:
    """What a family is built from besides its config."""

    inputs: dict[str, InputShape]  # role -> feature shapes of the run's stores
    tokenizer: Tokenizer  # the run's tokenizer (special tokens added)
    kinds: tuple[str, ...]  # dataset kinds the run uses ("avsd", "visdial")


class Processor(ABC):
    """Raw samples -> tensors (runs in DataLoader workers, so it must pickle)."""

    @abstractmethod
    def encode(
        self,
        sample: Sample,
        features: dict[str, dict[str, np.ndarray]],
        options: list[str],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """One sample; `options` are its VisDial answer options ([] elsewhere). Random choices
        (masks) draw from `rng`, seeded by (run seed, stage, step, sample), so they do not
        depend on the number of ranks, workers or accumulation steps."""

    @abstractmethod
    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch (tensors, and lists where a family needs them)."""


class DialogModel(nn.Module, ABC):
    """Base class of the model families."""

    Config: ClassVar[type]  # the family's config dataclass
    generative: ClassVar[bool] = True  # answers by decoding (`search`)
    discriminative: ClassVar[bool] = False  # scores answer options (`score_options`)

    @classmethod
    @abstractmethod
    def inputs(cls, config: Any) -> dict[str, InputSpec]: ...

    @classmethod
    def special_tokens(cls, config: Any) -> tuple[str, ...]:
        return ()

    @classmethod
    def lm_config(cls, config: Any) -> Any:
        """The family's `vdial.train.lm.LMConfig`, or None for heads without one."""
        return getattr(config, "lm", None)

    @classmethod
    @abstractmethod
    def loss_names(cls, config: Any) -> tuple[str, ...]:
        """Every loss `forward` can compute."""

    @classmethod
    def default_losses(cls, config: Any) -> dict[str, float]:
        """Loss weights of a stage that names none."""
        return dict.fromkeys(cls.loss_names(config), 1.0)

    @classmethod
    @abstractmethod
    def processor(cls, config: Any, tokenizer: Tokenizer) -> Processor: ...

    @classmethod
    @abstractmethod
    def tiny(cls) -> dict[str, Any]:
        """The smallest recipe of the family, for the contract tests and smoke runs:
        {"model": the model block, "inputs": role -> features, "features": feature ->
        {"shape": item shape per row, "kind": tokens|regions|text}, "kinds": dataset kinds}."""

    @abstractmethod
    def forward(self, batch: dict[str, Any], losses: Collection[str]) -> dict[str, LossTerm]: ...

    def search(self, batch: dict[str, Any], decoding: Any) -> list[Any]:
        raise Unsupported(f"{type(self).__name__} does not generate answers")

    def score_options(self, batch: dict[str, Any]) -> torch.Tensor:
        raise Unsupported(f"{type(self).__name__} does not score answer options")

    def language_model(self) -> Any:
        """The Hugging Face language model inside (what `vdial-train export --hf` writes), or
        None; by default the `lm` attribute."""
        return getattr(self, "lm", None)

    def fsdp_units(self) -> list[nn.Module]:
        """Modules FSDP2 shards as units of their own (gathered only for their forward): by
        default the blocks each Hugging Face model inside names in `_no_split_modules`."""
        names = set()
        for module in self.modules():
            names.update(getattr(module, "_no_split_modules", None) or ())
        return [m for m in self.modules() if type(m).__name__ in names]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward (the trainer's `grad_checkpointing`): by default
        through the switch of every Hugging Face model inside; families with blocks of their
        own override this."""
        pending = list(self.children())
        while pending:  # the outermost Hugging Face models only (their switch covers the rest)
            module = pending.pop()
            if not getattr(module, "supports_gradient_checkpointing", False):
                pending += list(module.children())
            elif hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x
                module.activation_checkpointing_enable({"use_reentrant": False})
            else:
                module.gradient_checkpointing_enable({"use_reentrant": False})


def pad_stack(
    arrays: list[np.ndarray], *, value: float = 0.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack arrays that differ in their first axis: (padded [B, n, ...], mask [B, n])."""
    n = max((len(a) for a in arrays), default=0)
    rest = next((a.shape[1:] for a in arrays if a.ndim), ())
    out = torch.full((len(arrays), n, *rest), value, dtype=dtype)
    mask = torch.zeros((len(arrays), n), dtype=torch.bool)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.as_tensor(np.asarray(a), dtype=dtype)
        mask[i, : len(a)] = True
    return out, mask


def pad_ids(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [B, L] token ids and their attention mask."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), max(width, 1)), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), max(width, 1)), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask
