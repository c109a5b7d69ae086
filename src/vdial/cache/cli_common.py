"""Options and helpers shared by the `vdial cache` commands (typer and stdlib only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset name: the store is ./cache/NAME."),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Path or URL of the feature store, e.g. s3://bucket/cache/avsd (instead of "
        "--dataset). S3 credentials and endpoint come from the usual AWS_* variables.",
    ),
]

ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
]


def store_path(dataset: str | None, store: str | None) -> str | Path:
    if (dataset is None) == (store is None):
        raise typer.BadParameter("give exactly one of --dataset or --store")
    if store is None:
        return Path("cache") / dataset
    return store if "://" in store else Path(store)


def human_bytes(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    exponent = min(int(math.log(n, 1024)), len(units) - 1) if n > 0 else 0
    return f"{n} B" if exponent == 0 else f"{n / 1024**exponent:.1f} {units[exponent]}"


def item_shape_text(item_shape: list[int] | tuple[int, ...]) -> str:
    # Axis 0 (frames, regions) is ragged, so it shows as T.
    return "(" + ", ".join(["T", *map(str, item_shape)]) + ")"


def fail(err: Exception) -> typer.Exit:
    # User-facing problems (missing store, unknown feature, bad grid) print one line, exit 1.
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
