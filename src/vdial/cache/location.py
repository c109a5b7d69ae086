"""Where a feature store lives: a local folder, or a prefix on object storage through fsspec.

Local stores use Zarr's `LocalStore` (whose metadata writes are atomic renames, and whose shards
`vdial.cache.shards` can read directly); a URL such as `s3://bucket/cache/avsd` uses Zarr's
`FsspecStore`, where every object PUT is atomic, so the commit protocol holds there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore


def is_url(path: str | Path) -> bool:
    """Whether `path` names a location on a filesystem other than the local one."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


@dataclass(frozen=True, kw_only=True)
class Location:
    """A store location: a local `Path`, or a URL with the fsspec options to reach it."""

    path: str | Path  # what users see in messages and `FeatureStore.path`
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for URLs

    @property
    def remote(self) -> bool:
        return not isinstance(self.path, Path)

    def store(self, *, read_only: bool) -> Store:
        if self.remote:
            return FsspecStore.from_url(
                str(self.path), storage_options=self.storage_options, read_only=read_only
            )
        return LocalStore(self.path, read_only=read_only)

    def occupied(self) -> bool:
        """Whether something (a store or anything else) is already at this location."""
        if not self.remote:
            path = Path(self.path)
            return path.is_file() or (path.is_dir() and any(path.iterdir()))
        from fsspec import url_to_fs  # fsspec comes with Zarr; the S3 backend is the s3fs extra

        fs, root = url_to_fs(str(self.path), **self.storage_options)
        return bool(fs.exists(root) and fs.ls(root, detail=False))


def open_location(path: str | Path, storage_options: dict[str, Any] | None = None) -> Location:
    """The `Location` of `path`: URLs stay strings, everything else becomes a `Path`."""
    if is_url(path):
        return Location(path=str(path), storage_options=dict(storage_options or {}))
    if storage_options:
        raise ValueError(f"storage_options apply to URLs (s3://...), not to the local path {path}")
    local = str(path).removeprefix("file://")
    return Location(path=Path(local))
