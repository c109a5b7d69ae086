"""Buffered, crash-safe writing of items into a feature, one segment per flush.

Every writer has its own id, so its segments (`<writer id>-<sequence>`) are files no other
process touches: several processes or machines may fill one feature at once. A segment's arrays
are written first and its index last; until the index lands the segment is invisible, so a crash
never exposes half an item and loses at most the items still buffered.

With `commit=False` the writer writes segments but leaves their indexes to the caller
(`Feature.commit`): a distributed task writes its data on a worker and the client commits it
once the task's result arrives, so a task that dies, or is retried after its result was lost,
never makes the same items visible twice.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from vdial.cache.index import SegmentIndex, definition_digest
from vdial.cache.shards import create_segment_array

if TYPE_CHECKING:
    from vdial.cache.feature import Feature


def _cast(item_id: str, what: str, value: object, trailing: tuple[int, ...], dtype: np.dtype):
    """Check `value` is (rows, *trailing) and castable to `dtype`; return it in `dtype`."""
    array = np.asarray(value)
    if array.ndim != 1 + len(trailing) or array.shape[1:] != trailing:
        raise ValueError(
            f"id {item_id!r}: {what} has shape {array.shape}, expected {('rows', *trailing)}"
        )
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise ValueError(f"id {item_id!r}: {what} has dtype {array.dtype}, cannot store as {dtype}")
    with np.errstate(over="ignore"):  # overflow is detected and reported just below
        # Always copy: callers often reuse one buffer for the next item before we flush.
        cast = array.astype(dtype, copy=True)
    if dtype.kind == "f" and array.dtype.kind == "f" and dtype.itemsize < array.dtype.itemsize:
        # A float32 activation above 65504 silently becomes inf in float16: refuse, don't corrupt.
        overflow = np.isfinite(array) & ~np.isfinite(cast)
        if overflow.any():
            raise ValueError(
                f"id {item_id!r}: {what} has {int(overflow.sum())} finite value(s) that overflow "
                f"{dtype} (max |x| = {float(np.abs(array[overflow]).max()):g})"
            )
    return cast


class FeatureWriter:
    """Buffers items and failures and commits them as segments of one feature.

    Use as a context manager: leaving the block, even by an exception, commits what was fully
    added before.
    """

    def __init__(
        self,
        feature: Feature,
        *,
        segment_items: int = 64,
        segment_bytes: int = 256 * 2**20,
        commit: bool = True,
    ) -> None:
        if segment_items < 1:
            raise ValueError(f"segment_items must be >= 1, got {segment_items}")
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be >= 1, got {segment_bytes}")
        self.feature = feature
        self.segment_items = segment_items
        self.segment_bytes = segment_bytes
        self.commit = commit
        self.written: list[SegmentIndex] = []  # segments written but not committed (commit=False)
        self._buffered_bytes = 0
        self.writer_id = uuid.uuid4().hex[:8]
        self._seq = 0
        self._items: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self._failures: dict[str, dict[str, str]] = {}
        self._item_shape = feature.item_shape
        self._dtype = feature.dtype
        self._extras = feature.extras
        self._definition = definition_digest(feature.attrs)
        self._provenance = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "vdial": _version(),
        }

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Commit complete items even on error or Ctrl-C; a flush error chains onto `exc`.
        self.flush()

    def add(self, item_id: str, data: object, **extras: object) -> None:
        """Buffer one item: `data` is (rows, *item_shape); each extra is (rows, *extra_shape)."""
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"item ids must be non-empty strings, got {item_id!r}")
        unknown = sorted(set(extras) - set(self._extras))
        absent = sorted(set(self._extras) - set(extras))
        if unknown or absent:
            raise ValueError(
                f"id {item_id!r}: feature {self.feature.name!r} declares extras "
                f"{sorted(self._extras)}; unknown {unknown}, missing {absent}"
            )
        rows = _cast(item_id, "data", data, self._item_shape, self._dtype)
        cast_extras = {}
        for name, (shape, dtype) in self._extras.items():
            value = _cast(item_id, f"extra {name!r}", extras[name], shape, dtype)
            if value.shape[0] != rows.shape[0]:
                raise ValueError(
                    f"id {item_id!r}: extra {name!r} has {value.shape[0]} rows, data has "
                    f"{rows.shape[0]}"
                )
            cast_extras[name] = value
        self._failures.pop(item_id, None)
        previous = self._items.pop(item_id, None)
        if previous is not None:
            self._buffered_bytes -= _nbytes(previous)
        self._items[item_id] = (rows, cast_extras)
        self._buffered_bytes += _nbytes(self._items[item_id])
        self._maybe_flush()

    def fail(self, item_id: str, stage: str, message: str) -> None:
        """Record that `item_id` could not be produced (e.g. stage "decode")."""
        self._failures[item_id] = {"stage": str(stage), "message": str(message)}
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        # A segment is one shard per column, written whole: bound it by items and by bytes.
        full = len(self._items) + len(self._failures) >= self.segment_items
        if full or self._buffered_bytes >= self.segment_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered items and failures as one segment (if any) and commit it, or,
        with `commit=False`, keep its index in `written` for the caller to commit."""
        if not self._items and not self._failures:
            return
        name = f"{self.writer_id}-{self._seq:06d}"
        self._seq += 1
        index = self._write_segment(name)
        if self.commit:
            self.feature.commit(index)
        else:
            self.written.append(index)
        self._items.clear()
        self._failures.clear()
        self._buffered_bytes = 0

    close = flush

    def _write_segment(self, name: str) -> SegmentIndex:
        ids = list(self._items)
        lengths = [rows.shape[0] for rows, _ in self._items.values()]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist() if ids else []
        # About one item per chunk, so reading an item touches one or two chunks.
        chunk_rows = max(1, int(np.median(lengths))) if lengths else 1
        group = self.feature._create_segment(name)
        columns = {"data": (self._item_shape, self._dtype)} | self._extras
        for column, (shape, dtype) in columns.items():
            parts = [r if column == "data" else ext[column] for r, ext in self._items.values()]
            values = np.concatenate(parts) if parts else np.empty((0, *shape), dtype)
            create_segment_array(group, column, values, chunk_rows)
        index = SegmentIndex(
            name=name,
            committed_at=time.time_ns(),
            ids=tuple(ids),
            offsets=tuple(offsets),
            lengths=tuple(lengths),
            failures={k: dict(v) for k, v in self._failures.items()},
            definition=self._definition,
            writer=self._provenance,
        )
        return index


def _version() -> str:
    try:
        return version("vdial")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _nbytes(item: tuple[np.ndarray, dict[str, np.ndarray]]) -> int:
    rows, extras = item
    return rows.nbytes + sum(v.nbytes for v in extras.values())
