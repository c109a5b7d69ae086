"""What a stage trains: parameters selected by name patterns, frozen modules in eval mode,
and optimiser groups with per-pattern learning-rate multipliers.

Patterns are `fnmatch` patterns over parameter names as `model.named_parameters()` gives
them (`lm.*`, `visual_proj.*`, `*.temporal_attn.*`); "*" is everything. A parameter is
trained when a `trainable` pattern matches it and no `frozen` pattern does. A module none of
whose parameters (or its children's) are trained is put in eval mode, so a frozen language
model runs without dropout, as the papers freeze them. A stage that names a pattern matching
nothing is an error: a typo must not silently freeze or train the wrong thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from vdial.train.config import OptimConfig, StageConfig


class StageError(ValueError):
    """A stage's patterns do not fit the model (the message names the pattern)."""


@dataclass(frozen=True)
class GroupSummary:
    """One optimiser group of a stage."""

    pattern: str  # the lr_mult pattern ("" for the base group)
    lr_mult: float  # multiplier of the stage's lr
    tensors: int  # parameter tensors in the group
    params: int  # scalar parameters in the group


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def trainable_names(model: nn.Module, stage: StageConfig) -> list[str]:
    """Names of the parameters `stage` trains (in `named_parameters` order)."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in (*stage.trainable, *stage.frozen, *stage.lr_mult):
        if pattern != "*" and not any(fnmatchcase(n, pattern) for n in names):
            raise StageError(
                f"stage {stage.name!r}: pattern {pattern!r} matches no parameter; top-level "
                f"modules: {', '.join(sorted({n.split('.')[0] for n in names}))}"
            )
    return [n for n in names if _matches(n, stage.trainable) and not _matches(n, stage.frozen)]


def apply_stage(model: nn.Module, stage: StageConfig) -> list[str]:
    """Set requires_grad for `stage` and return the trained names (an error if none)."""
    trained = set(trainable_names(model, stage))
    if not trained:
        raise StageError(f"stage {stage.name!r} trains no parameter (check trainable/frozen)")
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained)
    set_modes(model)
    return [n for n, _ in model.named_parameters() if n in trained]


def set_modes(model: nn.Module) -> None:
    """Train mode where something is trained, eval mode for wholly frozen modules."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def param_groups(
    model: nn.Module, stage: StageConfig, optim: OptimConfig
) -> tuple[list[dict[str, Any]], list[GroupSummary]]:
    """Optimiser groups of the trained parameters: one per lr_mult pattern (the first that
    matches a name wins) and a base group, each split into decayed matrices and undecayed
    vectors (biases, norms, embeddings' scales) as nanoGPT and timm do."""
    patterns = list(stage.lr_mult)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        pattern = next((p for p in patterns if fnmatchcase(name, p)), "")
        buckets.setdefault((pattern, param.ndim >= 2), []).append(param)
    groups, summary = [], []
    for pattern in ["", *patterns]:
        mult = stage.lr_mult.get(pattern, 1.0)
        tensors = params = 0
        for decay in (True, False):
            members = buckets.get((pattern, decay), [])
            if not members:
                continue
            groups.append(
                {
                    "params": members,
                    "lr": optim.lr * mult,
                    "lr_mult": mult,
                    "weight_decay": optim.weight_decay if decay else 0.0,
                    "pattern": pattern,
                }
            )
            tensors += len(members)
            params += sum(p.numel() for p in members)
        if tensors:
            summary.append(GroupSummary(pattern, mult, tensors, params))
    return groups, summary


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trained, total) scalar parameters."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trained, total
