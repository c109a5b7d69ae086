"""Evaluation as the benchmarks define it: AVSD generation metrics, VisDial retrieval metrics.

`vdial.evaluate.avsd` loads AVSD references (DSTC7/8 single, DSTC10 multiref) and predictions
and scores the last turn (or every turn) through `vdial.evaluate.coco`: the official
coco-caption path (Java PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) or the fast
in-process one (`vdial.evaluate.text` tokenisation, no METEOR). `vdial.evaluate.visdial`
computes R@k, MRR, mean rank and NDCG over ranked answer options, which
`vdial.evaluate.rankers` produce from generated answers. `vdial.evaluate.report` turns run
directories into a markdown report with loss curves.

Names are imported lazily so that `vdial.evaluate.cli` (and so `vdial --help`) loads no NumPy,
rich or pycocoevalcap until a command runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EvaluationError": "vdial.evaluate.avsd",
    "Reference": "vdial.evaluate.avsd",
    "compare_runs": "vdial.evaluate.report",
    "evaluate_avsd": "vdial.evaluate.avsd",
    "evaluate_visdial": "vdial.evaluate.visdial",
    "load_predictions": "vdial.evaluate.avsd",
    "load_question_types": "vdial.evaluate.avsd",
    "load_references": "vdial.evaluate.avsd",
    "normalize": "vdial.evaluate.text",
}

__all__ = [
    "EvaluationError",
    "Reference",
    "compare_runs",
    "evaluate_avsd",
    "evaluate_visdial",
    "load_predictions",
    "load_question_types",
    "load_references",
    "normalize",
]

if TYPE_CHECKING:
    from vdial.evaluate.avsd import (
        EvaluationError,
        Reference,
        evaluate_avsd,
        load_predictions,
        load_question_types,
        load_references,
    )
    from vdial.evaluate.report import compare_runs
    from vdial.evaluate.text import normalize
    from vdial.evaluate.visdial import evaluate_visdial


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
