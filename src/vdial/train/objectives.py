"""The training objectives the model families are built from, each one tested on its own.

Every loss returns a `LossTerm`: the sum of its per-item values and the number of items. The
trainer turns terms into means over the *global* batch (counts are summed over ranks before
dividing), so a token-level loss means the same thing at any number of processes.

* `token_cross_entropy`: language modelling on labelled tokens (-100 elsewhere);
* `symmetric_info_nce`: contrastive alignment (fixed or learnable `Temperature`, label
  smoothing), with negatives gathered from every rank and gradients flowing back to each;
  `max_token_similarity` gives the max-over-token-pairs similarity V2Dial uses;
* `matching_negatives` + `binary_matching`: matching with random or similarity-weighted hard
  negatives (never the positive);
* `mlm_mask`: BERT masking (15 %, 80/10/10, special tokens never chosen);
* `feature_regression`: masked-feature regression (L1, MSE, or cosine as 2 - 2 cos);
* `kl_divergence`: KL(p || q) between distributions given as log-probabilities;
* `options_cross_entropy` / `dense_relevance`: VisDial's discriminative and dense losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class LossTerm(NamedTuple):
    """A loss as (sum over items, number of items)."""

    total: torch.Tensor  # differentiable sum of the per-item losses
    count: torch.Tensor  # items summed (a float tensor without gradient)

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1.0)


def term(values: torch.Tensor, mask: torch.Tensor | None = None) -> LossTerm:
    """The LossTerm of per-item `values` (only where `mask` is true)."""
    if mask is not None:
        values = values[mask.bool()]
    count = torch.tensor(float(values.numel()), device=values.device)
    return LossTerm(values.sum(), count)


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100
) -> LossTerm:
    """Cross-entropy of every token whose label is not `ignore_index` (logits [..., V])."""
    flat = labels.reshape(-1)
    keep = flat != ignore_index
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        flat,
        ignore_index=ignore_index,
        reduction="sum",
    )
    return LossTerm(total, keep.sum().float())


# -- contrastive ---------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows concatenated in rank order (all ranks hold equally many); gradients
    flow back to the rank that owns each row. The tensor itself in one process."""
    rank, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


class Temperature(nn.Module):
    """A contrastive temperature, learnable in log space and clamped as BLIP does."""

    def __init__(
        self,
        init: float = 0.07,
        *,
        learnable: bool = True,
        bounds: tuple[float, float] = (0.001, 0.5),
    ) -> None:
        super().__init__()
        self.bounds = bounds
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_t = nn.Parameter(value)
        else:
            self.register_buffer("log_t", value)

    def forward(self) -> torch.Tensor:
        return self.log_t.exp().clamp(*self.bounds)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] cosine similarities of rows of a [n, D] and b [m, D]."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def max_token_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m]: for a [n, S, D] and b [m, T, D] (unit vectors), max over (i, j) of <a_i, b_j>."""
    pairs = torch.einsum("nsd,mtd->nmst", a, b)
    return pairs.flatten(2).max(dim=-1).values


def symmetric_info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: torch.Tensor | float,
    *,
    label_smoothing: float = 0.0,
    similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cosine_similarity_matrix,
) -> LossTerm:
    """(CE(a -> all b) + CE(b -> all a)) / 2 per local pair; positives are the same index.

    a and b hold this rank's n paired items; negatives are every rank's items (`gather`).
    """
    rank, _ = world()
    n = a.shape[0]
    all_a, all_b = gather(a), gather(b)
    targets = torch.arange(n, device=a.device) + rank * n
    a2b = similarity(a, all_b) / temperature
    b2a = similarity(b, all_a) / temperature
    per_pair = 0.5 * (
        F.cross_entropy(a2b.float(), targets, label_smoothing=label_smoothing, reduction="none")
        + F.cross_entropy(b2a.float(), targets, label_smoothing=label_smoothing, reduction="none")
    )
    return term(per_pair)


# -- matching ------------------------------------------------------------------------------


