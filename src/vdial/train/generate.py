"""Batched greedy and beam search over any next-token function, with HF's scoring rules.

A model supplies `next_logits(seq, lengths) -> logits [rows, vocab]`: the logits of the token
that follows each row's first `lengths[row]` tokens of `seq` (right-padded, so padding never
sits inside a row's text). The searches call it with one row per dialog (greedy) or
`beam_size` consecutive rows per dialog (beam search), and every row of one step has generated
the same number of tokens, so a row's length is its context length plus the step.

Beam search follows Hugging Face `generate(num_beams=K)` with its defaults
(`early_stopping=False`) step for step, so that both give the same tokens for the same logits:

* each step keeps the 2K best continuations of a dialog's K beams; the K best that do not end
  are the next beams, and those among the top K that end (<eos>, or the length limit) become
  finished hypotheses, scored `sum of token log-probs / length ** length_penalty` (the length
  counts the <eos>; GNMT's normalisation in HF's form): alpha > 0 favours longer answers,
  alpha = 0 is plain log-likelihood;
* the K best finished hypotheses are kept, and a dialog stops when all K slots are full and
  its best running beam, scored at its current length, cannot beat the worst of them.

With K = 1 this is greedy search exactly: a beam that ends is the argmax, and the running
beam left beside it is less likely at the same length, so the search stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

NextLogits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# HF's stand-in for "impossible" scores; a finite value keeps topk's order well defined.
_NEG = -1.0e9


@dataclass(frozen=True, kw_only=True)
class Decoding:
    """How answers are decoded (recorded with the predictions)."""

    beam_size: int = 1  # beams per dialog; 1 is greedy search
    length_penalty: float = 1.0  # alpha in log p / length**alpha (HF's default 1.0)
    max_length: int | None = None  # generated tokens incl. <eos>; None: the run's answer length

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")

    def resolved(self, max_answer_tokens: int) -> Decoding:
        """This decoding with `max_length` filled in from the run's config."""
        if self.max_length is not None:
            return self
        return Decoding(
            beam_size=self.beam_size,
            length_penalty=self.length_penalty,
            max_length=max_answer_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"search": "greedy" if self.beam_size == 1 else "beam", **asdict(self)}


@dataclass(frozen=True)
class Hypothesis:
    """One decoded answer."""

    tokens: list[int]  # generated token ids, without the final <eos>
    log_prob: float  # sum of the log-probabilities of the generated tokens, <eos> included
    length: int  # generated tokens counted by the length penalty (<eos> included)


