"""`verify`: prove that a feature store is complete and undamaged, or say exactly what is wrong.

For every feature it checks each committed segment's index (well-formed, rows within the arrays,
no overlaps or duplicate ids), that the segment was written under the feature's current
definition (segments copied in from a store made with another spec), every shard file (present,
index and every inner chunk's CRC32C intact, nothing truncated), every value (NaN/Inf, by id),
and, given the ids a manifest expects, which are missing, failed or unexpected. Errors make the
report fail; warnings (recorded failures, uncommitted segments, stale views) do not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from vdial.cache.feature import Feature
from vdial.cache.index import SEGMENT_KEY, SegmentIndex, definition_digest
from vdial.cache.shards import is_single_shard, shard_key, shard_problems
from vdial.cache.store import FeatureStore

Severity = Literal["error", "warning"]
_SHOWN = 5  # ids quoted per problem; the full list is in the JSON report


@dataclass(frozen=True, kw_only=True)
class Problem:
    feature: str
    severity: Severity
    kind: str  # index, spec, corrupt, nonfinite, missing, failed, unexpected, uncommitted, view
    message: str
    ids: tuple[str, ...] = ()  # the item ids concerned, when the problem is about items

    def describe(self) -> str:
        shown = ", ".join(self.ids[:_SHOWN]) + (" ..." if len(self.ids) > _SHOWN else "")
        return f"{self.message} [{shown}]" if self.ids else self.message


@dataclass(kw_only=True)
class VerifyReport:
    store: str
    features: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> counts checked
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "features": self.features,
            "problems": [asdict(p) for p in self.problems],
        }


def verify_store(
    store: FeatureStore,
    *,
    features: Iterable[str] | None = None,
    expected_ids: Iterable[str] | None = None,
    on_segment: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check `features` (default: all) of `store`; `expected_ids` are the ids every feature
    should hold (e.g. a manifest's media ids). `on_segment(bytes)` reports progress."""
    names = list(features) if features is not None else store.features
    expected = None if expected_ids is None else list(dict.fromkeys(expected_ids))
    report = VerifyReport(store=str(store.path))
    for name in names:
        feature = store[name]
        problems: list[Problem] = []
        counts = _check_feature(feature, problems, on_segment)
        _check_lineage(store, feature, problems)
        if expected is not None:
            _check_ids(feature, expected, problems)
        report.features[name] = counts
        report.problems += problems
    return report


def _check_feature(
    feature: Feature, problems: list[Problem], on_segment: Callable[[int], None] | None
) -> dict[str, int]:
    add = _adder(feature.name, problems)
    definition = definition_digest(feature.attrs)
    counts = {"segments": 0, "items": 0, "failed": 0, "uncommitted": 0, "bytes": 0}
    segments: list[SegmentIndex] = []
    for name, group in feature.segment_groups():
        attrs = group.attrs.get(SEGMENT_KEY)
        if attrs is None:
            counts["uncommitted"] += 1
            add(
                "warning",
                "uncommitted",
                f"segment {name} has no index (a writer is still "
                "writing it, or crashed): its items are invisible",
            )
            continue
        try:
            segment = SegmentIndex.from_attrs(name, attrs)
        except (KeyError, TypeError, ValueError) as err:
            add("error", "index", f"segment {name}: unreadable index ({err})")
            continue
        segments.append(segment)
        if segment.definition is not None and segment.definition != definition:
            add(
                "error",
                "spec",
                f"segment {name} was written under a different feature "
                f"definition ({segment.definition[:12]}, feature {definition[:12]}): its items "
                "mean something else",
                segment.ids,
            )
        counts["bytes"] += _check_segment(feature, group, segment, add)
        if on_segment is not None:
            on_segment(1)
    visible = feature.ids
    counts.update(segments=len(segments), items=len(visible), failed=len(feature.failures))
    return counts


def _check_segment(feature: Feature, group: zarr.Group, segment: SegmentIndex, add) -> int:
    """Check one committed segment; return the bytes read."""
    where = f"segment {segment.name}"
    duplicates = sorted({i for i in segment.ids if segment.ids.count(i) > 1})
    if duplicates:
        add("error", "index", f"{where}: ids listed twice", tuple(duplicates))
    rows = sum(segment.lengths)
    spans = sorted(zip(segment.offsets, segment.lengths, strict=True))
    if any(o < 0 or n < 0 for o, n in spans) or any(
        a + n > b for (a, n), (b, _) in zip(spans, spans[1:], strict=False)
    ):
        add("error", "index", f"{where}: item rows overlap or are negative")
    end = max((o + n for o, n in spans), default=0)
    # A later segment may hold newer copies of some ids: only the visible ones matter below.
    visible = [
        (item_id, o, n)
        for item_id, o, n in zip(segment.ids, segment.offsets, segment.lengths, strict=True)
        if feature.holds_in(item_id, segment.name)
    ]
    columns = {"data": (feature.item_shape, feature.dtype)} | feature.extras
    read = 0
    for column, (shape, dtype) in columns.items():
        try:
            array = group[column]
        except KeyError:
            add("error", "corrupt", f"{where}: array {column!r} is missing", segment.ids)
            continue
        if (
            not isinstance(array, zarr.Array)
            or array.shape[1:] != tuple(shape)
            or (array.dtype != dtype)
        ):
            add(
                "error",
                "index",
                f"{where}/{column}: shape {getattr(array, 'shape', None)} "
                f"dtype {getattr(array, 'dtype', None)}, the feature declares (rows, *{shape}) "
                f"{dtype}",
            )
            continue
        if array.shape[0] < end or array.shape[0] != rows:
            add(
                "error",
                "index",
                f"{where}/{column}: {array.shape[0]} rows, the index "
                f"accounts for {rows} (last row {end})",
            )
            continue
        read += _check_array(array, f"{where}/{column}", visible, add)
    return read


