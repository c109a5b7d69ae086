"""`vdial cache`: inspect a feature store and derive pooled views from it.

Only typer and the standard library are imported at module level; the store implementation
(Zarr, NumPy, torch) loads inside each command so `vdial --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vdial.cache.cli_common import (
    DatasetOption,
    ProgressOption,
    StoreOption,
    fail,
    human_bytes,
    item_shape_text,
    store_path,
)
from vdial.cache.cli_legacy import export, import_

app = typer.Typer(
    no_args_is_help=True,
    help="Inspect, verify and derive cached features.",
    pretty_exceptions_enable=False,
)
app.command("import")(import_)
app.command("export")(export)


@app.command()
def info(dataset: DatasetOption = None, store: StoreOption = None) -> None:
    """List the features of a store: items, failures, shapes, size on disk, provenance, lineage."""
    from rich.console import Console
    from rich.table import Table

    from vdial.cache.store import FeatureStore

    path = store_path(dataset, store)
    try:
        rows = FeatureStore.open(path, "r").info()
    except (FileNotFoundError, ValueError) as err:
        raise fail(err) from err
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
            item_shape_text(row["item_shape"]),
            row["dtype"],
            human_bytes(row["bytes"]),
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

    path = store_path(dataset, store)
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
        raise fail(err) from err
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
def failures(
    dataset: DatasetOption = None,
    store: StoreOption = None,
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", help="Only this feature (repeatable; default: all of them)."),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="Only failures at this stage (decode, timeout, oom, ...)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the failures as a JSON list instead.")
    ] = False,
    ids_only: Annotated[
        bool,
        typer.Option(
            "--ids-only",
            help="Print only the failed ids, one per line, each once: a file for `vdial "
            "extract --ids-file` (add --retry-failed there, or they are skipped again).",
        ),
    ] = False,
) -> None:
    """List every failed item: feature, id, stage, reason and when it was recorded (UTC)."""
    import json

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from vdial.cache.store import FeatureStore

    if json_out and ids_only:
        raise typer.BadParameter("give at most one of --json and --ids-only")
    path = store_path(dataset, store)
    try:
        rows = FeatureStore.open(path, "r").failures(feature, stage)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise fail(err) from err
    if ids_only:
        ids = sorted({row["id"] for row in rows})
        for item_id in ids:
            # An ids file strips each line and cuts it at '#': such an id would come back changed.
            if "#" in item_id or item_id.strip() != item_id or item_id.splitlines() != [item_id]:
                raise fail(ValueError(f"id {item_id!r} cannot be written to an ids file"))
        typer.echo("".join(f"{item_id}\n" for item_id in ids), nl=False)
    elif json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title=Text(f"failed items in {path}"))
        for column in ("feature", "id", "stage", "reason", "recorded (UTC)"):
            table.add_column(column, overflow="fold")
        for row in rows:
            when = row["recorded_at"].replace("T", " ").removesuffix("+00:00")
            # Text, not markup: FFmpeg's messages carry brackets ("[h264 @ 0x..]").
            cells = (row["feature"], row["id"], row["stage"], row["message"], when)
            table.add_row(*(Text(cell) for cell in cells))
        Console().print(table)
        typer.echo(f"{len(rows)} failed item(s)" + (f" at stage {stage}" if stage else ""))


@app.command()
def gc(
    dataset: DatasetOption = None,
    store: StoreOption = None,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            help="Only segments untouched for this many hours: younger ones may belong to a "
            "writer that is running now (0: all of them).",
        ),
    ] = 1.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
) -> None:
    """Remove uncommitted segments that killed writers or lost extraction tasks left behind."""
    from rich.console import Console
    from rich.table import Table

    from vdial.cache.gc import collect_garbage
    from vdial.cache.store import FeatureStore

    try:
        path = store_path(dataset, store)
        opened = FeatureStore.open(path, "r")  # a missing store is an error, never created
        if not dry_run:
            opened = FeatureStore.open(path, "a")
        report = collect_garbage(opened, older_than_s=older_than * 3600, dry_run=dry_run)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise fail(err) from err
    table = Table(title=f"uncommitted segments in {opened.path}")
    for column in ("feature", "segment", "size", "age", "removed"):
        table.add_column(column)
    for row in report:
        age = "unknown" if row.age_s is None else f"{row.age_s / 3600:.1f} h"
        removed = "yes" if row.removed else "no (dry run)" if dry_run else "no (too recent)"
        table.add_row(row.feature, row.segment, human_bytes(row.nbytes), age, removed)
    Console().print(table)
    freed = sum(r.nbytes for r in report if r.removed)
    typer.echo(f"removed {sum(r.removed for r in report)} segment(s), {human_bytes(freed)}")


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

    path = store_path(dataset, store)
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
        raise fail(err) from err
    typer.echo(f"{view.name}: {len(view)} items, item shape {item_shape_text(view.item_shape)}")
