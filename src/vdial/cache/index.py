"""Segment indexes: what makes items visible in a feature, and how several of them merge.

A feature's items live in *segments* (`<feature>/segments/<name>/`), each written by exactly one
writer. A segment's index (ids, row offsets, row lengths, per-id failures and a commit time) is
written last, as the segment group's attributes; Zarr's local store replaces `zarr.json` with an
atomic rename, so a segment is either committed with a complete index or invisible. Merging the
committed indexes in commit order gives the feature's `{id: (segment, offset, length)}` map
without reading any item data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STORE_VERSION = 1  # bump when the on-disk layout changes incompatibly
STORE_VERSION_KEY = "vdial_store_version"
FEATURE_FLAG = "vdial_feature"
SEGMENT_KEY = "vdial_segment"  # the segment group attribute that commits it
SEGMENTS = "segments"  # reserved child group of every feature
INDEX_VERSION = 1

_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_feature_name(name: str) -> str:
    """Validate a (possibly nested, '/'-separated) feature name and return it."""
    parts = name.split("/") if isinstance(name, str) else [name]
    for part in parts:
        if not isinstance(part, str) or not _NAME_PART.fullmatch(part) or part == SEGMENTS:
            raise ValueError(
                f"invalid feature name {name!r}: use '/'-separated parts of letters, digits, "
                f"'_', '-' or '.', not starting with a symbol, and not {SEGMENTS!r}"
            )
    return name


def definition_digest(attrs: Mapping[str, Any]) -> str:
    """sha256 of what a feature's items mean (spec, item shape, dtype, extras, transform).

    Every segment records the digest its writer saw, so segments copied in from a store made
    with another spec are caught by `verify` rather than silently mixed.
    """
    lineage = attrs.get("lineage") or {}
    definition = {
        **{key: attrs.get(key) for key in ("spec", "item_shape", "dtype", "extras")},
        "parent": lineage.get("parent"),
        "transform": lineage.get("transform"),
    }
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class SegmentIndex:
    """The committed index of one segment."""

    name: str  # segment group name, unique per writer: "<writer id>-<sequence>"
    committed_at: int  # time.time_ns() at commit; orders segments so later writes win
    ids: tuple[str, ...]  # item ids in row order
    offsets: tuple[int, ...]  # first row of each item in the segment's arrays
    lengths: tuple[int, ...]  # rows of each item (axis 0 is ragged)
    failures: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # id -> stage, message
    definition: str | None = None  # definition_digest of the feature when this was written
    writer: Mapping[str, Any] = field(default_factory=dict)  # host, pid, vdial version

    @property
    def order(self) -> tuple[int, str]:
        # The name breaks ties between equal clocks deterministically.
        return (self.committed_at, self.name)

    def to_attrs(self) -> dict[str, Any]:
        return {
            "version": INDEX_VERSION,
            "committed_at": self.committed_at,
            "ids": list(self.ids),
            "offsets": list(self.offsets),
            "lengths": list(self.lengths),
            "failures": {k: dict(v) for k, v in self.failures.items()},
            "definition": self.definition,
            "writer": dict(self.writer),
        }

    @classmethod
    def from_attrs(cls, name: str, attrs: Mapping[str, Any]) -> SegmentIndex:
        version = attrs.get("version")
        if version != INDEX_VERSION:
            raise ValueError(
                f"segment {name!r} has index version {version!r}; this vdial reads "
                f"version {INDEX_VERSION}"
            )
        ids, offsets, lengths = attrs["ids"], attrs["offsets"], attrs["lengths"]
        if not len(ids) == len(offsets) == len(lengths):
            raise ValueError(
                f"segment {name!r} has a malformed index: {len(ids)} ids, {len(offsets)} "
                f"offsets, {len(lengths)} lengths"
            )
        return cls(
            name=name,
            committed_at=int(attrs["committed_at"]),
            ids=tuple(ids),
            offsets=tuple(int(o) for o in offsets),
            lengths=tuple(int(n) for n in lengths),
            failures={k: dict(v) for k, v in attrs.get("failures", {}).items()},
            definition=attrs.get("definition"),
            writer=dict(attrs.get("writer", {})),
        )


@dataclass(kw_only=True)
class MergedIndex:
    """The union of committed segment indexes, later segments winning."""

    entries: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> seg, off, len
    failures: dict[str, dict[str, str]] = field(default_factory=dict)  # failed, never written
    failed_in: dict[str, SegmentIndex] = field(default_factory=dict)  # the one that recorded it
    superseded: int = 0  # item copies hidden by a later segment holding the same id
    segments: list[SegmentIndex] = field(default_factory=list)  # in commit order

    @classmethod
    def build(cls, segments: Iterable[SegmentIndex]) -> MergedIndex:
        merged = cls()
        for segment in sorted(segments, key=lambda s: s.order):
            merged.apply(segment)
        return merged

    def apply(self, segment: SegmentIndex) -> None:
        """Merge one more segment; it must be later than every segment merged so far."""
        if self.segments and segment.order <= self.segments[-1].order:
            raise ValueError(f"segment {segment.name!r} is not later than {self.segments[-1].name}")
        self.segments.append(segment)
        for item_id, offset, length in zip(
            segment.ids, segment.offsets, segment.lengths, strict=True
        ):
            if item_id in self.entries:
                self.superseded += 1
            self.entries[item_id] = (segment.name, offset, length)
            self.failures.pop(item_id, None)
            self.failed_in.pop(item_id, None)
        for item_id, failure in segment.failures.items():
            # A success, earlier or later, makes an id complete; a failure never hides data.
            if item_id not in self.entries:
                self.failures[item_id] = dict(failure)
                self.failed_in[item_id] = segment
