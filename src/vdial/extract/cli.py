"""`vdial extract`, `vdial extract-text` and `vdial encoders`: thin wrappers over the runner, the
text tower and the registry."""

from __future__ import annotations

from pathlib import Path

import typer


def _weights_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"expected FAMILY=PATH, got {item!r}", param_hint="--weights")
        out[name] = path
    return out


def _options_map(items: list[str]) -> dict[str, dict[str, object]]:
    import yaml

    out: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        family, dot, option = key.partition(".")
        if not (sep and dot and family and option):
            raise typer.BadParameter(
                f"expected FAMILY.OPTION=VALUE, got {item!r}", param_hint="--option"
            )
        out.setdefault(family, {})[option] = yaml.safe_load(value)
    return out


def extract(
    dataset: str = typer.Option(
        None, "--dataset", "-d", help="Dataset name: reads manifests/NAME, writes cache/NAME."
    ),
    manifest: Path = typer.Option(None, help="Manifest directory (overrides --dataset's)."),
    store: Path = typer.Option(None, help="Feature store directory (overrides --dataset's)."),
    encoder: list[str] = typer.Option(
        ..., "--encoder", "-e", help="Encoder FAMILY[:SIZE], repeatable (see `vdial encoders`)."
    ),
    weights: list[str] = typer.Option(
        [], help="FAMILY=PATH to a local checkpoint, repeatable (default: $VDIAL_WEIGHTS)."
    ),
    option: list[str] = typer.Option(
        [],
        help="FAMILY.OPTION=VALUE builder option, repeatable, e.g. faster-rcnn.regions=36 "
        "(`vdial encoders --options` lists them).",
    ),
    random_init: bool = typer.Option(
        False, "--random-init", help="Seeded random weights instead of a checkpoint (recorded)."
    ),
    seed: int = typer.Option(0, help="Seed for --random-init."),
    frames: int = typer.Option(None, help="Frames per video (default: each encoder's own)."),
    backend: str = typer.Option(
        "pyav", help="Decoder backend: pyav (fastest in bench/decode.py), decord or torchcodec."
    ),
    decode_timeout: float = typer.Option(
        300.0, help="Seconds a video may take to decode before it fails (0: no limit)."
    ),
    decode_workers: int = typer.Option(
        2, help="Decoder processes per device (decoding is the bottleneck: use the free cores)."
    ),
    batch_frames: int = typer.Option(64, help="Input frames per forward pass, across videos."),
    precision: str = typer.Option(
        "fp32", help="fp32, or fp16/bf16 autocast for the forward passes (recorded)."
    ),
    devices: str = typer.Option(
        "cpu",
        help="Comma-separated torch devices, one pipeline each (cpu, cuda:0,cuda:1), or auto "
        "(every GPU, else the CPU).",
    ),
    scheduler: str = typer.Option(
        "local",
        help="local (this machine), or tcp://HOST:PORT of a dask.distributed scheduler whose "
        "workers run the tasks (GPU workers declare --resources GPU=1).",
    ),
    split: str = typer.Option(None, help="Only media of this split."),
    ids_file: Path = typer.Option(
        None, help="Only the media ids listed in this file (one per line; # starts a comment)."
    ),
    limit: int = typer.Option(None, help="At most this many media items."),
    retry_failed: bool = typer.Option(False, help="Retry items that failed in an earlier run."),
    segment_items: int = typer.Option(
        64, help="Media items per task and per committed store segment (the unit of resume)."
    ),
    dtype: str = typer.Option(
        "float16",
        help="Stored dtype of the features: float16 (half the bytes; the default) or float32.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run frozen encoders over a dataset's media into its feature store (resumable)."""
    from vdial.extract.runner import ExtractConfig, run_extraction
    from vdial.manifests import Manifest

    manifest, store = _locations(dataset, manifest, store, dtype)
    if precision not in ("fp32", "fp16", "bf16"):
        raise typer.BadParameter(f"--precision must be fp32, fp16 or bf16, got {precision!r}")
    if scheduler != "local" and not scheduler.startswith("tcp://"):
        raise typer.BadParameter(f"--scheduler must be local or tcp://HOST:PORT, got {scheduler!r}")
    if decode_workers < 1:
        raise typer.BadParameter(f"--decode-workers must be at least 1, got {decode_workers}")
    config = ExtractConfig(
        encoders=tuple(encoder),
        weights=_weights_map(weights),
        options=_options_map(option),
        random_init=random_init,
        seed=seed,
        frames=frames,
        backend=backend,
        decode_timeout_s=decode_timeout or None,
        batch_frames=batch_frames,
        decode_workers=decode_workers,
        precision=precision,
        devices=tuple(d.strip() for d in devices.split(",") if d.strip()),
        scheduler=None if scheduler == "local" else scheduler,
        split=split,
        ids=_read_ids(ids_file) if ids_file is not None else None,
        limit=limit,
        retry_failed=retry_failed,
        segment_items=segment_items,
        dtype=dtype,
    )
    try:
        summary = run_extraction(Manifest.read(manifest), store, config, progress=progress)
    except (FileNotFoundError, KeyError, ValueError) as err:
        # What users get wrong (a missing checkpoint or manifest, an unknown id or option, a
        # store feature with another spec) is one line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from err
    print_summary(summary, store)


def extract_text(
    dataset: str = typer.Option(
        None, "--dataset", "-d", help="Dataset name: reads manifests/NAME, writes cache/NAME."
    ),
    manifest: Path = typer.Option(None, help="Manifest directory (overrides --dataset's)."),
    store: Path = typer.Option(None, help="Feature store directory (overrides --dataset's)."),
    encoder: str = typer.Option("clip", "--encoder", "-e", help="Text tower clip[:SIZE]."),
    weights: Path = typer.Option(
        None, help="Local openai/clip-vit-* folder (default: $VDIAL_WEIGHTS/clip/<folder>)."
    ),
    random_init: bool = typer.Option(
        False, "--random-init", help="Seeded random weights, byte-level tokenizer (recorded)."
    ),
    seed: int = typer.Option(0, help="Seed for --random-init."),
    column: str = typer.Option("caption", help="Dialog-table text embedded: caption or summary."),
    key: str = typer.Option("dialog_id", help="Item id: dialog_id, or media_id (one per video)."),
    feature: str = typer.Option(None, help="Feature name (default: clip-text-COLUMN)."),
    split: str = typer.Option(None, help="Only dialogs of this split."),
    batch_size: int = typer.Option(64, help="Texts per forward pass."),
    device: str = typer.Option("cpu", help="Torch device of the forward passes."),
    dtype: str = typer.Option("float16", help="Stored dtype: float16 or float32."),
    retry_failed: bool = typer.Option(False, help="Retry keys that failed in an earlier run."),
) -> None:
    """Embed a dataset's captions with CLIP's text tower into its feature store (resumable)."""
    from vdial.extract.text import TextConfig, run_text_extraction
    from vdial.manifests import Manifest

    manifest, store = _locations(dataset, manifest, store, dtype)
    config = TextConfig(
        encoder=encoder,
        weights=None if weights is None else str(weights),
        random_init=random_init,
        seed=seed,
        column=column,
        key=key,
        feature=feature,
        split=split,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        retry_failed=retry_failed,
    )
    try:
        summary = run_text_extraction(Manifest.read(manifest), store, config)
    except (FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from err
    for item_id, message in sorted(summary.failed.items()):
        typer.secho(f"failed {item_id}: {message}", fg=typer.colors.RED)
    typer.echo(
        f"{summary.feature} in {store}: {summary.done} written, {summary.skipped} already there, "
        f"{len(summary.failed)} failed now, {summary.failed_before} failed earlier (skipped)"
    )


def _read_ids(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise typer.BadParameter(f"cannot read {path}: {err}", param_hint="--ids-file") from None
    ids = tuple(line.split("#", 1)[0].strip() for line in lines)
    return tuple(i for i in ids if i)


def print_summary(summary, store) -> None:
    """The final tables: items per feature, failures with their reasons, time per stage."""
    from rich.console import Console
    from rich.table import Table

    from vdial.extract.runner import summary_rows

    console = Console()
    table = Table(title=f"extraction into {store} on {', '.join(summary.devices)}")
    rows = summary_rows(summary)
    for column in rows[0] if rows else ():
        table.add_column(column, justify="left" if column == "feature" else "right")
    for row in rows:
        table.add_row(*map(str, row.values()))
    console.print(table)
    for item_id, failure in sorted(summary.failed.items()):
        console.print(f"[red]failed[/red] {item_id} ({failure['stage']}): {failure['message']}")
    if any(summary.failed_before.values()):
        console.print("items that failed earlier were skipped; --retry-failed tries them again")
    stages = Table(title="time per stage (seconds, summed over workers)")
    for column in (*summary.seconds, "wall", "videos/s", "frames/s"):
        stages.add_column(column, justify="right")
    wall = max(summary.wall_s, 1e-9)
    stages.add_row(
        *(f"{v:.1f}" for v in summary.seconds.values()),
        f"{summary.wall_s:.1f}",
        f"{summary.videos / wall:.2f}",
        f"{summary.frames / wall:.1f}",
    )
    console.print(stages)


def encoders(
    options: bool = typer.Option(False, help="Also list each family's builder options."),
) -> None:
    """List the registered encoders with the spec of every size (built without weights)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from vdial.extract.encoders import ENCODERS, build_encoder, builder_options

    table = Table(title="encoders (use --encoder FAMILY[:SIZE]; * marks the papers' size)")
    columns = ("encoder", "input px", "frames", "frames per unit", "stored: rows x tokens x dim")
    for column in columns:
        table.add_column(column)
    tapped = {}
    for name in ENCODERS:
        family = ENCODERS.get(name)
        for size in family.sizes:
            # The meta device gives the exact spec without allocating or loading weights.
            with torch.device("meta"):
                built = build_encoder(f"{name}:{size}", random_init=True)
            spec = built.spec
            star = "*" if size == family.default_size else ""
            rows = f"regions<={spec.max_regions}" if spec.max_regions else "T"
            if spec.frames_per_row > 1:
                rows = f"T/{spec.frames_per_row}"
            shape = " x ".join([rows, *map(str, built.item_shape)])
            if spec.max_regions:
                shape = f"{rows} x {spec.dim}"
            table.add_row(
                f"{name}:{size}{star}",
                str(spec.input_size),
                str(spec.frames),
                str(spec.clip_len),
                shape,
            )
            if size == family.default_size:
                tapped[name] = spec.layer
    console = Console()
    console.print(table)
    for name in ENCODERS:
        console.print(f"[bold]{name}[/bold]: {ENCODERS.get(name).summary}")
        console.print(f"    tapped: {tapped[name]}")
        if options:
            for key, default in builder_options(name).items():
                console.print(f"    --option {name}.{key}=...  (default {default!r})")


def _locations(
    dataset: str | None, manifest: Path | None, store: Path | None, dtype: str
) -> tuple[Path, Path]:
    """(manifest, store) from --dataset or both paths; --dtype checked on the way."""
    if manifest is None or store is None:
        if dataset is None:
            raise typer.BadParameter("give --dataset, or both --manifest and --store")
        manifest = manifest or Path("manifests") / dataset
        store = store or Path("cache") / dataset
    if dtype not in ("float16", "float32"):
        raise typer.BadParameter(f"--dtype must be float16 or float32, got {dtype!r}")
    return manifest, store
