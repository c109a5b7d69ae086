"""`vdial manifest ...`: build manifests from annotations or media folders, and inspect them.

Only typer and the standard library are imported at module level so that `vdial --help` stays
instant; the readers (pyarrow) and rich are imported inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from vdial.manifests.manifest import Manifest

app = typer.Typer(no_args_is_help=True, help="Build and inspect dataset manifests.")
build = typer.Typer(
    no_args_is_help=True, help="Build a manifest and write it to <out>/<name>/ as Parquet."
)
app.add_typer(build, name="build")

_NAME_HELP = "Manifest name; the manifest is written to <out>/<name>/."
_OUT_HELP = "Parent directory of the manifests."


def _pairs(values: list[str] | None, option: str) -> dict[str, Path]:
    """Parse repeated `split=PATH` options into {split: path}, keeping the given order."""
    pairs: dict[str, Path] = {}
    for value in values or []:
        split, sep, path = value.partition("=")
        split, path = split.strip(), path.strip()
        if not sep or not split or not path:
            raise typer.BadParameter(f"expected split=PATH, got {value!r}", param_hint=option)
        if split in pairs:
            raise typer.BadParameter(f"split {split!r} given twice", param_hint=option)
        pairs[split] = Path(path)
    return pairs


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise typer.BadParameter(f"{name!r} is not a directory name", param_hint="--name")
    return name


def _report(manifest: Manifest) -> None:
    from rich.console import Console

    console = Console()
    report = manifest.validate()
    console.print(report.table())
    console.print(
        f"rows: {manifest.media.num_rows} media, {manifest.dialogs.num_rows} dialog turns"
    )
    if report.missing_files:
        console.print(
            f"warning: {len(report.missing_files)} media file(s) not found on disk",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )


def _run(make: Callable[[], Manifest], out: Path | None) -> None:
    """Build (and write when `out` is given), print the report; ManifestError exits 1."""
    from rich.console import Console

    from vdial.manifests.schema import ManifestError

    try:
        manifest = make()
        written = manifest.write(out / manifest.name) if out is not None else None
    except ManifestError as err:
        Console(stderr=True).print(
            f"error: {err}", style="red", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    _report(manifest)
    if written is not None:
        Console().print(f"wrote {written}", markup=False, highlight=False, soft_wrap=True)


@build.command("avsd")
def build_avsd(
    name: str = typer.Option(..., "--name", help=_NAME_HELP),
    annotations: list[str] = typer.Option(
        ...,
        "--annotations",
        help="split=PATH of an AVSD JSON file (DSTC7/8/10); repeat once per split.",
    ),
    videos: Path | None = typer.Option(
        None, "--videos", help="Directory of <image_id>.mp4/.webm/.mkv/.avi/.mov videos."
    ),
    out: Path = typer.Option(Path("manifests"), "--out", help=_OUT_HELP),
) -> None:
    """AVSD dialogs (DSTC7, DSTC8, DSTC10 incl. multi-reference and reasons)."""
    splits = _pairs(annotations, "--annotations")
    name = _check_name(name)

    def make() -> Manifest:
        from vdial.manifests.avsd import read_avsd

        return read_avsd(splits, videos, name=name)

    _run(make, out)


@build.command("visdial")
def build_visdial(
    name: str = typer.Option(..., "--name", help=_NAME_HELP),
    annotations: list[str] = typer.Option(
        ..., "--annotations", help="split=PATH of a VisDial v1.0 JSON file; repeat per split."
    ),
    dense: list[str] | None = typer.Option(
        None, "--dense", help="split=PATH of a dense relevance JSON file for that split."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Directory searched recursively for <prefix><image_id>.jpg/.png."
    ),
    out: Path = typer.Option(Path("manifests"), "--out", help=_OUT_HELP),
) -> None:
    """VisDial v1.0 dialogs with answer options and dense relevance."""
    splits = _pairs(annotations, "--annotations")
    dense_splits = _pairs(dense, "--dense")
    unknown = sorted(set(dense_splits) - set(splits))
    if unknown:
        raise typer.BadParameter(f"no --annotations for split(s) {unknown}", param_hint="--dense")
    name = _check_name(name)

    def make() -> Manifest:
        from vdial.manifests.visdial import read_visdial

        return read_visdial(splits, images, name=name, dense=dense_splits)

    _run(make, out)


@build.command("folder")
def build_folder(
    name: str = typer.Option(..., "--name", help=_NAME_HELP),
    root: Path | None = typer.Option(
        None, "--root", help="Folder of videos/images; ids are relative paths without extension."
    ),
    csv: Path | None = typer.Option(
        None, "--csv", help="CSV with columns id,path and optional split,kind."
    ),
    out: Path = typer.Option(Path("manifests"), "--out", help=_OUT_HELP),
) -> None:
    """Media without dialogs, from a folder or a CSV (give exactly one)."""
    if (root is None) == (csv is None):
        raise typer.BadParameter("give exactly one of --root or --csv", param_hint="--root/--csv")
    name = _check_name(name)

    def make() -> Manifest:
        from vdial.manifests.folder import read_folder

        return read_folder(root, csv=csv, name=name)

    _run(make, out)


@app.command("show")
def show(
    directory: Path = typer.Argument(..., help="A manifest directory (<out>/<name>/)."),
) -> None:
    """Print a manifest's validation table and row counts."""

    def make() -> Manifest:
        from vdial.manifests.manifest import Manifest

        return Manifest.read(directory)

    _run(make, None)
