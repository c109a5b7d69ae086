"""The model registry: one file per family, one registration line each.

A family is a `vdial.train.models.base.DialogModel` subclass (its config dataclass, inputs,
processor, named losses, and generation or option scores); the trainer, the predictor, the
recipes and the contract tests find it here by name.
"""

from __future__ import annotations

from vdial.registry import Registry

MODELS: Registry = Registry("model family")


def _register_builtin() -> None:
    from vdial.train.models import prefix_lm

    MODELS.register("prefix-lm")(prefix_lm.PrefixLM)


_register_builtin()
