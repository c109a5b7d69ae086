"""A VGD-GPT2-style generator: projected visual tokens as a prefix to a small GPT-2.

The video's pooled tokens are normalised and projected to the language width, tagged with a
segment embedding, and placed before the text (caption, history, question, <sep>, answer);
the GPT-2 language head (transformers, random-initialised at a small size since no pretrained
weights can be downloaded) is trained on the answer tokens only. Decoding is greedy over
right-padded batches: each row's next token is read at its own length, so no padding ever
sits between the prefix and the text.
"""

from __future__ import annotations

import torch
from torch import nn

from vdial.train.config import TrainConfig


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

    @torch.no_grad()
    def generate(
        self,
        visual: torch.Tensor,
        input_ids: torch.Tensor,
        context_lengths: torch.Tensor,
        max_new_tokens: int,
    ) -> list[list[int]]:
        """Greedy answers for right-padded contexts; each list ends before <eos>."""
        batch, prefix = visual.shape[:2]
        lengths = context_lengths.clone()
        width = int(lengths.max()) + max_new_tokens
        seq = input_ids.new_full((batch, width), self.special["pad"])
        seq[:, : input_ids.shape[1]] = input_ids
        done = torch.zeros(batch, dtype=torch.bool, device=seq.device)
        answers: list[list[int]] = [[] for _ in range(batch)]
        rows = torch.arange(batch, device=seq.device)
        for _ in range(max_new_tokens):
            span = int(lengths.max())
            text_mask = (torch.arange(span, device=seq.device)[None] < lengths[:, None]).long()
            mask = torch.cat([text_mask.new_ones(batch, prefix), text_mask], dim=1)
            logits = self.lm(inputs_embeds=self._embed(visual, seq[:, :span]), attention_mask=mask)
            nxt = logits.logits[rows, prefix + lengths - 1].argmax(-1)
            for b in torch.nonzero(~done).flatten().tolist():
                token = int(nxt[b])
                if token == self.special["eos"]:
                    done[b] = True
                else:
                    answers[b].append(token)
                    seq[b, lengths[b]] = token
                    lengths[b] += 1
            if bool(done.all()):
                break
        return answers
