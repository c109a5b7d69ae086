"""The `vdial-train` command: fit a recipe on cached features, predict, export, gate.

What users get wrong (a missing recipe, a typo'd key, a run without a checkpoint, a feature
the store lacks, an incomplete model folder) is one line naming the file, key or path and
what to do, with exit status 1: never a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import typer

app = typer.Typer(
    name="vdial-train",
    help="Train dialog models on cached features (never touches pixels) and predict with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    from vdial.config import ConfigError
    from vdial.train.lm import LMError
    from vdial.train.run import RunError
    from vdial.train.stages import StageError

    try:
        yield
    except (ConfigError, RunError, LMError, StageError, FileNotFoundError, FileExistsError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None


def _launch(nproc: int) -> int:
    """Run this `fit` command again under torchrun with `nproc` local processes."""
    import sys

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--nproc")
    args, skip = [], False
    for arg in sys.argv[1:]:  # the command line minus --nproc
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if not arg.startswith("--nproc="):
            args.append(arg)
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "vdial.train.cli", *args])
    except ChildFailedError as err:  # each rank has printed its own error above
        failed = ", ".join(str(rank) for rank in sorted(err.failures))
        typer.secho(f"error: rank(s) {failed} failed", fg=typer.colors.RED, err=True)
        return 1
    return 0


@app.command()
def fit(
    config: Path = typer.Option(None, help="Recipe YAML (see configs/ and vdial.train.config)."),
    out: Path = typer.Option(..., help="Run directory; an existing run there is resumed."),
    features: Path = typer.Option(
        None, help="Feature store of a one-dataset recipe, e.g. cache/avsd."
    ),
    feature: str = typer.Option(None, help="Store feature of the `visual` role (dinov2/pool4x4)."),
    manifest: Path = typer.Option(
        None, help="Manifest directory (default manifests/<store name>)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a recipe key: --set model.lm.d_model=64 (repeatable)."
    ),
    stage: str = typer.Option(None, help="Run this stage only (the previous one must be done)."),
    visual: str = typer.Option(None, help="Visual input: real, zero or shuffle (ablations)."),
    steps: int = typer.Option(None, help="Steps of every stage (overrides the recipe)."),
    seed: int = typer.Option(None, help="Seed (overrides the recipe)."),
    device: str = typer.Option(None, help="Torch device, e.g. cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    nproc: int = typer.Option(
        None,
        help="Start this many processes on this machine (torchrun's elastic agent; "
        "use torchrun itself for several machines).",
    ),
) -> None:
    """Train (or resume) a run: the recipe's stages in order, each from the previous one.

    Under torchrun (`torchrun --nproc-per-node N -m vdial.train.cli fit ...`, or --nproc N)
    every rank takes its share of the same global batch: DDP, or FSDP2 with `parallel: fsdp`.
    """
    from vdial.train.config import load_recipe
    from vdial.train.loop import fit as run_fit

    if nproc is not None:
        raise typer.Exit(_launch(nproc))
    with _one_line_errors():
        cfg = load_recipe(
            config,
            features=str(features) if features else None,
            manifest=str(manifest) if manifest else None,
            feature=feature,
            assignments=tuple(set_),
            visual=visual,
            seed=seed,
            device=device,
            steps=steps,
        )
        result = run_fit(cfg, out, stage=stage, progress=progress)
    if os.environ.get("RANK", "0") != "0":
        return
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    typer.echo(
        f"stages {', '.join(result.stages)}: last ran {result.steps} steps{resumed}, "
        f"train loss {result.train_loss:.4f}{val} -> {out}"
    )


@app.command()
def predict(
    run: Path = typer.Option(..., help="Run directory written by `vdial-train fit`."),
    split: str = typer.Option("test", help="Split whose questions are answered."),
    out: Path = typer.Option(None, help="Output JSON (default <run>/predictions_<split>.json)."),
    dataset: str = typer.Option(None, help="Dataset of the run (default: its first)."),
    output: str = typer.Option(
        None, help="answers or scores (VisDial option scores; default where the model scores)."
    ),
    beam_size: int = typer.Option(1, help="Beams per dialog; 1 is greedy search."),
    length_penalty: float = typer.Option(
        1.0, help="Beam score = log p / length**A (HF's length_penalty; 0: plain log p)."
    ),
    max_length: int = typer.Option(
        None, help="Most answer tokens incl. <eos> (default: the model's max_answer_tokens)."
    ),
    batch_size: int = typer.Option(64, help="Dialogs decoded together."),
) -> None:
    """Answer a split: AVSD challenge JSON, VisDial generated answers or option scores.

    The settings are written beside the predictions as <name>.meta.json.
    """
    from vdial.train.generate import Decoding
    from vdial.train.predict import predict as run_predict

    with _one_line_errors():
        decoding = Decoding(
            beam_size=beam_size, length_penalty=length_penalty, max_length=max_length
        )
        path = run_predict(
            run,
            split,
            out=out,
            decoding=decoding,
            batch_size=batch_size,
            dataset=dataset,
            output=output,
        )
    typer.echo(f"predictions -> {path}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory written by `vdial-train fit`."),
    hf: Path = typer.Option(..., help="Directory to write the language model to (HF layout)."),
) -> None:
    """Write the run's language model and tokenizer so `from_pretrained(DIR)` loads them."""
    from vdial.train.export import export_hf

    with _one_line_errors():
        path = export_hf(run, hf)
    typer.echo(f"language model -> {path}")


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

    with _one_line_errors():
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
