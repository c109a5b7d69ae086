"""`vdial eval`: score AVSD predictions and compare runs.

Only typer and the standard library are imported here; the metric code (pycocoevalcap,
matplotlib, tensorboard) loads inside the commands so that `vdial --help` stays instant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True, help="Score predictions with the benchmarks' metrics; compare runs."
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@app.command("avsd")
def avsd(
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions",
            help="Generated answers: a filled-in AVSD test JSON, a list of "
            '{"dialog_id", "turn", "answer"} or a {dialog_id: answer} mapping.',
        ),
    ],
    references: Annotated[
        Path,
        typer.Option(
            "--references", help="AVSD reference JSON (DSTC7/8 single or DSTC10 multiref)."
        ),
    ],
    question_types: Annotated[
        Path | None,
        typer.Option(
            "--question-types",
            help="JSON {dialog_id: [type of each turn]} for a per-type breakdown.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the metrics JSON (default: metrics.json beside the predictions).",
        ),
    ] = None,
) -> None:
    """Score AVSD answers on the last turn of each dialog (BLEU, ROUGE-L, CIDEr, exact match)."""
    from rich.console import Console

    from vdial.evaluate.avsd import (
        EvaluationError,
        evaluate_avsd,
        load_predictions,
        load_question_types,
        load_references,
    )
    from vdial.evaluate.report import metrics_table

    try:
        refs = load_references(references)
        preds = load_predictions(predictions, references=refs)
        types = load_question_types(question_types) if question_types is not None else None
        result = evaluate_avsd(preds, refs, question_types=types)
    except EvaluationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    result["references"] = str(references)
    result["references_sha256"] = _sha256(references)
    result["predictions"] = str(predictions)
    out = out if out is not None else predictions.with_name("metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console = Console()
    console.print(metrics_table(result, title=f"AVSD metrics: {predictions}"))
    if result["missing"]:
        console.print(
            f"[yellow]{len(result['missing'])} dialog(s) had no prediction and were "
            "scored as empty answers.[/yellow]"
        )
    console.print(f"wrote {out}")


@app.command("compare")
def compare(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories, each with metrics.json and TensorBoard logs under tb/."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Markdown report to write; the loss plot goes beside it as <stem>_loss.png.",
        ),
    ],
) -> None:
    """Write a markdown report with loss curves and metric tables for several runs."""
    from rich.console import Console

    from vdial.evaluate.avsd import EvaluationError
    from vdial.evaluate.report import compare_runs

    console = Console()
    try:
        report = compare_runs(run_dirs, out, console=console)
    except EvaluationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    console.print(f"wrote {report} and {report.with_name(report.stem + '_loss.png')}")
