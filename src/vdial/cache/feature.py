"""One cached feature: its attributes, its merged segment index, and reads of single items.

Constructing a `Feature` reads metadata only (the feature group's attributes and each segment's
committed index); `feature[id]` then reads just the rows of that item from its segment.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from vdial.cache.index import (
    SEGMENT_KEY,
    SEGMENTS,
    MergedIndex,
    SegmentIndex,
    definition_digest,
)
from vdial.cache.shards import DirectShard
from vdial.cache.writer import FeatureWriter


class Feature:
    """A feature sub-group of a `FeatureStore`: ragged items keyed by id."""

    def __init__(self, group: zarr.Group, name: str, *, read_only: bool) -> None:
        self._group = group
        self.name = name
        self.read_only = read_only
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._direct: dict[str, DirectShard | None] = {}
        self._index = MergedIndex()
        self._uncommitted: list[str] = []
        self._malformed: dict[str, str] = {}
        self.refresh()

    def __repr__(self) -> str:
        return f"Feature({self.name!r}, items={len(self)}, item_shape={self.item_shape})"

    # -- attributes -------------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        return self._group.attrs.asdict()

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.attrs["spec"])

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.attrs["item_shape"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.attrs["dtype"])

    @property
    def extras(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {
            name: (tuple(e["shape"]), np.dtype(e["dtype"]))
            for name, e in self.attrs["extras"].items()
        }

    @property
    def lineage(self) -> dict[str, Any] | None:
        return self.attrs["lineage"]

    # -- index ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the segment indexes, picking up segments other writers committed since.

        A segment whose index cannot be parsed (damage, or a newer vdial) is left out and
        listed in `malformed_segments`, so one bad segment costs its items, not the feature.
        """
        committed, uncommitted, malformed = [], [], {}
        for seg_name, seg in self.segment_groups():
            index = seg.attrs.get(SEGMENT_KEY)
            if index is None:
                uncommitted.append(seg_name)
                continue
            try:
                committed.append(SegmentIndex.from_attrs(seg_name, index))
            except (KeyError, TypeError, ValueError) as err:
                malformed[seg_name] = f"{type(err).__name__}: {err}"
        self._index = MergedIndex.build(committed)
        self._uncommitted = sorted(uncommitted)
        self._malformed = malformed

    def segment_groups(self) -> Iterator[tuple[str, zarr.Group]]:
        try:
            segments = self._group[SEGMENTS]
        except KeyError:  # a feature nobody has written to yet
            return iter(())
        return iter(segments.groups())

    def _register(self, segment: SegmentIndex) -> None:
        """Make a segment this process just committed visible without re-listing."""
        if self._index.segments and segment.order <= self._index.segments[-1].order:
            self._index = MergedIndex.build([*self._index.segments, segment])
        else:
            self._index.apply(segment)

    @property
    def ids(self) -> list[str]:
        return list(self._index.entries)

    def __len__(self) -> int:
        return len(self._index.entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index.entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._index.entries))

    @property
    def failures(self) -> dict[str, dict[str, str]]:
        """Failed ids (with stage and message) that no committed segment holds."""
        return {k: dict(v) for k, v in self._index.failures.items()}

    @property
    def failure_segments(self) -> dict[str, SegmentIndex]:
        """For each of `failures`, the segment that recorded it (its commit time and writer)."""
        return dict(self._index.failed_in)

    @property
    def superseded(self) -> int:
        """Item copies hidden because a later segment wrote the same id again."""
        return self._index.superseded

    @property
    def segments(self) -> list[str]:
        """Committed segment names, in commit order."""
        return [s.name for s in self._index.segments]

    @property
    def segment_indexes(self) -> list[SegmentIndex]:
        """Committed segment indexes (ids, failures, writer host and pid), in commit order."""
        return list(self._index.segments)

    @property
    def uncommitted_segments(self) -> list[str]:
        """Segment groups without an index: being written now, or left by a crashed writer."""
        return list(self._uncommitted)

    @property
    def malformed_segments(self) -> dict[str, str]:
        """Segments left out because their index is unreadable: name -> why."""
        return dict(self._malformed)

    def holds_in(self, item_id: str, segment: str) -> bool:
        """Whether the visible copy of `item_id` is the one in `segment`."""
        entry = self._index.entries.get(item_id)
        return entry is not None and entry[0] == segment

    def location(self, item_id: str) -> tuple[str, int, int]:
        """(segment, first row, rows) of an item."""
        try:
            return self._index.entries[item_id]
        except KeyError:
            failure = self._index.failures.get(item_id)
            why = f" (failed at {failure['stage']}: {failure['message']})" if failure else ""
            raise KeyError(f"id {item_id!r} is not in feature {self.name!r}{why}") from None

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids, in the given order, that have no complete item."""
        return [i for i in ids if i not in self._index.entries]

    def fingerprint(self) -> str:
        """sha256 over the attributes and the sorted (id, segment, offset, length) index."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.attrs, sort_keys=True).encode())
        for item_id in sorted(self._index.entries):
            digest.update(json.dumps([item_id, *self._index.entries[item_id]]).encode() + b"\n")
        return digest.hexdigest()

    def content_digest(self) -> str:
        """sha256 over the definition and every item's id, rows and extras, in id order, and the
        failures: equal for two features holding bit-identical items, however they were written
        (segments, writers, resumes). Reads all the data."""
        digest = hashlib.sha256()
        digest.update(definition_digest(self.attrs).encode())
        per_item = {}
        for item_id, columns in self.iter_items():
            item_digest = hashlib.sha256(json.dumps(item_id).encode())
            for name, values in columns.items():
                item_digest.update(f"{name}{values.shape}".encode())
                item_digest.update(np.ascontiguousarray(values).tobytes())
            per_item[item_id] = item_digest.hexdigest()
        for item_id in sorted(per_item):
            digest.update(per_item[item_id].encode())
        digest.update(json.dumps(self.failures, sort_keys=True).encode())
        return digest.hexdigest()

    # -- data -------------------------------------------------------------------------------

    def _array(self, segment: str, array: str) -> zarr.Array:
        key = (segment, array)
        if key not in self._arrays:
            self._arrays[key] = self._group[f"{SEGMENTS}/{segment}/{array}"]
        return self._arrays[key]

    def __getitem__(self, item_id: str) -> np.ndarray:
        """The item's rows, shape (rows, *item_shape), in the feature's dtype."""
        segment, offset, length = self.location(item_id)
        if segment not in self._direct:
            self._direct[segment] = self._direct_reader(segment)
        direct = self._direct[segment]
        if direct is not None:
            return direct.read(offset, offset + length)
        return self._array(segment, "data")[offset : offset + length]

    def _direct_reader(self, segment: str) -> DirectShard | None:
        store = self._group.store
        if not isinstance(store, LocalStore):
            return None
        return DirectShard.at(Path(store.root) / self._group.path / SEGMENTS / segment / "data")

    def item(self, item_id: str) -> dict[str, np.ndarray]:
        """{"data": rows, **extras} of one item."""
        segment, offset, length = self.location(item_id)
        names = ["data", *self.attrs["extras"]]
        return {n: self._array(segment, n)[offset : offset + length] for n in names}

    def read_many(self, ids: Iterable[str]) -> list[np.ndarray]:
        return [self[i] for i in ids]

    def iter_items(
        self, ids: Iterable[str] | None = None
    ) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield `(id, {"data": rows, **extras})` for `ids` (default: all), segment by segment.

        Each segment's columns are read once, whole, instead of one read per item and column:
        the way to stream a feature (export, views, digests). Memory is one segment's columns.
        Items come in commit order of their segments, not in the order of `ids`.
        """
        wanted = self.ids if ids is None else list(ids)
        by_segment: dict[str, list[tuple[str, int, int]]] = {}
        for item_id in wanted:
            segment, offset, length = self.location(item_id)
            by_segment.setdefault(segment, []).append((item_id, offset, length))
        names = ["data", *self.attrs["extras"]]
        for segment in (s for s in self.segments if s in by_segment):
            columns = {name: self._array(segment, name)[...] for name in names}
            for item_id, offset, length in by_segment[segment]:
                yield item_id, {k: v[offset : offset + length].copy() for k, v in columns.items()}

    def nbytes_stored(self) -> int:
        """Bytes of this feature's segments on disk (not counting nested features)."""
        total = 0
        for _, seg in self.segment_groups():
            total += sum(array.nbytes_stored() for _, array in seg.arrays())
        return total

    # -- writing ----------------------------------------------------------------------------

    def writer(
        self, *, segment_items: int = 64, segment_bytes: int = 256 * 2**20, commit: bool = True
    ) -> FeatureWriter:
        """A buffered writer that writes a segment every `segment_items` items (or failures)
        or `segment_bytes` of buffered data, whichever comes first, and commits it (or leaves
        it to `commit`: see `FeatureWriter`)."""
        if self.read_only:
            raise PermissionError(f"feature {self.name!r} was opened read-only (mode 'r')")
        return FeatureWriter(
            self, segment_items=segment_items, segment_bytes=segment_bytes, commit=commit
        )

    def commit(self, segment: SegmentIndex) -> SegmentIndex:
        """Make a written segment visible by writing its index (the atomic commit).

        The commit time is taken now, so a segment committed later wins over earlier copies of
        the same ids. Returns the index as committed.
        """
        if self.read_only:
            raise PermissionError(f"feature {self.name!r} was opened read-only (mode 'r')")
        try:
            group = self._group[f"{SEGMENTS}/{segment.name}"]
        except KeyError:
            raise KeyError(
                f"feature {self.name!r} has no segment {segment.name!r} to commit"
            ) from None
        if SEGMENT_KEY in group.attrs:
            raise ValueError(f"segment {segment.name!r} of {self.name!r} is already committed")
        committed = replace(segment, committed_at=time.time_ns())
        group.update_attributes({SEGMENT_KEY: committed.to_attrs()})
        self._register(committed)
        return committed

    def _segment_prefix(self, name: str) -> str:
        """Key prefix of a segment's files inside the store."""
        return f"{self._group.path}/{SEGMENTS}/{name}"

    def _remove_segment(self, name: str) -> None:
        del self._group[f"{SEGMENTS}/{name}"]

    def _create_segment(self, name: str) -> zarr.Group:
        return self._group.create_group(f"{SEGMENTS}/{name}")

    def _update_attrs(self, attrs: dict[str, Any]) -> None:
        self._group.update_attributes(attrs)
