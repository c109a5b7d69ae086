"""`FeatureStore`: one Zarr v3 group per dataset (`cache/<dataset>`), one sub-group per feature.

A feature's attributes carry everything needed to trust and reuse it: the caller's extraction
spec (encoder, weights digest, sampling, token grid, code version), dtype, the per-row item shape
(axis 0 of each item is ragged), declared extras and, for derived features, lineage. Opening a
store reads only the root attributes; listing features walks group metadata, never item data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.errors import ContainsGroupError, NodeNotFoundError

from vdial.cache.feature import Feature
from vdial.cache.index import (
    FEATURE_FLAG,
    SEGMENTS,
    STORE_VERSION,
    STORE_VERSION_KEY,
    check_feature_name,
)
from vdial.cache.location import Location, open_location

Mode = Literal["r", "a", "w"]


def _json(value: Any, what: str) -> Any:
    """Normalise to plain JSON (tuples become lists) so stored and given values compare equal."""
    try:
        return json.loads(json.dumps(value))
    except TypeError as err:
        raise ValueError(f"{what} must be JSON-serialisable: {err}") from None


def _lineage_identity(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    # The parent's fingerprint legitimately moves when a view is resumed after the parent grew;
    # the parent and the transform must not.
    if lineage is None:
        return None
    return {k: v for k, v in lineage.items() if k != "parent_fingerprint"}


def feature_attrs(
    *,
    item_shape: tuple[int, ...],
    dtype: str,
    spec: dict[str, Any],
    extras: dict[str, tuple[tuple[int, ...], str]] | None,
    lineage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The attribute dict of a feature group (validated, JSON-normalised)."""
    if any(int(n) < 0 for n in item_shape):
        raise ValueError(f"item_shape must be non-negative, got {item_shape}")
    extra_attrs = {}
    for name, (shape, extra_dtype) in (extras or {}).items():
        if name == "data" or not name.isidentifier():
            raise ValueError(f"invalid extra name {name!r}: use an identifier other than 'data'")
        extra_attrs[name] = {"shape": [int(n) for n in shape], "dtype": np.dtype(extra_dtype).name}
    return {
        FEATURE_FLAG: True,
        "spec": _json(spec, "spec"),
        "dtype": np.dtype(dtype).name,
        "item_shape": [int(n) for n in item_shape],
        "extras": extra_attrs,
        "lineage": _json(lineage, "lineage"),
    }


