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
    split: str = typer.Option("test", help="Split whose unanswered last turns are answered."),
    out: Path = typer.Option(None, help="Output JSON (default <run>/predictions_<split>.json)."),
) -> None:
    """Answer the last turn of each dialog of a split; writes the AVSD submission format."""
    from vdial.train.predict import predict as run_predict

    path = run_predict(run, split, out=out)
    typer.echo(f"predictions -> {path}")


if __name__ == "__main__":
    app()
