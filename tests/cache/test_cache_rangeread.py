"""Range reads: the same bytes through pread and through huge-page mappings, and their errors."""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.cache.cache_testlib import evict
from vdial.cache import rangeread
from vdial.cache.rangeread import HUGE_PAGE, MIN_MAPPED, TruncatedError, read_ranges

SIZE = 4 * HUGE_PAGE + 12345


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "shard"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(params=[True, False], ids=["huge-faults", "pread-only"])
def huge(request, data_file, monkeypatch):
    """Force either strategy for the test file's device, whatever this machine would choose."""
    monkeypatch.setitem(rangeread._HUGE_FAULTS, data_file.stat().st_dev, request.param)
    return request.param


def _ranges(rng, count):
    """Random ranges, some tiny, some several huge pages long, packed into one output."""
    ranges, at = [], 0
    for _ in range(count):
        size = int(rng.choice([1, 4093, MIN_MAPPED - 1, MIN_MAPPED, HUGE_PAGE, 3 * HUGE_PAGE]))
        offset = int(rng.integers(0, SIZE - size + 1))
        ranges.append((at, offset, size))
        at += size
    return ranges, at


def _read(path, ranges, total):
    out = np.zeros(total, dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        read_ranges(fd, ranges, out)
    finally:
        os.close(fd)
    return out.tobytes()


def test_ranges_equal_the_file_bytes(data_file, huge):
    raw = data_file.read_bytes()
    rng = np.random.default_rng(1)
    for n in range(20):
        if n % 2:
            evict(data_file)  # cold reads fault huge pages in, warm ones pread from the cache
        ranges, total = _ranges(rng, int(rng.integers(1, 5)))
        expected = b"".join(raw[offset : offset + size] for _, offset, size in ranges)
        assert _read(data_file, ranges, total) == expected


def test_cold_small_pieces_are_pread_and_the_rest_goes_through_the_mapping(
    data_file, huge, monkeypatch
):
    preads = []
    real = os.preadv
    monkeypatch.setattr(
        os, "preadv", lambda fd, bufs, off: preads.append(len(bufs[0])) or real(fd, bufs, off)
    )
    # One range from just before a huge page boundary to just after the next but one:
    # a small head, two whole huge pages, a small tail.
    start, size = HUGE_PAGE - 100, 100 + 2 * HUGE_PAGE + 200
    expected = data_file.read_bytes()[start : start + size]
    if not evict(data_file):
        pytest.skip("this file system keeps files in memory: nothing is ever read cold")
    assert _read(data_file, [(0, start, size)], size) == expected
    assert sorted(preads) == ([100, 200] if huge else [size])
    preads.clear()  # now all cached: copied through the mapping, which starts no read-ahead
    assert _read(data_file, [(0, start, size)], size) == expected
    assert preads == ([] if huge else [size])


def test_a_short_file_is_an_error_not_a_crash(data_file, huge):
    # Past the end: pread comes back short; a mapping would raise SIGBUS if it were touched.
    with pytest.raises(TruncatedError, match="the file ends"):
        _read(data_file, [(0, SIZE - HUGE_PAGE, 2 * HUGE_PAGE)], 2 * HUGE_PAGE)


def test_a_kernel_refusing_the_advice_falls_back_to_pread(data_file, monkeypatch):
    device = data_file.stat().st_dev
    monkeypatch.setitem(rangeread._HUGE_FAULTS, device, True)
    monkeypatch.setattr(rangeread, "_MADV_HUGEPAGE", 12345)  # EINVAL, as without THP
    size = 2 * HUGE_PAGE
    expected = data_file.read_bytes()[:size]
    evict(data_file)
    assert _read(data_file, [(0, 0, size)], size) == expected
    assert rangeread._HUGE_FAULTS[device] is False


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("6.18.44-fc-v782", (6, 18)),
        ("5.15.0-91-generic", (5, 15)),
        ("6.1rc3", (6, 1)),
        ("x", (0, 0)),
    ],
)
def test_kernel_release(monkeypatch, release, expected):
    monkeypatch.setattr(rangeread.platform, "release", lambda: release)
    assert rangeread.kernel_release() == expected


@pytest.mark.skipif(shutil.which("stat") is None, reason="needs coreutils stat")
def test_huge_faults_need_a_large_folio_file_system_and_kernel(data_file, monkeypatch):
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(data_file)], capture_output=True, text=True, check=True
    ).stdout.strip()
    fd = os.open(data_file, os.O_RDONLY)
    try:
        monkeypatch.setattr(rangeread, "kernel_release", lambda: (99, 0))
        assert rangeread.huge_page_faults(fd) == (fs in {"ext2/ext3", "ext4", "xfs"})
        monkeypatch.setattr(rangeread, "kernel_release", lambda: (5, 17))
        assert rangeread.huge_page_faults(fd) is False
    finally:
        os.close(fd)


def test_cached_pages_counts_what_the_page_cache_holds(data_file):
    pages = -(-SIZE // mmap.PAGESIZE)
    fd = os.open(data_file, os.O_RDONLY)
    try:
        data_file.read_bytes()
        assert rangeread.cached_pages(fd) == (pages, pages)
        if evict(data_file):
            assert rangeread.cached_pages(fd) == (0, pages)
            os.pread(fd, mmap.PAGESIZE, HUGE_PAGE)
            assert 1 <= rangeread.cached_pages(fd)[0] < pages
    finally:
        os.close(fd)