def _with_context(context: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    seq = context.new_full((context.shape[0], context.shape[1] + width), pad_id)
    seq[:, : context.shape[1]] = context
    return seq


def _log_probs(next_logits: NextLogits, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    logits = next_logits(seq[:, : int(lengths.max())], lengths)
    return torch.log_softmax(logits.float(), dim=-1)


def greedy_search(
    next_logits: NextLogits,
    context: torch.Tensor,
    lengths: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
) -> list[Hypothesis]:
    """The argmax continuation of each right-padded context, until <eos> or the length limit."""
    batch = context.shape[0]
    seq = _with_context(context, max_new_tokens, pad_id)
    lengths = lengths.clone()
    start = lengths.clone()
    rows = torch.arange(batch, device=seq.device)
    log_prob = torch.zeros(batch, device=seq.device)
    generated = torch.zeros(batch, dtype=torch.long, device=seq.device)
    done = torch.zeros(batch, dtype=torch.bool, device=seq.device)
    for _ in range(max_new_tokens):
        logp = _log_probs(next_logits, seq, lengths)
        best = logp.argmax(-1)
        live = ~done
        log_prob = torch.where(live, log_prob + logp[rows, best], log_prob)
        generated += live.long()
        grow = live & (best != eos_id)
        seq[rows[grow], lengths[grow]] = best[grow]
        lengths += grow.long()
        done |= best == eos_id
        if bool(done.all()):
            break
    return [
        Hypothesis(
            seq[b, int(start[b]) : int(lengths[b])].tolist(), float(log_prob[b]), int(generated[b])
        )
        for b in range(batch)
    ]


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b, j], ...] for a [batch, n, ...] tensor and [batch, m] indices."""
    shape = (*index.shape, *values.shape[2:])
    return values.gather(1, index.reshape(*index.shape, *[1] * (values.dim() - 2)).expand(shape))


def beam_search(
    next_logits: NextLogits,
    context: torch.Tensor,
    lengths: torch.Tensor,
    *,
    beam_size: int,
    max_new_tokens: int,
    length_penalty: float,
    eos_id: int,
    pad_id: int,
) -> list[Hypothesis]:
    """The best finished hypothesis of each dialog (rows of `next_logits`: dialog-major)."""
    batch, k = context.shape[0], beam_size
    device = context.device
    seq = _with_context(context.repeat_interleave(k, 0), max_new_tokens, pad_id)
    start = lengths.repeat_interleave(k)
    # Only the first beam starts live, so the K beams do not begin as K copies of one.
    running = torch.zeros(batch, k, device=device)
    running[:, 1:] = _NEG
    tokens = torch.full((batch, k, max_new_tokens), pad_id, dtype=torch.long, device=device)
    final = torch.full((batch, k), _NEG, device=device)  # length-normalised scores
    final_logp = torch.zeros(batch, k, device=device)
    final_len = torch.zeros(batch, k, dtype=torch.long, device=device)
    final_tokens = tokens.clone()
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, dtype=torch.bool, device=device)
    top_k = torch.arange(2 * k, device=device) < k  # only these may finish (HF)
    steps = torch.arange(max_new_tokens, device=device)
    for t in range(max_new_tokens):
        if t:  # write the beams' tokens after each row's context
            seq.scatter_(1, start[:, None] + steps[:t], tokens.reshape(batch * k, -1)[:, :t])
        logp = _log_probs(next_logits, seq, start + t)
        vocab = logp.shape[-1]
        total = (logp.view(batch, k, vocab) + running[..., None]).view(batch, k * vocab)
        cand_score, cand_index = torch.topk(total, 2 * k)
        cand = _gather(tokens, torch.div(cand_index, vocab, rounding_mode="floor"))
        token = cand_index % vocab
        cand[:, :, t] = token
        ends = (token == eos_id) | (t + 1 == max_new_tokens)

        live_score = cand_score + ends.float() * _NEG
        keep = torch.topk(live_score, k).indices
        running, tokens = _gather(live_score, keep), _gather(cand, keep)

        just_finished = ends & top_k
        normalised = cand_score / float(t + 1) ** length_penalty
        normalised = normalised + (~improvable).float()[:, None] * _NEG
        normalised = normalised + (~just_finished).float() * _NEG
        merged = torch.cat([final, normalised], 1)
        best = torch.topk(merged, k).indices
        final = _gather(merged, best)
        final_logp = _gather(torch.cat([final_logp, cand_score], 1), best)
        final_len = _gather(torch.cat([final_len, torch.full_like(token, t + 1)], 1), best)
        final_tokens = _gather(torch.cat([final_tokens, cand], 1), best)
        finished = _gather(torch.cat([finished, just_finished], 1), best)

        worst = torch.where(finished, final.min(1, keepdim=True).values, _NEG)
        best_running = running[:, :1] / float(t + 1) ** length_penalty
        improvable &= (best_running > worst).any(1)
        if not bool(improvable.any()) or bool(ends.all()):
            break
    out = []
    for b in range(batch):
        length = int(final_len[b, 0])
        ids = final_tokens[b, 0, :length].tolist()
        if ids and ids[-1] == eos_id:
            ids = ids[:-1]
        out.append(Hypothesis(ids, float(final_logp[b, 0]), length))
    return out


def decode(
    next_logits: NextLogits,
    context: torch.Tensor,
    lengths: torch.Tensor,
    decoding: Decoding,
    *,
    eos_id: int,
    pad_id: int,
) -> list[Hypothesis]:
    """Greedy or beam search as `decoding` says (its max_length must be resolved)."""
    if decoding.max_length is None:
        raise ValueError("decode needs a resolved max_length (Decoding.resolved)")
    if decoding.beam_size == 1:
        return greedy_search(
            next_logits,
            context,
            lengths,
            max_new_tokens=decoding.max_length,
            eos_id=eos_id,
            pad_id=pad_id,
        )
    return beam_search(
        next_logits,
        context,
        lengths,
        beam_size=decoding.beam_size,
        max_new_tokens=decoding.max_length,
        length_penalty=decoding.length_penalty,
        eos_id=eos_id,
        pad_id=pad_id,
    )
