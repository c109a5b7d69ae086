"""A VGD-GPT2-style generator: projected visual tokens as a prefix to a small GPT-2.

The video's pooled tokens are normalised and projected to the language width, tagged with a
segment embedding, and placed before the text (caption, history, question, <sep>, answer);
the GPT-2 language head (transformers, random-initialised at a small size since no pretrained
weights can be downloaded) is trained on the answer tokens only. Decoding (greedy or beam
search, `vdial.train.generate`) runs over right-padded batches: each row's next token is read
at its own length, so no padding ever sits between the prefix and the text.
"""

from __future__ import annotations

import torch
from torch import nn

from vdial.train.config import TrainConfig
from vdial.train.generate import Decoding, Hypothesis, NextLogits, decode


class VisualGPT2(nn.Module):
    """Visual prefix + GPT-2 language head."""

    def __init__(
        self,
        *,
        visual_dim: int,
        visual_tokens: int,
        vocab_size: int,
        config: TrainConfig,
        special: dict[str, int],
    ) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        super().__init__()
        self.special = dict(special)
        self.visual_proj = nn.Sequential(
            nn.LayerNorm(visual_dim),
            nn.Linear(visual_dim, config.d_model),
            nn.GELU(),
            nn.Linear(config.d_model, config.d_model),
        )
        self.segment = nn.Embedding(2, config.d_model)  # 0: visual prefix, 1: text
        nn.init.normal_(self.segment.weight, std=0.02)  # GPT-2's embedding scale
        positions = visual_tokens + config.max_context_tokens + config.max_answer_tokens + 1
        self.lm = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_positions=positions,
                n_embd=config.d_model,
                n_layer=config.n_layers,
                n_head=config.n_heads,
                resid_pdrop=config.dropout,
                embd_pdrop=config.dropout,
                attn_pdrop=0.0,  # attention dropout triples the CPU cost of SDPA
                # GPT-2's tanh-approximated GELU as one fused kernel (the default spells it out
                # in Python ops: the same function, several times slower on CPU)
                activation_function="gelu_pytorch_tanh",
                bos_token_id=special["bos"],
                eos_token_id=special["eos"],
                pad_token_id=special["pad"],
            )
        )

        # transformers derives the loss from the class name and warns when it cannot;
        # a GPT-2 language head is a causal LM.
        self.lm.loss_type = "ForCausalLM"

    def _embed(self, visual: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        vis = self.visual_proj(visual) + self.segment.weight[0]
        text = self.lm.transformer.wte(input_ids) + self.segment.weight[1]
        return torch.cat([vis, text], dim=1)

    def forward(
        self,
        visual: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens (labels -100 elsewhere)."""
        batch, prefix = visual.shape[:2]
        mask = torch.cat([attention_mask.new_ones(batch, prefix), attention_mask], dim=1)
        full_labels = None
        if labels is not None:
            full_labels = torch.cat([labels.new_full((batch, prefix), -100), labels], dim=1)
        out = self.lm(
            inputs_embeds=self._embed(visual, input_ids), attention_mask=mask, labels=full_labels
        )
        return out.loss

    def next_logits(self, visual: torch.Tensor) -> NextLogits:
        """The next-token function `vdial.train.generate` searches with, for this batch's
        visual tokens (rows beyond the batch are its beams, dialog-major)."""
        batch, prefix = visual.shape[:2]
        # The visual prefix does not change while decoding: project it once per batch.
        vis = self.visual_proj(visual) + self.segment.weight[0]

        def next_logits(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            rows, span = seq.shape
            prefix_rows = vis if rows == batch else vis.repeat_interleave(rows // batch, 0)
            text = self.lm.transformer.wte(seq) + self.segment.weight[1]
            text_mask = (torch.arange(span, device=seq.device)[None] < lengths[:, None]).long()
            mask = torch.cat([text_mask.new_ones(rows, prefix), text_mask], dim=1)
            out = self.lm(inputs_embeds=torch.cat([prefix_rows, text], 1), attention_mask=mask)
            # each row's next token is read at its own length: padding only ever follows it
            return out.logits[torch.arange(rows, device=seq.device), prefix + lengths - 1]

        return next_logits

    @torch.no_grad()
    def search(
        self,
        visual: torch.Tensor,
        input_ids: torch.Tensor,
        context_lengths: torch.Tensor,
        decoding: Decoding,
    ) -> list[Hypothesis]:
        """Decoded answers (tokens and log-probabilities) for right-padded contexts."""
        return decode(
            self.next_logits(visual),
            input_ids,
            context_lengths,
            decoding,
            eos_id=self.special["eos"],
            pad_id=self.special["pad"],
        )

    def generate(
        self,
        visual: torch.Tensor,
        input_ids: torch.Tensor,
        context_lengths: torch.Tensor,
        max_new_tokens: int,
        *,
        beam_size: int = 1,
        length_penalty: float = 1.0,
    ) -> list[list[int]]:
        """Answer token ids (greedy, or beam search for beam_size > 1); each ends before <eos>."""
        decoding = Decoding(
            beam_size=beam_size, length_penalty=length_penalty, max_length=max_new_tokens
        )
        return [h.tokens for h in self.search(visual, input_ids, context_lengths, decoding)]
