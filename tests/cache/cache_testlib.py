"""Helpers shared by the feature-cache tests (importable by spawned worker processes too)."""

from __future__ import annotations

import os

import numpy as np

from vdial.cache.rangeread import cached_pages

SPEC = {"encoder": "dinov2_vits14", "weights_digest": "random:0", "grid": [4, 4], "fps": 1.0}


def ragged_item(item_id: str, rows: int, item_shape=(16, 8)) -> np.ndarray:
    """float32 rows that depend only on (id, rows, shape), so any process can recompute them."""
    seed = sum(ord(c) * 31**i for i, c in enumerate(item_id)) % 2**32
    return np.random.default_rng(seed).standard_normal((rows, *item_shape)).astype(np.float32)


def rows_of(item_id: str) -> int:
    """A ragged but deterministic length per id (1 to 5 rows)."""
    return 1 + sum(map(ord, item_id)) % 5


def evict(path) -> bool:
    """Drop a file's pages from the page cache (written back first, or they would stay);
    False where the file system keeps them anyway (tmpfs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return cached_pages(fd)[0] == 0
    finally:
        os.close(fd)
