"""Manifests for media without dialogs: a folder of videos/images, or a CSV listing them.

These let users extract features for any collection (their own videos, a new benchmark)
before a dedicated dialog reader exists. The dialog table is empty but has the full schema.

* Folder: every video/image file below `root`; id = path relative to root without extension
  ("clips/a.mp4" -> "clips/a"), kind by extension, split "all". Other files are ignored.
* CSV: header `id,path` plus optional `split` and `kind` columns; relative paths are resolved
  against the CSV's directory; a path that does not exist is kept as a null path and reported
  by validation.
"""

from __future__ import annotations

import csv as csv_module
import os
from pathlib import Path

from vdial.manifests.manifest import Manifest
from vdial.manifests.media import kind_of
from vdial.manifests.schema import (
    DIALOG_SCHEMA,
    MEDIA_KINDS,
    MEDIA_SCHEMA,
    SPLIT_ALL,
    ManifestError,
    TableBuilder,
    media_row,
)

CSV_REQUIRED = ("id", "path")
CSV_OPTIONAL = ("split", "kind")


def _from_root(root: Path) -> list[dict]:
    if not root.is_dir():
        raise ManifestError(f"{root}: media directory not found")
    root = root.resolve()
    found: dict[str, Path] = {}
    for parent, dirs, files in os.walk(root):
        # hidden folders hold tool state (.git, .ipynb_checkpoints), never dataset media
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(parent) / name
            if name.startswith(".") or kind_of(path) is None:
                continue
            media_id = path.relative_to(root).with_suffix("").as_posix()
            if media_id in found:
                raise ManifestError(f"{path}: id {media_id!r} is also used by {found[media_id]}")
            found[media_id] = path
    if not found:
        raise ManifestError(f"{root}: no video or image files found")
    return [
        media_row(id=i, path=str(p), kind=kind_of(p), split=SPLIT_ALL)
        for i, p in sorted(found.items())
    ]


def _from_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise ManifestError(f"{path}: CSV file not found")
    base = path.resolve().parent
    rows: list[dict] = []
    first_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv_module.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            raise ManifestError(f"{path}: line 1: missing column(s) {missing} in header {header}")
        unknown = [c for c in header if c not in CSV_REQUIRED + CSV_OPTIONAL]
        if unknown:
            raise ManifestError(
                f"{path}: line 1: unknown column(s) {unknown}; "
                f"allowed: {list(CSV_REQUIRED + CSV_OPTIONAL)}"
            )
        reader.fieldnames = header
        for record in reader:
            where = f"{path}: line {reader.line_num}"
            if None in record:
                raise ManifestError(f"{where}: more fields than header columns")
            cells = {k: (v or "").strip() for k, v in record.items()}
            media_id, given = cells["id"], cells["path"]
            if not media_id or not given:
                raise ManifestError(f"{where}: empty {'id' if not media_id else 'path'}")
            if media_id in first_line:
                raise ManifestError(
                    f"{where}: duplicate id {media_id!r}, first on line {first_line[media_id]}"
                )
            first_line[media_id] = reader.line_num
            kind = cells.get("kind") or kind_of(given)
            if kind is None:
                raise ManifestError(
                    f"{where}: cannot tell the kind of {given!r} from its extension; "
                    "add a 'kind' column (video or image)"
                )
            if kind not in MEDIA_KINDS:
                raise ManifestError(f"{where}: kind {kind!r} is not one of {list(MEDIA_KINDS)}")
            resolved = (base / given).resolve()
            rows.append(
                media_row(
                    id=media_id,
                    path=str(resolved) if resolved.is_file() else None,
                    kind=kind,
                    split=cells.get("split") or SPLIT_ALL,
                )
            )
    if not rows:
        raise ManifestError(f"{path}: no rows after the header")
    return rows


def read_folder(root: Path | None = None, *, csv: Path | None = None, name: str) -> Manifest:
    """A manifest of the media under `root`, or listed in `csv` (give exactly one)."""
    if (root is None) == (csv is None):
        raise ValueError("give exactly one of root= or csv=")
    rows = _from_root(Path(root)) if root is not None else _from_csv(Path(csv))
    media = TableBuilder(MEDIA_SCHEMA)
    media.extend(rows)
    return Manifest(name=name, media=media.table(), dialogs=TableBuilder(DIALOG_SCHEMA).table())
