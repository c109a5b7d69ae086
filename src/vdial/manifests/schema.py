"""Arrow schemas of the two manifest tables, the manifest error type, and table builders.

Every other part of vdial reads manifests through these schemas, so they are defined once here.
Columns marked ``nullable=False`` are checked on construction and on read: Arrow itself does not
enforce nullability when building from Python rows, and a null id would only surface much later
as a confusing lookup failure in extraction or training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa


class ManifestError(ValueError):
    """Malformed annotations or manifest files; the message names the file and the location."""


MEDIA_KINDS = ("video", "image")
SPLIT_ALL = "all"
UNDISCLOSED = "__UNDISCLOSED__"

REASON_TYPE = pa.struct(
    [
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("sentence", pa.string()),
    ]
)

MEDIA_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        # absolute path; null when the file was not found (validation reports it)
        pa.field("path", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("duration", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)

DIALOG_SCHEMA = pa.schema(
    [
        pa.field("dialog_id", pa.string(), nullable=False),
        pa.field("media_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        # 0-based; rows are in dialog order then turn order, so history is the preceding rows
        pa.field("turn", pa.int32(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        # null when undisclosed (AVSD test) or absent (VisDial test)
        pa.field("answer", pa.string()),
        # every reference answer: [answer], the DSTC10 multi-references, or [] when undisclosed
        pa.field("answers", pa.list_(pa.string()), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("reason", pa.list_(REASON_TYPE)),
        pa.field("answer_options", pa.list_(pa.string())),
        pa.field("gt_index", pa.int32()),
        pa.field("relevance", pa.list_(pa.float32())),
        # "<file name>#<location>", e.g. "test.json#dialogs[12].dialog[3]"
        pa.field("source", pa.string(), nullable=False),
    ]
)

# Large VisDial splits hold ~100 option strings per turn; building the table in bounded record
# batches keeps every string buffer far below Arrow's 2 GiB per-array offset limit.
_BATCH_ROWS = 8192


class TableBuilder:
    """Collects row dicts and builds a table of `schema` in bounded record batches."""

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema
        self._rows: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []

    def add(self, row: Mapping[str, Any]) -> None:
        self._rows.append(dict(row))
        if len(self._rows) >= _BATCH_ROWS:
            self._flush()

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def _flush(self) -> None:
        if self._rows:
            self._batches.append(pa.RecordBatch.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def table(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self._batches, schema=self._schema)


def media_row(
    *, id: str, path: str | None, kind: str, split: str, **extra: float | int | None
) -> dict[str, Any]:
    """A media row with the optional probe columns (duration, fps, width, height) left null."""
    row: dict[str, Any] = {"id": id, "path": path, "kind": kind, "split": split}
    row.update({k: extra.get(k) for k in ("duration", "fps", "width", "height")})
    return row


def check_table(table: pa.Table, schema: pa.Schema, where: str) -> None:
    """Raise ManifestError unless `table` has exactly `schema` and no nulls in required columns."""
    if not table.schema.equals(schema, check_metadata=False):
        expected = {f.name: f for f in schema}
        got = {f.name: f for f in table.schema}
        missing = [n for n in expected if n not in got]
        extra = [n for n in got if n not in expected]
        differ = [
            f"{n}: {got[n].type}{'' if got[n].nullable else ' not null'}"
            f" (expected {expected[n].type}{'' if expected[n].nullable else ' not null'})"
            for n in expected
            if n in got and not got[n].equals(expected[n])
        ]
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        if differ:
            parts.append("wrong type " + "; ".join(differ))
        if not parts:
            parts.append(f"columns out of order: {table.schema.names} != {schema.names}")
        raise ManifestError(f"{where}: schema mismatch: {', '.join(parts)}")
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ManifestError(
                f"{where}: column '{field.name}' has "
                f"{table.column(field.name).null_count} null value(s)"
            )
