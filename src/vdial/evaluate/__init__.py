"""Evaluation: AVSD generation metrics on the scored turn, and run-comparison reports.

`vdial.evaluate.avsd` loads references and predictions and computes BLEU/ROUGE-L/CIDEr and
exact match; `vdial.evaluate.report` turns run directories into a markdown report with loss
curves; `vdial.evaluate.text` holds the in-process PTB normalisation both sides go through.
"""

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

__all__ = [
    "EvaluationError",
    "Reference",
    "compare_runs",
    "evaluate_avsd",
    "load_predictions",
    "load_question_types",
    "load_references",
    "normalize",
]
