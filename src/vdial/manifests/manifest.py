"""The Manifest: a dataset's media table and dialog-turn table, stored as Parquet.

On disk a manifest is a directory `<name>/` with `media.parquet`, `dialogs.parquet` and
`summary.json` (the validation report, for humans and CI). Files are written under a temporary
name and renamed into place so an interrupted build never leaves a truncated Parquet file that
a later extraction run would trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vdial.manifests.schema import DIALOG_SCHEMA, MEDIA_SCHEMA, ManifestError, check_table
from vdial.manifests.validation import ValidationReport, split_names, validate

MEDIA_FILE = "media.parquet"
DIALOGS_FILE = "dialogs.parquet"
SUMMARY_FILE = "summary.json"


def _replace_atomically(target: Path, write: Callable[[Path], object]) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _read_parquet(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"{path}: unreadable Parquet file: {err}") from err
    check_table(table, schema, str(path))
    return table.replace_schema_metadata(None)


@dataclass(frozen=True)
class Manifest:
    """A dataset's media table (MEDIA_SCHEMA) and dialog-turn table (DIALOG_SCHEMA)."""

    name: str
    media: pa.Table
    dialogs: pa.Table

    def __post_init__(self) -> None:
        check_table(self.media, MEDIA_SCHEMA, f"manifest {self.name!r}: media table")
        check_table(self.dialogs, DIALOG_SCHEMA, f"manifest {self.name!r}: dialogs table")

    def write(self, out_dir: Path) -> Path:
        """Write media.parquet, dialogs.parquet and summary.json into `out_dir`; return it."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for table, file in ((self.media, MEDIA_FILE), (self.dialogs, DIALOGS_FILE)):
            _replace_atomically(
                out_dir / file,
                lambda tmp, table=table: pq.write_table(table, tmp, compression="zstd"),
            )
        summary = json.dumps(self.validate().to_dict(), indent=2) + "\n"
        _replace_atomically(out_dir / SUMMARY_FILE, lambda tmp: tmp.write_text(summary))
        return out_dir

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Load a manifest directory written by `write`; the name is the directory's name."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ManifestError(f"{directory}: manifest directory not found")
        return cls(
            name=directory.name,
            media=_read_parquet(directory / MEDIA_FILE, MEDIA_SCHEMA),
            dialogs=_read_parquet(directory / DIALOGS_FILE, DIALOG_SCHEMA),
        )

    def validate(self) -> ValidationReport:
        return validate(self.name, self.media, self.dialogs)

    def splits(self) -> list[str]:
        """Split names in order of first appearance (media rows, then dialog rows)."""
        return split_names(self.media, self.dialogs)

    def media_paths(self, split: str | None = None) -> dict[str, str]:
        """Media id -> absolute path, optionally of one split; rows without a path are left out."""
        if split is not None and split not in self.splits():
            raise ValueError(
                f"manifest {self.name!r} has no split {split!r}; splits: {self.splits()}"
            )
        rows = zip(
            self.media["id"].to_pylist(),
            self.media["path"].to_pylist(),
            self.media["split"].to_pylist(),
            strict=True,
        )
        return {i: p for i, p, s in rows if p is not None and (split is None or s == split)}