def matching_negatives(
    n: int,
    *,
    similarity: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """For each of n items, the index of another item to pair it with as a negative.

    Without `similarity`: uniform over the others. With it ([n, n], higher = more alike): drawn
    with probability softmax(similarity) over the others (BLIP's hard negatives). Never itself.
    """
    if n < 2:
        raise ValueError("matching negatives need at least two items in the batch")
    if similarity is None:
        weights = torch.ones(n, n).fill_diagonal_(0.0)
    else:
        # the positive is masked before the softmax: left in, a dominant positive would make
        # every negative's weight vanish and the draw uniform
        logits = similarity.detach().float().cpu().clone().fill_diagonal_(float("-inf"))
        weights = torch.softmax(logits, dim=1)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def binary_matching(logits: torch.Tensor, labels: torch.Tensor) -> LossTerm:
    """Cross-entropy of matched (1) / not matched (0) from [n, 2] logits."""
    return term(F.cross_entropy(logits.float(), labels.long(), reduction="none"))


# -- masked modelling ----------------------------------------------------------------------


def mlm_mask(
    ids: torch.Tensor,
    *,
    eligible: torch.Tensor,
    mask_id: int,
    random_ids: torch.Tensor,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: (masked ids, labels with -100 where nothing is predicted).

    Each `eligible` token is chosen with probability `prob`; a chosen token becomes `mask_id`
    (80 %), a token drawn from `random_ids` (10 %) or stays (10 %). Ineligible tokens (special
    tokens, padding) are never chosen.
    """
    draw = torch.rand(ids.shape, generator=generator)
    chosen = (draw < prob) & eligible.cpu()
    how = torch.rand(ids.shape, generator=generator)
    replacement = random_ids[torch.randint(len(random_ids), ids.shape, generator=generator)]
    masked = ids.cpu().clone()
    masked[chosen & (how < 0.8)] = mask_id
    swap = chosen & (how >= 0.8) & (how < 0.9)
    masked[swap] = replacement[swap].to(masked.dtype)
    labels = torch.where(chosen, ids.cpu(), torch.full_like(ids.cpu(), -100))
    return masked.to(ids.device), labels.to(ids.device)


def feature_regression(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    kind: Literal["l1", "mse", "cosine"] = "l1",
) -> LossTerm:
    """Per item ([..., D] rows where `mask`): mean |p - t| (l1), mean (p - t)^2 (mse), or
    2 - 2 cos(p, t) (cosine: the squared distance of the unit vectors, as BYOL/BT-Adapter)."""
    pred, target = pred.float(), target.float()
    if kind == "l1":
        values = (pred - target).abs().mean(-1)
    elif kind == "mse":
        values = (pred - target).pow(2).mean(-1)
    elif kind == "cosine":
        values = 2.0 - 2.0 * F.cosine_similarity(pred, target, dim=-1)
    else:
        raise ValueError(f"unknown regression {kind!r}; expected l1, mse or cosine")
    return term(values, mask)


def kl_divergence(
    log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor | None = None
) -> LossTerm:
    """KL(p || q) = sum_k p_k (log p_k - log q_k) per item, from log-probabilities [..., K]."""
    values = (log_p.exp() * (log_p - log_q)).sum(-1)
    return term(values, mask)


# -- VisDial -------------------------------------------------------------------------------


def options_cross_entropy(scores: torch.Tensor, gt_index: torch.Tensor) -> LossTerm:
    """Cross-entropy over each round's options ([B, N] scores), the ground truth as target."""
    return term(F.cross_entropy(scores.float(), gt_index.long(), reduction="none"))


def dense_relevance(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    *,
    reduce: Literal["sum", "mean"] = "sum",
    mask: torch.Tensor | None = None,
) -> LossTerm:
    """Dense fine-tuning: -sum_i r_i log softmax(s)_i per round ("mean": divided by N)."""
    values = -(relevance.float() * torch.log_softmax(scores.float(), dim=-1)).sum(-1)
    if reduce == "mean":
        values = values / scores.shape[-1]
    return term(values, mask)
