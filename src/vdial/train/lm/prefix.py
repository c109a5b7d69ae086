"""A language model fed embeddings instead of token ids: training losses and next-token logits.

Every family that puts visual tokens in front of (or into) a language model needs the same
two things, for decoder-only models (GPT-2, LLaMA: one sequence of embeddings, answer tokens
labelled) and encoder-decoder ones (T5: embeddings into the encoder, the answer through the
decoder):

* a loss on the labelled tokens only. For decoder-only models the vocabulary projection runs
  on the labelled positions alone, so a 49k-token vocabulary costs B x answer tokens rows,
  not B x the whole sequence;
* a `NextLogits` function for `vdial.train.generate`, whose prefix (visual tokens, encoder
  states) is computed once per batch and repeated for the beams (rows dialog-major). Each row
  of a right-padded batch is read at its own length, so padding only ever follows the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vdial.train.lm import backbone
from vdial.train.objectives import LossTerm, token_cross_entropy

EmbedFn = Callable[[torch.Tensor], torch.Tensor]  # token ids [rows, L] -> embeddings


def causal_loss(
    lm: Any, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[LossTerm, torch.Tensor]:
    """(cross-entropy of the labelled positions, last hidden states) of a decoder-only `lm`.

    `labels` [B, S] are aligned with `embeds` [B, S, d]: the token at position t is predicted
    from the hidden state at t - 1; -100 marks positions without a target.
    """
    hidden = backbone(lm)(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    where = targets != -100
    logits = lm.get_output_embeddings()(hidden[:, :-1][where])
    return token_cross_entropy(logits, targets[where]), hidden


def seq2seq_loss(
    lm: Any, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[LossTerm, torch.Tensor]:
    """(decoder cross-entropy, encoder hidden states) of an encoder-decoder `lm` whose
    encoder reads `embeds` and whose decoder is trained on `labels` [B, A] (-100: padding)."""
    encoder = lm.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    out = lm(encoder_outputs=(encoder,), attention_mask=mask, labels=labels)
    return token_cross_entropy(out.logits, labels), encoder


def _rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    return x if x.shape[0] == rows else x.repeat_interleave(rows // x.shape[0], 0)


def causal_next_logits(
    lm: Any, prefix: torch.Tensor, prefix_mask: torch.Tensor, embed: EmbedFn
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """NextLogits of a decoder-only `lm` over [prefix embeddings; embed(text)]."""
    width = prefix.shape[1]

    def next_logits(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows, span = seq.shape
        text_mask = (torch.arange(span, device=seq.device)[None] < lengths[:, None]).long()
        mask = torch.cat([_rows(prefix_mask, rows).long(), text_mask], dim=1)
        embeds = torch.cat([_rows(prefix, rows), embed(seq)], dim=1)
        hidden = backbone(lm)(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(rows, device=seq.device), width + lengths - 1]
        return lm.get_output_embeddings()(last)

    return next_logits


def seq2seq_next_logits(
    lm: Any, embeds: torch.Tensor, mask: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """NextLogits of an encoder-decoder `lm`: the encoder runs once on `embeds`; `seq` holds
    the decoder's tokens (starting with its decoder_start_token)."""
    encoder = lm.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    def next_logits(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows, span = seq.shape
        dec_mask = (torch.arange(span, device=seq.device)[None] < lengths[:, None]).long()
        out = lm(
            encoder_outputs=(_rows(encoder, rows),),
            attention_mask=_rows(mask, rows),
            decoder_input_ids=seq,
            decoder_attention_mask=dec_mask,
        )
        return out.logits[torch.arange(rows, device=seq.device), lengths - 1]

    return next_logits


def decoder_start(lm: Any, rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's first token for `rows` dialogs and its length (1), for generation."""
    start = lm.config.decoder_start_token_id
    if start is None:
        start = lm.config.pad_token_id
    ids = torch.full((rows, 1), int(start), dtype=torch.long, device=device)
    return ids, torch.ones(rows, dtype=torch.long, device=device)
