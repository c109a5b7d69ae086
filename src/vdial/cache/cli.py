"""`vdial cache`: inspect a feature store and derive pooled views from it.

Only typer and the standard library are imported at module level; the store implementation
(Zarr, NumPy, torch) loads inside each command so `vdial --help` stays instant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

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


def _store_path(dataset: str | None, store: str | None) -> str | Path:
    if (dataset is None) == (store is None):
        raise typer.BadParameter("give exactly one of --dataset or --store")
    if store is None:
        return Path("cache") / dataset
    return store if "://" in store else Path(store)


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
    """List the features of a store: items, failures, shapes, size on disk, provenance, lineage."""
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
    for column in (*columns, "made by", "weights or source", "derived from"):
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
            _lineage(row["lineage"]),
        )
    console = Console()
    console.print(table)
    for row in rows:
        if row["failed"]:
            stages = ", ".join(f"{n} at {stage}" for stage, n in row["failed_by_stage"].items())
            console.print(f"{row['name']}: {row['failed']} failed items ({stages})")
        if row["superseded"] or row["uncommitted_segments"] or row["malformed_segments"]:
            console.print(
                f"{row['name']}: {row['superseded']} item copies superseded by later writes, "
                f"{row['uncommitted_segments']} uncommitted segment(s) (in progress or crashed), "
                f"{row['malformed_segments']} segment(s) with an unreadable index"
            )


def _lineage(lineage: dict | None) -> str:
    if not lineage:
        return "-"
    transform = dict(lineage.get("transform") or {})
    op = transform.pop("op", "?")
    params = ", ".join(f"{k}={v}" for k, v in transform.items())
    return f"{lineage.get('parent')} | {op}({params})"


@app.command()
def verify(
    dataset: DatasetOption = None,
    store: StoreOption = None,
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", help="A feature to check (repeatable; default: all of them)."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="Manifest directory whose media ids every feature must hold (default with "
            "--dataset: manifests/NAME when it exists).",
        ),
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option("--split", help="Only expect the media of this split (repeatable)."),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the whole report (every id) to this JSON file."),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Check ids against the manifest, every chunk's checksum, NaN/Inf, indexes and specs.

    Exits 1 when anything is wrong (missing ids, damaged or truncated shards, NaN/Inf, malformed
    indexes, segments written under another spec); failed items, uncommitted segments and stale
    views are warnings.
    """
    import json

    from vdial.cache.store import FeatureStore
    from vdial.cache.verify import print_report

    path = _store_path(dataset, store)
    if manifest is None and dataset is not None and (Path("manifests") / dataset).is_dir():
        manifest = Path("manifests") / dataset
    try:
        opened = FeatureStore.open(path, "r")
        names = feature or opened.features
        for name in names:
            opened[name]  # an unknown feature is a one-line error before any work
        expected = None
        if manifest is not None:
            from vdial.manifests import Manifest

            media = Manifest.read(manifest).media
            expected = [
                i
                for i, s in zip(media["id"].to_pylist(), media["split"].to_pylist(), strict=True)
                if not split or s in split
            ]
        report = _verify_with_progress(opened, names, expected, progress)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise _fail(err) from err
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print_report(report, manifest)
    if not report.ok:
        raise typer.Exit(code=1)


def _verify_with_progress(opened, names, expected, progress):
    from rich.progress import Progress

    from vdial.cache.verify import verify_store

    total = sum(len(opened[n].segments) for n in names)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("verifying segments", total=total)
        return verify_store(
            opened,
            features=names,
            expected_ids=expected,
            on_segment=lambda n: bar.advance(task, n),
        )


@app.command()
def pool(
    feature: Annotated[str, typer.Option("--feature", help="Parent feature of the view.")],
    op: Annotated[
        str,
        typer.Option(
            "--op",
            help="View op: pool2d, pool3d, temporal-mean, spatial-mean, st-pool, concat2x2, "
            "drop-prefix or subsample.",
        ),
    ] = "pool2d",
    grid: Annotated[
        int | None,
        typer.Option("--grid", min=1, help="pool2d/pool3d output grid side g: g x g tokens [8]."),
    ] = None,
    every: Annotated[
        int | None, typer.Option("--every", min=1, help="subsample: keep every K-th frame.")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option("--frames", min=1, help="subsample: keep N evenly spaced frames, ends kept."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Name of the new feature (default: FEATURE/<op><params>)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Local dask threads (default: one per CPU)."),
    ] = None,
    block_items: Annotated[
        int,
        typer.Option(
            "--block-items", min=1, help="Items per dask task and written segment (memory bound)."
        ),
    ] = 64,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="dask.distributed scheduler address (default: local)."),
    ] = None,
    dataset: DatasetOption = None,
    store: StoreOption = None,
    progress: ProgressOption = True,
) -> None:
    """Derive a view of a feature (pooling, token dropping, frame subsampling); resumable."""
    from vdial.cache.store import FeatureStore
    from vdial.cache.view_ops import view_op
    from vdial.cache.views import make_view

    path = _store_path(dataset, store)
    given = {"grid": grid, "every": every, "frames": frames}
    try:
        transform = view_op(op, **{k: v for k, v in given.items() if v is not None})
        FeatureStore.open(path, "r")  # a missing store is an error; mode "a" would create it
        view = make_view(
            FeatureStore.open(path, "a"),
            feature,
            transform,
            name=name,
            block_items=block_items,
            workers=workers,
            scheduler=scheduler or "threads",
            progress=progress,
        )
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(f"{view.name}: {len(view)} items, item shape {_shape(view.item_shape)}")


