"""The model registry: one file per family, one registration line each.

A model is built as `MODELS.get(name)(visual_dim=, visual_tokens=, vocab_size=, config=,
special=)` and exposes `forward(visual, input_ids, attention_mask, labels) -> loss` and
`generate(visual, input_ids, context_lengths, max_new_tokens) -> list[list[int]]`.
"""

from __future__ import annotations

from vdial.registry import Registry

MODELS: Registry = Registry("model")


def _register_builtin() -> None:
    from vdial.train.models import visual_gpt2

    MODELS.register("visual-gpt2")(visual_gpt2.VisualGPT2)


_register_builtin()