class FeatureStore:
    """A dataset's features, keyed by (possibly nested) name, e.g. "dinov2/pool4x4"."""

    def __init__(
        self,
        path: str | Path,
        root: zarr.Group,
        *,
        read_only: bool,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = path  # a Path, or a URL string for a store on object storage
        self.read_only = read_only
        # The fsspec options of a URL store, for other processes that reopen it (views, readers).
        self.storage_options = dict(storage_options or {})
        self._root = root

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, features={self.features})"

    @classmethod
    def open(
        cls,
        path: str | Path,
        mode: Mode = "r",
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Open a store. "r": must exist; "a": create if missing; "w": delete and recreate.

        `path` is a local path or an fsspec URL (`s3://bucket/prefix`, with `storage_options`
        such as `endpoint_url` passed to the filesystem). "a" and "w" refuse a non-empty location
        that is not a vdial store, so a mistyped path never wipes or adopts unrelated files.
        """
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be 'r', 'a' or 'w', got {mode!r}")
        location = open_location(path, storage_options)
        # Look for foreign files before looking for a store: a store another process creates
        # in between is then found below instead of being mistaken for foreign files.
        occupied = location.occupied()
        existing = _open_existing(location)
        if mode == "r":
            if existing is None:
                raise FileNotFoundError(f"no vdial feature store at {location.path}")
            return cls(
                location.path,
                existing,
                read_only=True,
                storage_options=location.storage_options,
            )
        if existing is None and occupied:
            raise FileExistsError(
                f"{location.path} exists and is not a vdial feature store; left as is"
            )
        attrs = {STORE_VERSION_KEY: STORE_VERSION}
        # "a" never deletes anything: processes racing to create one store all end up using it.
        try:
            root = zarr.open_group(
                location.store(read_only=False), mode=mode, zarr_format=3, attributes=attrs
            )
        except ContainsGroupError:  # another process created the store since we looked
            root = zarr.open_group(location.store(read_only=False), mode="r+", zarr_format=3)
        return cls(location.path, root, read_only=False, storage_options=location.storage_options)

    # -- features ---------------------------------------------------------------------------

    @property
    def features(self) -> list[str]:
        """Nested feature names, sorted."""
        found: list[str] = []
        _walk(self._root, "", found)
        return sorted(found)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._feature_group(name) is not None

    def __getitem__(self, name: str) -> Feature:
        group = self._feature_group(name)
        if group is None:
            known = ", ".join(self.features) or "none"
            raise KeyError(f"no feature {name!r} in store {self.path}; features: {known}")
        return Feature(group, name, read_only=self.read_only)

    def _feature_group(self, name: str) -> zarr.Group | None:
        try:
            check_feature_name(name)
            group = self._root[name]
        except (KeyError, ValueError):
            return None
        if not isinstance(group, zarr.Group) or not group.attrs.get(FEATURE_FLAG):
            return None
        return group

    def create_feature(
        self,
        name: str,
        *,
        item_shape: tuple[int, ...],
        dtype: str = "float16",
        spec: dict[str, Any],
        extras: dict[str, tuple[tuple[int, ...], str]] | None = None,
        lineage: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> Feature:
        """Create a feature; with `exist_ok`, return an identical existing one to resume it.

        An existing feature whose spec, item shape, dtype, extras or lineage (parent and
        transform) differ raises ValueError: resuming must never mix two specs in one feature.
        """
        if self.read_only:
            raise PermissionError(f"store {self.path} was opened read-only (mode 'r')")
        check_feature_name(name)
        attrs = feature_attrs(
            item_shape=item_shape, dtype=dtype, spec=spec, extras=extras, lineage=lineage
        )
        group = self._feature_group(name)
        if group is None:
            try:
                return Feature(
                    self._root.create_group(name, attributes=attrs), name, read_only=False
                )
            except ContainsGroupError:
                node = self._root[name]
            if not node.attrs.get(FEATURE_FLAG):
                # An intermediate group of a nested feature ("a" of "a/b") becomes a feature.
                node.update_attributes(attrs)
                return Feature(node, name, read_only=False)
            group = node  # another process created this feature just now: compare with it
        if not exist_ok:
            raise ValueError(
                f"feature {name!r} already exists in {self.path}; pass exist_ok=True to resume it"
            )
        stored = group.attrs.asdict()
        diffs = [
            _describe_difference(key, stored[key], attrs[key])
            for key in ("spec", "item_shape", "dtype", "extras")
            if stored[key] != attrs[key]
        ]
        if _lineage_identity(stored["lineage"]) != _lineage_identity(attrs["lineage"]):
            diffs.append(f"lineage: stored {stored['lineage']!r}, requested {attrs['lineage']!r}")
        if diffs:
            raise ValueError(
                f"feature {name!r} in {self.path} exists with a different definition: "
                + "; ".join(diffs)
                + ". Write to another store (or feature name), or delete this feature first."
            )
        if stored["lineage"] != attrs["lineage"]:
            group.update_attributes({"lineage": attrs["lineage"]})
        return Feature(group, name, read_only=False)

    def info(self) -> list[dict[str, Any]]:
        """One summary dict per feature (reads metadata and file sizes, not item data)."""
        rows = []
        for name in self.features:
            feature = self[name]
            encoder, weights = spec_summary(feature.spec)
            lineage = feature.lineage
            rows.append(
                {
                    "name": name,
                    "items": len(feature),
                    "failed": len(feature.failures),
                    "superseded": feature.superseded,
                    "failed_by_stage": _count_stages(feature.failures),
                    "uncommitted_segments": len(feature.uncommitted_segments),
                    "malformed_segments": len(feature.malformed_segments),
                    "segments": len(feature.segments),
                    "item_shape": feature.item_shape,
                    "dtype": feature.dtype.name,
                    "extras": sorted(feature.extras),
                    "bytes": feature.nbytes_stored(),
                    "encoder": encoder,
                    "weights": weights,
                    "lineage": lineage,
                    "parent": lineage.get("parent") if lineage else None,
                }
            )
        return rows

    def failures(
        self, features: list[str] | None = None, stage: str | None = None
    ) -> list[dict[str, Any]]:
        """Every failed item of `features` (default: all), optionally of one stage only.

        One dict per (feature, id), sorted by feature then id: stage, message, and when and
        where it was recorded (the commit time, UTC, and writer host of the segment holding the
        failure; a later failure of the same id replaces it). Reads metadata only.
        """
        rows = []
        for name in self.features if features is None else features:
            feature = self[name]
            recorded = feature.failure_segments
            for item_id, failure in sorted(feature.failures.items()):
                if stage is not None and failure["stage"] != stage:
                    continue
                segment = recorded[item_id]
                when = datetime.fromtimestamp(segment.committed_at / 1e9, tz=UTC)
                rows.append(
                    {
                        "feature": name,
                        "id": item_id,
                        "stage": failure["stage"],
                        "message": failure["message"],
                        "recorded_at": when.isoformat(timespec="seconds"),
                        "segment": segment.name,
                        "host": segment.writer.get("host"),
                    }
                )
        return rows


def _count_stages(failures: dict[str, dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for failure in failures.values():
        counts[failure["stage"]] = counts.get(failure["stage"], 0) + 1
    return dict(sorted(counts.items()))


def spec_summary(spec: dict[str, Any]) -> tuple[str | None, str | None]:
    """(encoder, weights) named by a spec, accepting a flat spec or a nested "encoder" dict;
    an imported feature names its source format and file instead."""
    imported = spec.get("source")
    if isinstance(imported, dict) and "format" in imported:
        return f"{imported['format']} import", str(imported.get("path", "-"))
    encoder = spec.get("encoder")
    source = encoder if isinstance(encoder, dict) else spec
    name = encoder if isinstance(encoder, str) else source.get("name") or source.get("architecture")
    weights = source.get("weights_digest") or source.get("weights") or spec.get("weights_digest")
    return (None if name is None else str(name), None if weights is None else str(weights))


def _open_existing(location: Location) -> zarr.Group | None:
    """The store's root group if the location holds a vdial store, None if it holds no group."""
    try:
        root = zarr.open_group(location.store(read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, NotADirectoryError, NodeNotFoundError):
        return None
    except ValueError as err:  # zarr.json that is not JSON, or not Zarr v3 group metadata
        raise ValueError(f"{location.path}/zarr.json: unreadable Zarr metadata ({err})") from None
    version = root.attrs.get(STORE_VERSION_KEY)
    if version is None:
        raise ValueError(f"{location.path} is a Zarr group but not a vdial feature store")
    if version > STORE_VERSION:
        raise ValueError(
            f"{location.path} is a version {version} feature store; this vdial reads up to "
            f"{STORE_VERSION}"
        )
    return root


def _walk(group: zarr.Group, prefix: str, found: list[str]) -> None:
    for name, child in group.groups():
        if name == SEGMENTS:  # item data, possibly thousands of groups: never descend
            continue
        path = f"{prefix}{name}"
        if child.attrs.get(FEATURE_FLAG):
            found.append(path)
        _walk(child, f"{path}/", found)


def _describe_difference(key: str, stored: Any, requested: Any) -> str:
    """'spec.frames: stored 4, requested 8' for dicts (only the keys that differ), else whole."""
    if not (isinstance(stored, dict) and isinstance(requested, dict)):
        return f"{key}: stored {stored!r}, requested {requested!r}"

    def show(d: dict, k: str) -> str:
        return repr(d[k]) if k in d else "(absent)"

    return "; ".join(
        f"{key}.{k}: stored {show(stored, k)}, requested {show(requested, k)}"
        for k in sorted(stored.keys() | requested.keys())
        if stored.get(k) != requested.get(k) or (k in stored) != (k in requested)
    )