@app.command("import")
def import_(
    fmt: Annotated[
        Literal["avsd-npy", "visdial-h5", "videochatgpt-pkl"],
        typer.Argument(
            metavar="FORMAT",
            help="avsd-npy (<type>/<id>.npy and <type>_testset/<id>.npy folders), visdial-h5 "
            "(bottom-up region features) or videochatgpt-pkl (<id>.pkl per video).",
        ),
    ],
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE", help="The features folder (npy, pkl) or .h5 file to import."
        ),
    ],
    feature: Annotated[
        str | None,
        typer.Option(
            "--feature",
            help="Feature name (avsd-npy: a prefix, giving NAME/<type>); default: the type "
            "(avsd-npy) or the source's file or folder name.",
        ),
    ] = None,
    dtype: Annotated[
        Literal["keep", "float16", "float32"],
        typer.Option("--dtype", help="Store the source dtype (exact round trip) or cast."),
    ] = "keep",
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help="avsd-npy: import only this feature type (repeatable)."),
    ] = None,
    id_map: Annotated[
        Path | None,
        typer.Option(
            "--id-map",
            help="visdial-h5: {image_id: row} pickle for files without an id dataset.",
        ),
    ] = None,
    dataset: DatasetOption = None,
    store: StoreOption = None,
    progress: ProgressOption = True,
) -> None:
    """Import legacy feature dumps into a store (resumable; bad files become failed items)."""
    from rich.console import Console
    from rich.table import Table

    from vdial.cache.legacy_h5 import import_visdial_h5
    from vdial.cache.legacy_npy import import_avsd_npy
    from vdial.cache.legacy_pkl import import_videochatgpt_pkl
    from vdial.cache.store import FeatureStore

    if types and fmt != "avsd-npy":
        raise typer.BadParameter("--type applies to avsd-npy only")
    if id_map is not None and fmt != "visdial-h5":
        raise typer.BadParameter("--id-map applies to visdial-h5 only")
    path = _store_path(dataset, store)
    try:
        target = FeatureStore.open(path, "a")
        if fmt == "avsd-npy":
            reports = import_avsd_npy(
                target, source, prefix=feature, types=types, dtype=dtype, progress=progress
            )
        elif fmt == "visdial-h5":
            reports = [
                import_visdial_h5(
                    target, source, name=feature, id_map=id_map, dtype=dtype, progress=progress
                )
            ]
        else:
            reports = [
                import_videochatgpt_pkl(
                    target, source, name=feature, dtype=dtype, progress=progress
                )
            ]
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as err:
        raise _fail(err) from err
    table = Table(title=f"imported {source} into {path}")
    for column in ("feature", "added", "skipped", "failed"):
        table.add_column(column, justify="left" if column == "feature" else "right")
    for report in reports:
        table.add_row(report.feature, str(report.added), str(report.skipped), str(report.failed))
    console = Console()
    console.print(table)
    for report in reports:
        for note in report.notes:
            console.print(f"note: {note}", markup=False)


@app.command()
def export(
    fmt: Annotated[
        Literal["npy", "visdial-h5"],
        typer.Argument(
            metavar="FORMAT",
            help="npy (<id>.npy per item; AVSD imports get their <type>/ and <type>_testset/ "
            "folders back) or visdial-h5 (padded bottom-up layout).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="Output folder (npy) or .h5 file (visdial-h5)."),
    ],
    feature: Annotated[str, typer.Option("--feature", help="The feature to export.")],
    dataset: DatasetOption = None,
    store: StoreOption = None,
    progress: ProgressOption = True,
) -> None:
    """Export a feature to per-id .npy files or a VisDial bottom-up .h5 file."""
    from vdial.cache.legacy_h5_export import export_visdial_h5
    from vdial.cache.legacy_npy import export_npy
    from vdial.cache.store import FeatureStore

    path = _store_path(dataset, store)
    try:
        source = FeatureStore.open(path, "r")[feature]
        if fmt == "npy":
            count = export_npy(source, out, progress=progress)
        else:
            count = export_visdial_h5(source, out, progress=progress)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(f"{feature}: exported {count} items to {out}")
