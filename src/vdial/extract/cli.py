"""`vdial extract` and `vdial encoders`: thin wrappers over the runner and the registry."""

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
    batch_frames: int = typer.Option(64, help="Frames per forward pass."),
    device: str = typer.Option("cpu", help="Torch device for the encoders, e.g. cuda:0."),
    split: str = typer.Option(None, help="Only media of this split."),
    limit: int = typer.Option(None, help="At most this many media items."),
    retry_failed: bool = typer.Option(False, help="Retry items that failed in an earlier run."),
    dtype: str = typer.Option(
        "float16",
        help="Stored dtype of the features: float16 (half the bytes; the default) or float32.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run frozen encoders over a dataset's media into its feature store (resumable)."""
    from rich.console import Console
    from rich.table import Table

    from vdial.extract.runner import ExtractConfig, run_extraction
    from vdial.manifests import Manifest

    if manifest is None or store is None:
        if dataset is None:
            raise typer.BadParameter("give --dataset, or both --manifest and --store")
        manifest = manifest or Path("manifests") / dataset
        store = store or Path("cache") / dataset
    if dtype not in ("float16", "float32"):
        raise typer.BadParameter(f"--dtype must be float16 or float32, got {dtype!r}")
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
        device=device,
        split=split,
        limit=limit,
        retry_failed=retry_failed,
        dtype=dtype,
    )
    summary = run_extraction(Manifest.read(manifest), store, config, progress=progress)
    console = Console()
    table = Table(title=f"extraction into {store}")
    columns = ("feature", "written", "already there", "failed earlier", "failed now")
    for column in columns:
        table.add_column(column, justify="right" if column != "feature" else "left")
    for name in summary.done:
        counts = (summary.done[name], summary.skipped[name], summary.failed_before[name])
        table.add_row(name, *map(str, counts), str(len(summary.failed)))
    console.print(table)
    for item_id, reason in sorted(summary.failed.items()):
        console.print(f"[red]failed[/red] {item_id}: {reason}")
    if any(summary.failed_before.values()):
        console.print("items that failed earlier were skipped; --retry-failed tries them again")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in summary.seconds.items())
    console.print(f"time per stage: {timing}")


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
                spec = build_encoder(f"{name}:{size}", random_init=True).spec
            star = "*" if size == family.default_size else ""
            rows = f"regions<={spec.max_regions}" if spec.max_regions else "T"
            if spec.frames_per_row > 1:
                rows = f"T/{spec.frames_per_row}"
            shape = f"{rows} x {spec.tokens_per_frame} x {spec.dim}"
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
