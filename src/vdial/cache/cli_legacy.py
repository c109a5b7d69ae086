"""`vdial cache import` and `vdial cache export`: legacy feature dumps in and out of a store.

Registered on the `vdial cache` app by `vdial.cache.cli`; the import and export code loads
inside each command so that `vdial --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from vdial.cache.cli_common import DatasetOption, ProgressOption, StoreOption, fail, store_path


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
    path = store_path(dataset, store)
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
        raise fail(err) from err
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

    path = store_path(dataset, store)
    try:
        source = FeatureStore.open(path, "r")[feature]
        if fmt == "npy":
            count = export_npy(source, out, progress=progress)
        else:
            count = export_visdial_h5(source, out, progress=progress)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise fail(err) from err
    typer.echo(f"{feature}: exported {count} items to {out}")
