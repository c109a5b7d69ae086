"""Helpers shared by the feature-cache tests (importable by spawned worker processes too)."""

from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np

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
    finally:
        os.close(fd)
    return resident_pages(path) == 0


def resident_pages(path) -> int:
    """How many of a file's pages the page cache holds (mincore), without reading any."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    # A copy-on-write map is writable, so ctypes can take its address; nothing is written.
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mm:
        pages = np.zeros(-(-len(mm) // mmap.PAGESIZE), dtype=np.uint8)
        start = ctypes.c_char.from_buffer(mm)
        failed = libc.mincore(ctypes.addressof(start), len(mm), pages.ctypes.data)
        del start  # release the export before the map closes
    if failed:
        raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
    return int((pages & 1).sum())
