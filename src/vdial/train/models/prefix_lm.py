"""`prefix-lm`: projected visual tokens in front of a language model (the simplest LLM head).

The visual tokens of the `visual` role (pooled patch tokens, or regions with their boxes)
are normalised, projected to the language model's width and tagged with a learned segment
vector. A decoder-only model (GPT-2, LLaMA family) reads [visual; caption, history, question,
<sep>; answer] as one sequence; an encoder-decoder one (T5) reads [visual; context] in its
encoder and the answer through its decoder. The response loss covers the answer tokens only.

For VisDial the family can also score the 100 options (`discriminative: true`): the context
vector (the state at <sep> and the mean state of the visual and context positions) against
each option's mean token embedding, each through a linear map; losses "options"
(cross-entropy over the options) and "dense" (-sum relevance * log-softmax, on rounds with
dense annotations).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vdial.train.features import InputSpec
from vdial.train.generate import Decoding, Hypothesis, decode
from vdial.train.lm import (
    LMConfig,
    backbone,
    is_encoder_decoder,
    lm_is_encoder_decoder,
    load_language_model,
)
from vdial.train.lm.prefix import (
    causal_loss,
    causal_next_logits,
    decoder_start,
    seq2seq_loss,
    seq2seq_next_logits,
)
from vdial.train.models.base import (
    BuildContext,
    DialogModel,
    Processor,
    Unsupported,
    pad_ids,
    pad_stack,
)
from vdial.train.objectives import LossTerm, dense_relevance, options_cross_entropy
from vdial.train.samples import Sample
from vdial.train.tokenizer import Tokenizer


@dataclass(frozen=True, kw_only=True)
class PrefixLMConfig:
    """The `prefix-lm` family (all values ours: a baseline, not a paper's model)."""

    lm: LMConfig = field(default_factory=LMConfig)  # the language model (random GPT-2 default)
    visual_input: Literal["tokens", "regions"] = "tokens"  # what the visual role holds
    frames: int = 8  # tokens: rows kept per item (np.linspace subsample, zero padding)
    max_regions: int = 36  # regions: rows kept per item
    projector: Literal["linear", "mlp"] = "mlp"  # LayerNorm + Linear, or + GELU + Linear
    history_turns: int = 3  # most recent question/answer pairs of history kept
    use_caption: bool = True  # feed the caption (and summary) as context
    max_context_tokens: int = 96  # caption + history + question, truncated from the left
    max_answer_tokens: int = 20  # answer tokens (incl. end of sequence) kept for training
    discriminative: bool = False  # VisDial: also score the answer options
    max_option_tokens: int = 12  # tokens of each option kept by the option encoder


def context_text(sample: Sample, history_turns: int, use_caption: bool) -> list[str]:
    """Caption (+ summary), the last `history_turns` (question answer) pairs, the question."""
    parts = []
    if use_caption:
        caption = " ".join(t for t in (sample.caption, sample.summary) if t)
        if caption:
            parts.append(caption)
    if history_turns:
        parts += [f"{q} {a}".strip() for q, a in sample.history[-history_turns:]]
    if sample.question:
        parts.append(sample.question)
    return parts


class PrefixProcessor(Processor):
    def __init__(self, config: PrefixLMConfig, tokenizer: Tokenizer, encoder_decoder: bool):
        self.config, self.tok, self.encoder_decoder = config, tokenizer, encoder_decoder

    def encode(
        self, sample: Sample, features: dict, options: list[str], rng: np.random.Generator
    ) -> dict[str, Any]:
        cfg, tok = self.config, self.tok
        context: list[int] = []
        for k, part in enumerate(context_text(sample, cfg.history_turns, cfg.use_caption)):
            context += ([tok.sep_id] if k else []) + tok.encode(part)
        context = context[-(cfg.max_context_tokens - 1) :] + [tok.sep_id]
        if not self.encoder_decoder:
            context = [tok.bos_id, *context]
        answer = []
        if sample.answer is not None:
            answer = tok.encode(sample.answer)[: cfg.max_answer_tokens - 1] + [tok.eos_id]
        visual = features["visual"]
        item = {"visual": visual["data"], "context": context, "answer": answer}
        if cfg.visual_input == "regions":
            item["boxes"] = visual["boxes"]
        else:
            rows = int(visual["rows"])
            per_row = visual["data"].shape[1]
            item["visual_valid"] = np.repeat(np.arange(len(visual["data"])) < rows, per_row)
            item["visual"] = visual["data"].reshape(-1, visual["data"].shape[-1])
        if cfg.discriminative and options:
            item["options"] = [
                tok.encode(o)[: cfg.max_option_tokens] or [tok.eos_id] for o in options
            ]
            item["gt_index"] = -1 if sample.gt_index is None else sample.gt_index
            item["relevance"] = sample.relevance
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        tok = self.tok
        visual, mask = pad_stack([i["visual"] for i in items])
        if "visual_valid" in items[0]:
            mask &= pad_stack([i["visual_valid"] for i in items], dtype=torch.bool)[0]
        batch: dict[str, Any] = {"visual": visual, "visual_mask": mask}
        if "boxes" in items[0]:
            batch["boxes"] = pad_stack([i["boxes"] for i in items])[0]
        if self.encoder_decoder:
            batch["input_ids"], batch["attention_mask"] = pad_ids(
                [i["context"] for i in items], tok.pad_id
            )
            answers, answer_mask = pad_ids([i["answer"] for i in items], tok.pad_id)
            batch["labels"] = answers.masked_fill(answer_mask == 0, -100)
        else:
            rows = [i["context"] + i["answer"] for i in items]
            batch["input_ids"], batch["attention_mask"] = pad_ids(rows, tok.pad_id)
            labels = torch.full_like(batch["input_ids"], -100)
            for r, i in enumerate(items):
                start = len(i["context"])
                labels[r, start : start + len(i["answer"])] = torch.tensor(
                    i["answer"], dtype=torch.long
                )
            batch["labels"] = labels
        batch["context_lengths"] = torch.tensor([len(i["context"]) for i in items])
        if "options" in items[0]:
            n = len(items[0]["options"])
            flat = [o for i in items for o in i["options"]]
            ids, opt_mask = pad_ids(flat, tok.pad_id)
            batch["option_ids"] = ids.view(len(items), n, -1)
            batch["option_mask"] = opt_mask.view(len(items), n, -1)
            batch["gt_index"] = torch.tensor([i["gt_index"] for i in items])
            dense = [i["relevance"] is not None for i in items]
            batch["relevance"] = torch.tensor(
                [i["relevance"] if d else [0.0] * n for i, d in zip(items, dense, strict=True)]
            )
            batch["has_relevance"] = torch.tensor(dense)
        return batch


class PrefixLM(DialogModel):
    """Visual prefix + a language model (GPT-2, T5 or LLaMA family)."""

    Config = PrefixLMConfig
    discriminative = True  # when configured so; `score_options` says otherwise

    @classmethod
    def inputs(cls, config: PrefixLMConfig) -> dict[str, InputSpec]:
        if config.visual_input == "regions":
            return {"visual": InputSpec(kind="regions", max_regions=config.max_regions)}
        return {"visual": InputSpec(kind="tokens", frames=config.frames)}

    @classmethod
    def loss_names(cls, config: PrefixLMConfig) -> tuple[str, ...]:
        return ("response", "options", "dense") if config.discriminative else ("response",)

    @classmethod
    def default_losses(cls, config: PrefixLMConfig) -> dict[str, float]:
        return {"response": 1.0, **({"options": 1.0} if config.discriminative else {})}

    @classmethod
    def processor(cls, config: PrefixLMConfig, tokenizer: Tokenizer) -> Processor:
        return PrefixProcessor(config, tokenizer, encoder_decoder=lm_is_encoder_decoder(config.lm))

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        return {
            "model": {
                "frames": 2,
                "discriminative": True,
                "lm": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
            },
            "inputs": {"visual": ["tokens"]},
            "features": {"tokens": {"shape": [4, 8], "kind": "tokens"}},
            "kinds": ["avsd", "visdial"],
        }

    def __init__(self, config: PrefixLMConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.config = config
        self.tok = ctx.tokenizer
        self.lm = load_language_model(config.lm, ctx.tokenizer)
        self.encoder_decoder = is_encoder_decoder(self.lm)
        d = self.lm.get_input_embeddings().embedding_dim
        dv = ctx.inputs["visual"].dim
        layers: list[nn.Module] = [nn.LayerNorm(dv), nn.Linear(dv, d)]
        if config.projector == "mlp":
            layers += [nn.GELU(), nn.Linear(d, d)]
        self.visual_proj = nn.Sequential(*layers)
        self.box_proj = nn.Linear(4, d) if config.visual_input == "regions" else None
        self.segment = nn.Parameter(torch.randn(2, d) * 0.02)  # 0: visual, 1: text
        if config.discriminative:
            self.context_head = nn.Linear(2 * d, d)
            # LayerNorm: a language model's embeddings start tiny (GPT-2: std 0.02), and
            # without it options differ too little at first for their scores to diverge
            self.option_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))

    def _visual(self, batch: dict[str, Any]) -> torch.Tensor:
        vis = self.visual_proj(batch["visual"])
        if self.box_proj is not None:
            vis = vis + self.box_proj(batch["boxes"])
        return vis + self.segment[0]

    def _text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids) + self.segment[1]

    def _encoded(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = torch.cat([self._visual(batch), self._text(batch["input_ids"])], dim=1)
        mask = torch.cat([batch["visual_mask"].long(), batch["attention_mask"]], dim=1)
        return embeds, mask

    def _context_vector(self, batch: dict[str, Any], hidden: torch.Tensor) -> torch.Tensor:
        """[the state at the context's last token (<sep>); the mean state over every valid
        position]: the mean reads the visual positions directly, which the <sep> state alone
        learns to attend to only slowly."""
        mask = torch.cat([batch["visual_mask"].long(), batch["attention_mask"]], 1)
        if not self.encoder_decoder:  # the answer tokens follow the context: not context
            width = batch["visual"].shape[1] + batch["context_lengths"]
            mask = mask * (torch.arange(mask.shape[1], device=mask.device)[None] < width[:, None])
        weights = mask[..., None].to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        sep = batch["visual"].shape[1] + batch["context_lengths"] - 1
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), sep]
        return torch.cat([last, mean], dim=-1)

    def _option_scores(self, batch: dict[str, Any], hidden: torch.Tensor) -> torch.Tensor:
        ctx = self.context_head(self._context_vector(batch, hidden))
        emb = self.lm.get_input_embeddings()(batch["option_ids"])
        mask = batch["option_mask"][..., None].to(emb.dtype)
        options = self.option_head((emb * mask).sum(2) / mask.sum(2).clamp(min=1))
        return torch.einsum("bd,bnd->bn", ctx, options) / ctx.shape[-1] ** 0.5

    def _hidden(self, batch: dict[str, Any]) -> tuple[LossTerm, torch.Tensor]:
        embeds, mask = self._encoded(batch)
        if self.encoder_decoder:
            return seq2seq_loss(self.lm, embeds, mask, batch["labels"])
        prefix = batch["visual"].shape[1]
        labels = torch.cat(
            [batch["labels"].new_full((len(embeds), prefix), -100), batch["labels"]], 1
        )
        return causal_loss(self.lm, embeds, mask, labels)

    def forward(self, batch: dict[str, Any], losses: Collection[str]) -> dict[str, LossTerm]:
        response, hidden = self._hidden(batch)
        out = {"response": response}
        if (
            self.config.discriminative
            and "option_ids" in batch
            and {"options", "dense"} & set(losses)
        ):
            scores = self._option_scores(batch, hidden)
            has_gt = batch["gt_index"] >= 0
            out["options"] = options_cross_entropy(scores[has_gt], batch["gt_index"][has_gt])
            out["dense"] = dense_relevance(scores, batch["relevance"], mask=batch["has_relevance"])
        return out

    def score_options(self, batch: dict[str, Any]) -> torch.Tensor:
        if not self.config.discriminative:
            raise Unsupported("this prefix-lm has no option head (discriminative: false)")
        embeds, mask = self._encoded(batch)
        if self.encoder_decoder:
            hidden = self.lm.get_encoder()(
                inputs_embeds=embeds, attention_mask=mask
            ).last_hidden_state
        else:
            hidden = backbone(self.lm)(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self._option_scores(batch, hidden)

    @torch.no_grad()
    def search(self, batch: dict[str, Any], decoding: Decoding) -> list[Hypothesis]:
        if self.encoder_decoder:
            embeds, mask = self._encoded(batch)
            next_logits = seq2seq_next_logits(self.lm, embeds, mask)
            context, lengths = decoder_start(self.lm, len(embeds), embeds.device)
        else:
            next_logits = causal_next_logits(
                self.lm, self._visual(batch), batch["visual_mask"], self._text
            )
            context, lengths = batch["input_ids"], batch["context_lengths"]
        return decode(
            next_logits, context, lengths, decoding, eos_id=self.tok.eos_id, pad_id=self.tok.pad_id
        )
