"""Removing what killed writers leave behind: segments that were written but never committed.

A segment becomes visible only when its index is written, so a writer killed mid-segment, or an
extraction task whose result never reached the client, leaves a segment without an index. It
is invisible (readers, resume and `verify` ignore it, `verify` lists it as a warning) but takes
disk space. Such a segment may also belong to a writer that is running right now, so only
segments untouched for a grace period (one hour by default) are removed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vdial.cache.location import open_location
from vdial.cache.store import FeatureStore


@dataclass(frozen=True, kw_only=True)
class Leftover:
    """One uncommitted segment."""

    feature: str  # feature name
    segment: str  # segment name
    nbytes: int  # bytes of its files
    age_s: float | None  # seconds since its newest file was written (None: unknown)
    removed: bool  # whether this collection removed it


def _files(store: FeatureStore, prefix: str) -> list[tuple[int, float | None]]:
    """(size, mtime) of every file under `prefix` of the store."""
    location = open_location(store.path, store.storage_options)
    if not location.remote:
        root = Path(location.path) / prefix
        found = []
        for folder, _, names in os.walk(root):
            for name in names:
                info = os.stat(Path(folder) / name)
                found.append((info.st_size, info.st_mtime))
        return found
    from fsspec import url_to_fs

    fs, root = url_to_fs(str(location.path), **location.storage_options)
    details = fs.find(f"{root.rstrip('/')}/{prefix}", detail=True).values()
    return [(int(d.get("size") or 0), _mtime(d)) for d in details]


def _mtime(detail: dict[str, Any]) -> float | None:
    # fsspec back ends name the modification time differently (S3: LastModified).
    for key in ("mtime", "LastModified", "last_modified", "modified", "updated"):
        value = detail.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return None


def collect_garbage(
    store: FeatureStore,
    *,
    older_than_s: float = 3600.0,
    features: list[str] | None = None,
    dry_run: bool = False,
) -> list[Leftover]:
    """Remove uncommitted segments untouched for `older_than_s` seconds; report every one.

    A segment whose age cannot be told (an object store that reports no times) is kept unless
    `older_than_s` is 0.
    """
    if older_than_s < 0:
        raise ValueError(f"older_than_s must be >= 0, got {older_than_s}")
    if store.read_only and not dry_run:
        raise PermissionError(f"{store.path} was opened read-only; open it with mode 'a'")
    now = time.time()
    report = []
    for name in features if features is not None else store.features:
        feature = store[name]
        for segment in feature.uncommitted_segments:
            files = _files(store, feature._segment_prefix(segment))
            times = [m for _, m in files if m is not None]
            age = now - max(times) if times and len(times) == len(files) else None
            old = older_than_s == 0 or (age is not None and age >= older_than_s)
            if old and not dry_run:
                feature._remove_segment(segment)
            report.append(
                Leftover(
                    feature=name,
                    segment=segment,
                    nbytes=sum(size for size, _ in files),
                    age_s=age,
                    removed=old and not dry_run,
                )
            )
        feature.refresh()
    return report
