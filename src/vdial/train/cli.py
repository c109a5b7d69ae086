"""The `vdial-train` command: fit a model on cached features, then predict with it."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    name="vdial-train",
    help="Train dialog models on cached features (never touches pixels) and predict with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def fit(
    features: Path = typer.Option(..., help="Feature store directory, e.g. cache/avsd."),
    feature: str = typer.Option(None, help="Feature in the store, e.g. dinov2/pool4x4."),
    config: Path = typer.Option(None, help="Recipe YAML (keys of vdial.train.config.TrainConfig)."),
    out: Path = typer.Option(..., help="Run directory; an existing run there is resumed."),
    manifest: Path = typer.Option(
        None, help="Manifest directory (default manifests/<store name>)."
    ),
    visual: str = typer.Option(None, help="Visual input: real, zero or shuffle (ablations)."),
    steps: int = typer.Option(None, help="Optimiser steps (overrides the recipe)."),
    seed: int = typer.Option(None, help="Seed (overrides the recipe)."),
    device: str = typer.Option(None, help="Torch device, e.g. cpu or cuda:0."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train (or resume) a run on cached features."""
    from vdial.config import load_config
    from vdial.train.config import TrainConfig
    from vdial.train.loop import fit as run_fit

    cfg = load_config(
        TrainConfig,
        config,
        features=str(features),
        feature=feature,
        manifest=str(manifest) if manifest else None,
        visual=visual,
        steps=steps,
        seed=seed,
        device=device,
    )
    result = run_fit(cfg, out, progress=progress)
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    typer.echo(
        f"trained {result.steps} steps{resumed}: train loss {result.train_loss:.4f}{val} -> {out}"
    )


@app.command()
def predict(
    run: Path = typer.Option(..., help="Run directory written by `vdial-train fit`."),
    split: str = typer.Option("test", help="Split whose questions are answered."),
    out: Path = typer.Option(None, help="Output JSON (default <run>/predictions_<split>.json)."),
    beam_size: int = typer.Option(1, help="Beams per dialog; 1 is greedy search."),
    length_penalty: float = typer.Option(
        1.0, help="Beam score = log p / length**A (HF's length_penalty; 0: plain log p)."
    ),
    max_length: int = typer.Option(
        None, help="Most answer tokens incl. <eos> (default: the run's max_answer_tokens)."
    ),
    batch_size: int = typer.Option(64, help="Dialogs decoded together."),
) -> None:
    """Answer a split: AVSD challenge JSON, or VisDial's generated-answers list.

    The decoding settings are written beside the predictions as <name>.meta.json.
    """
    from vdial.train.generate import Decoding
    from vdial.train.predict import predict as run_predict

    decoding = Decoding(beam_size=beam_size, length_penalty=length_penalty, max_length=max_length)
    path = run_predict(run, split, out=out, decoding=decoding, batch_size=batch_size)
    typer.echo(f"predictions -> {path}")


gate_app = typer.Typer(
    help="The re-evaluation gate: record a run's predictions and metrics, then re-compute them "
    "and compare exactly.",
    no_args_is_help=True,
)
app.add_typer(gate_app, name="gate")


@gate_app.command("record")
def gate_record(
    run: Path = typer.Argument(..., help="Run directory written by `vdial-train fit`."),
    out: Path = typer.Option(
        None, help="Gate directory to write (default <run>/gate); an existing gate is replaced."
    ),
    split: str = typer.Option("test", help="Split whose questions are answered."),
    references: Path = typer.Option(
        None, help="AVSD reference JSON to score against (without it: answers only)."
    ),
    question_types: Path = typer.Option(
        None, help="JSON {dialog_id: [type of each turn]} for the per-type breakdown."
    ),
    dialogs: int = typer.Option(None, help="Keep only the first N dialogs (a small fixture)."),
    beam_size: int = typer.Option(1, help="Beams per dialog; 1 is greedy search."),
    length_penalty: float = typer.Option(1.0, help="Beam score = log p / length**A."),
    max_length: int = typer.Option(
        None, help="Most answer tokens incl. <eos> (default: the run's max_answer_tokens)."
    ),
    batch_size: int = typer.Option(64, help="Dialogs decoded together."),
) -> None:
    """Record a run's gate: predictions and metrics to re-compute exactly later.

    The gate directory is self-contained (features of the split, manifest, references,
    weights) and holds only relative paths.
    """
    from vdial.train.gate import record_gate
    from vdial.train.generate import Decoding

    result = record_gate(
        run,
        out,
        split=split,
        references=references,
        question_types=question_types,
        dialogs=dialogs,
        decoding=Decoding(
            beam_size=beam_size, length_penalty=length_penalty, max_length=max_length
        ),
        batch_size=batch_size,
    )
    typer.echo(f"recorded {result.answers} {result.dataset} answers -> {result.path}")


@gate_app.command("check")
def gate_check(
    paths: list[Path] = typer.Argument(
        ..., help="Gate directories, or runs holding one in <run>/gate."
    ),
) -> None:
    """Re-evaluate gates (load store, predict, score) and compare exactly.

    Exits 1 on any difference, naming what changed: inputs, answers, metrics.
    """
    from vdial.train.gate import GateError, check_gate

    failed = 0
    for path in paths:
        try:
            result = check_gate(path)
        except (GateError, FileNotFoundError) as err:
            typer.echo(f"FAIL {err}", err=True)
            failed += 1
            continue
        scored = " and metrics" if result.metrics is not None else ""
        typer.echo(f"ok   {result.path}: {result.answers} answers{scored} as recorded")
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
