"""The synthetic "shapes" dataset: moving shapes in H.264 clips (AVSD-format dialogs) and still
shapes in JPEGs (VisDial-format dialogs), whose questions can only be answered from pixels.

`generate(out, size=..., seed=...)` writes it; `vdial synth` is the command line. The names
below are loaded on first use so that importing `vdial.synth.cli` stays free of numpy/PIL.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SIZES", "Plan", "SizeSpec", "SynthSummary", "generate", "plan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("vdial.synth.api"), name)
    raise AttributeError(f"module 'vdial.synth' has no attribute {name!r}")
