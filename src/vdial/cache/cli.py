"""`vdial cache`: inspect a feature store and derive pooled views from it.

Only typer and the standard library are imported at module level; the store implementation
(Zarr, NumPy, torch) loads inside each command so `vdial --help` stays instant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Inspect, verify and derive cached features.",
    pretty_exceptions_enable=False,
)

DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset name: the store is ./cache/NAME."),
]
StoreOption = Annotated[
    Path | None, typer.Option("--store", help="Path of the feature store (instead of --dataset).")
]


def _store_path(dataset: str | None, store: Path | None) -> Path:
    if (dataset is None) == (store is None):
        raise typer.BadParameter("give exactly one of --dataset or --store")
    return store if store is not None else Path("cache") / dataset


def _human_bytes(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    exponent = min(int(math.log(n, 1024)), len(units) - 1) if n > 0 else 0
    return f"{n} B" if exponent == 0 else f"{n / 1024**exponent:.1f} {units[exponent]}"


def _shape(item_shape: list[int] | tuple[int, ...]) -> str:
    # Axis 0 (frames, regions) is ragged, so it shows as T.
    return "(" + ", ".join(["T", *map(str, item_shape)]) + ")"


def _fail(err: Exception) -> typer.Exit:
    # User-facing problems (missing store, unknown feature, bad grid) print one line, exit 1.
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def info(dataset: DatasetOption = None, store: StoreOption = None) -> None:
    """List the features of a store: items, failures, shapes, size on disk and provenance."""
    from rich.console import Console
    from rich.table import Table

    from vdial.cache.store import FeatureStore

    path = _store_path(dataset, store)
    try:
        rows = FeatureStore.open(path, "r").info()
    except (FileNotFoundError, ValueError) as err:
        raise _fail(err) from err
    table = Table(title=f"feature store {path}")
    columns = ("feature", "items", "failed", "item shape", "dtype", "on disk")
    for column in (*columns, "encoder", "weights", "parent"):
        # Fold rather than truncate: a cut-off feature name or digest is useless.
        justify = "right" if column in ("items", "failed") else "left"
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["items"]),
            str(row["failed"]),
            _shape(row["item_shape"]),
            row["dtype"],
            _human_bytes(row["bytes"]),
            row["encoder"] or "-",
            row["weights"] or "-",
            row["parent"] or "-",
        )
    console = Console()
    console.print(table)
    for row in rows:
        if row["superseded"] or row["uncommitted_segments"]:
            console.print(
                f"{row['name']}: {row['superseded']} item copies superseded by later writes, "
                f"{row['uncommitted_segments']} uncommitted segment(s) (in progress or crashed)"
            )


@app.command()
def pool(
    feature: Annotated[
        str, typer.Option("--feature", help="Source feature with (T, H*W, D) patch-token items.")
    ],
    grid: Annotated[int, typer.Option("--grid", min=1, help="Output grid side g: g x g tokens.")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Name of the new feature (default: FEATURE/pool<g>x<g>)."),
    ] = None,
    dataset: DatasetOption = None,
    store: StoreOption = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
    ] = True,
) -> None:
    """Average-pool each frame's patch grid to g x g as a new feature (resumable)."""
    from vdial.cache.store import FeatureStore
    from vdial.cache.views import pool_spatial

    path = _store_path(dataset, store)
    try:
        FeatureStore.open(path, "r")  # a missing store is an error; mode "a" would create it
        view = pool_spatial(
            FeatureStore.open(path, "a"), feature, grid, name=name, progress=progress
        )
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(f"{view.name}: {len(view)} items, item shape {_shape(view.item_shape)}")