def _check_array(array: zarr.Array, where: str, visible, add) -> int:
    if array.shape[0] == 0:
        return 0
    if is_single_shard(array):
        raw = _shard_bytes(array)
        if raw is None:
            add("error", "corrupt", f"{where}: the shard file is missing", _ids(visible))
            return 0
        chunks = -(-array.shape[0] // array.chunks[0])
        damage = shard_problems(raw, chunks, f"{where}/{shard_key(array)}")
        for message in damage:
            add("error", "corrupt", message, _ids(visible))
        if damage:
            return len(raw)
        read = len(raw)
    else:  # a segment from before sharding: one file per chunk, no checksums
        stored = array.nchunks_initialized
        if stored < array.nchunks:
            add(
                "error",
                "corrupt",
                f"{where}: {array.nchunks - stored} of {array.nchunks} chunks are missing",
                _ids(visible),
            )
            return 0
        read = array.nbytes_stored()
    try:
        values = array[...]
    except (ValueError, RuntimeError, OSError) as err:  # codec or I/O errors on damaged data
        add("error", "corrupt", f"{where}: unreadable ({type(err).__name__}: {err})", _ids(visible))
        return read
    if values.dtype.kind == "f":
        bad_rows = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        bad = tuple(i for i, o, n in visible if bad_rows[o : o + n].any())
        if bad:
            add("error", "nonfinite", f"{where}: NaN or Inf values", bad)
    return read


def _shard_bytes(array: zarr.Array) -> bytes | None:
    key = f"{array.path}/{shard_key(array)}"
    buffer = sync(array.store.get(key, prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.to_bytes()


def _check_lineage(store: FeatureStore, feature: Feature, problems: list[Problem]) -> None:
    lineage = feature.lineage
    if not lineage:
        return
    parent = lineage.get("parent")
    if parent not in store:
        problems.append(
            Problem(
                feature=feature.name,
                severity="error",
                kind="view",
                message=f"derived from {parent!r}, which is not in the store",
            )
        )
        return
    missing = store[parent].missing(feature.ids)
    if missing:
        problems.append(
            Problem(
                feature=feature.name,
                severity="error",
                kind="view",
                message=f"holds ids its parent {parent!r} does not",
                ids=tuple(missing),
            )
        )
    if store[parent].fingerprint() != lineage.get("parent_fingerprint"):
        problems.append(
            Problem(
                feature=feature.name,
                severity="warning",
                kind="view",
                message=f"parent {parent!r} changed since this view was computed: re-run "
                "`vdial cache pool` to bring it up to date",
            )
        )


def _check_ids(feature: Feature, expected: list[str], problems: list[Problem]) -> None:
    add = _adder(feature.name, problems)
    failures = feature.failures
    missing = tuple(i for i in feature.missing(expected) if i not in failures)
    if missing:
        add(
            "error",
            "missing",
            f"{len(missing)} of {len(expected)} expected ids are neither "
            "stored nor recorded as failed",
            missing,
        )
    failed = tuple(i for i in expected if i in failures)
    if failed:
        first = failures[failed[0]]
        add(
            "warning",
            "failed",
            f"{len(failed)} expected ids failed (first: {failed[0]} at "
            f"{first['stage']}: {first['message']})",
            failed,
        )
    wanted = set(expected)
    unexpected = tuple(i for i in feature.ids if i not in wanted)
    if unexpected:
        add("warning", "unexpected", f"{len(unexpected)} stored ids are not expected", unexpected)


def _adder(feature: str, problems: list[Problem]):
    def add(severity: Severity, kind: str, message: str, ids: Iterable[str] = ()) -> None:
        problems.append(
            Problem(feature=feature, severity=severity, kind=kind, message=message, ids=tuple(ids))
        )

    return add


def _ids(visible) -> tuple[str, ...]:
    return tuple(item_id for item_id, _, _ in visible)


def print_report(report: VerifyReport, manifest: object = None) -> None:
    """A summary table per feature, a table of problems, and the verdict, on the terminal."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    summary = Table(title=f"verify {report.store}" + (f" against {manifest}" if manifest else ""))
    for column in ("feature", "segments", "items", "failed", "checked", "errors", "warnings"):
        summary.add_column(column, justify="left" if column == "feature" else "right")
    for name, counts in report.features.items():
        mine = [p for p in report.problems if p.feature == name]
        summary.add_row(
            name,
            str(counts["segments"]),
            str(counts["items"]),
            str(counts["failed"]),
            f"{counts['bytes'] / 2**20:.1f} MiB",
            str(sum(p.severity == "error" for p in mine)),
            str(sum(p.severity == "warning" for p in mine)),
        )
    console.print(summary)
    if report.problems:
        problems = Table(show_lines=False)
        for column in ("", "feature", "kind", "problem"):
            problems.add_column(column, overflow="fold")
        for p in sorted(report.problems, key=lambda p: (p.severity != "error", p.feature)):
            mark = "[red]error[/red]" if p.severity == "error" else "[yellow]warning[/yellow]"
            problems.add_row(mark, p.feature, p.kind, escape(p.describe()))
        console.print(problems)
    errors = sum(p.severity == "error" for p in report.problems)
    if errors:
        console.print(f"[red]FAILED[/red]: {errors} error(s) in {report.store}")
    else:
        console.print(f"[green]OK[/green]: {report.store} verified")
