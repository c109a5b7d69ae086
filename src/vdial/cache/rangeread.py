"""Copy byte ranges of a local file into memory, fast whether or not the page cache holds them.

A plain `pread` of a few MiB in the middle of a file is a "random read" to Linux: the kernel fills
the page cache with 4 KiB pages, and a request of hundreds of scattered pages is slow on virtual
disks (on this project's virtio machine a cold 2 MiB `pread` mid-file takes ~2.5 ms, while `np.load`
of a 2 MiB file takes ~1.3 ms: reading from offset 0, the kernel ramps its read-ahead up to large
folios). Reading a segment's item is always such a mid-file read.

On file systems whose page cache holds large folios (ext4 from Linux 6.16, XFS from 5.18), a fault
in a mapping advised `MADV_HUGEPAGE` + `MADV_RANDOM` reads exactly the 2 MiB-aligned huge page
around it as one folio: one request, no read-ahead past it. That costs about the same (~0.8 ms)
whatever part of the huge page is wanted, while a `pread` costs ~1.5 ms per MiB beyond its first
~256 KiB (measured for bench/store.py). So a read with a piece of at least a quarter of a huge page
is cut at huge-page boundaries and copied through such a mapping: uncached big pieces are faulted
in by parallel threads, uncached small ones are `pread`, cached ones are copied straight from the
page cache. A read without such a piece, and every read elsewhere, is plain `pread`.

No library does this: numpy.memmap and h5py map or read without these hints, which is what costs
them the cold reads measured in bench/store.py.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HUGE_PAGE = 2 * 2**20  # what one MADV_HUGEPAGE fault reads (x86-64 and arm64 with 4 KiB pages)
MIN_MAPPED = HUGE_PAGE // 4  # smaller pieces are read with pread (the measured break-even)
FAULT_THREADS = 4  # huge pages of one read faulted in at once

# statfs f_type -> the first Linux release whose page cache holds large folios for its files.
_LARGE_FOLIO_FILE_SYSTEMS = {0xEF53: (6, 16), 0x58465342: (5, 18)}  # ext4, XFS
_PROT_READ, _MAP_SHARED, _MADV_RANDOM, _MADV_HUGEPAGE = 1, 1, 1, 14  # <sys/mman.h> on Linux
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t) + (ctypes.c_int,) * 3 + (ctypes.c_long,)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)

_HUGE_FAULTS: dict[int, bool] = {}  # st_dev -> huge_page_faults() of a file on it
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own

Piece = tuple[int, int, int]  # (out offset, file offset, bytes)


class TruncatedError(OSError):
    """The file ends before a range that should be in it."""


def read_ranges(fd: int, ranges: list[Piece], out: np.ndarray) -> None:
    """Copy each `(out offset, file offset, size)` of `ranges` from open file `fd` into `out`,
    a C-contiguous uint8 array."""
    stat = os.fstat(fd)
    huge = _HUGE_FAULTS.get(stat.st_dev)
    if huge is None:
        huge = _HUGE_FAULTS[stat.st_dev] = huge_page_faults(fd)
    pieces = []
    for at, offset, size in ranges if huge else ():
        end = offset + size
        while offset < end:
            cut = min(end, (offset // HUGE_PAGE + 1) * HUGE_PAGE)
            pieces.append((at, offset, cut - offset))
            at, offset = at + cut - offset, cut
    if any(size >= MIN_MAPPED for _, _, size in pieces):
        ranges = _copy_mapped(fd, stat, pieces, out)
    for at, offset, size in ranges:
        if os.preadv(fd, [out[at : at + size]], offset) != size:
            raise TruncatedError(f"the file ends inside bytes {offset}..{offset + size}")


def _copy_mapped(
    fd: int, stat: os.stat_result, pieces: list[Piece], out: np.ndarray
) -> list[Piece]:
    """Copy `pieces` through one huge-page mapping, but for the small ones the page cache lacks:
    those are returned, to be pread (their read already started here).

    Cached pieces are copied through the mapping too, not pread: a huge page read by a fault
    carries the kernel's read-ahead mark, and the first `pread` to touch it would start reading
    the next 4-8 MiB of the file. A fault through a MADV_RANDOM mapping never does.
    """
    low = min(offset for _, offset, _ in pieces) // HUGE_PAGE * HUGE_PAGE
    high = max(offset + size for _, offset, size in pieces)
    if stat.st_size < high:  # touching a mapping past the end of its file is SIGBUS
        raise TruncatedError(f"the file ends before byte {high}")
    length = -(-(high - low) // HUGE_PAGE) * HUGE_PAGE  # whole huge pages: mappable as such
    address = _libc.mmap(None, length, _PROT_READ, _MAP_SHARED, fd, low)
    if address in (None, _MAP_FAILED):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap failed: {os.strerror(errno)}")
    try:
        if not (
            _libc.madvise(address, length, _MADV_HUGEPAGE) == 0
            and _libc.madvise(address, length, _MADV_RANDOM) == 0
        ):  # a kernel without transparent huge pages: pread from now on
            _HUGE_FAULTS[stat.st_dev] = False
            return pieces
        cached, faulted, pread = [], [], []
        for piece in pieces:
            if _resident(address + piece[1] - low):
                cached.append(piece)
            else:
                (faulted if piece[2] >= MIN_MAPPED else pread).append(piece)
        for _, offset, size in pread:  # started now, they overlap the faults
            os.posix_fadvise(fd, offset, size, os.POSIX_FADV_WILLNEED)
        base = out.ctypes.data

        def copy(piece: Piece) -> None:  # ctypes.memmove releases the GIL while it faults
            at, offset, size = piece
            ctypes.memmove(base + at, address + offset - low, size)

        threaded = [_pool().submit(copy, piece) for piece in faulted[1:]]
        try:
            for piece in faulted[:1] + cached:
                copy(piece)
        finally:
            for future in threaded:  # before the unmap
                future.result()
        return pread
    finally:
        _libc.munmap(address, length)


def _resident(address: int) -> bool:
    """Whether the page cache holds the page at `address` of a file mapping (without faulting).

    One page stands for its piece: pages come into the cache in folios, a huge page at a time
    through these mappings, and asking for every page would cost more than the read (170 us for
    6 MiB). A wrong guess only costs time: a piece taken as cached is faulted in unthreaded.
    """
    return bool(_mincore(address // mmap.PAGESIZE * mmap.PAGESIZE, 1)[0] & 1)


def _mincore(address: int, length: int) -> np.ndarray:
    """mincore(2) of `length` bytes of a mapping at page-aligned `address`: bit 0 per page."""
    held = np.zeros(-(-length // mmap.PAGESIZE), dtype=np.uint8)
    if _libc.mincore(address, length, held.ctypes.data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mincore failed: {os.strerror(errno)}")
    return held


def cached_pages(fd: int) -> tuple[int, int]:
    """(pages the page cache holds, pages) of open file `fd`, without reading any."""
    size = os.fstat(fd).st_size
    if not size:
        return 0, 0
    address = _libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap failed: {os.strerror(errno)}")
    try:
        held = _mincore(address, size)
    finally:
        _libc.munmap(address, size)
    return int((held & 1).sum()), held.size


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        pool = ThreadPoolExecutor(FAULT_THREADS, thread_name_prefix="vdial-fault")
        _POOL = (os.getpid(), pool)
    return _POOL[1]


def huge_page_faults(fd: int) -> bool:
    """Whether a huge-page mapping of file `fd` reads whole large folios (see the docstring):
    Linux, and a file system whose page cache holds large folios on this kernel."""
    if platform.system() != "Linux":
        return False
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first word
    if _libc.fstatfs(fd, buffer) != 0:
        return False
    fs_type = ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF
    since = _LARGE_FOLIO_FILE_SYSTEMS.get(fs_type)
    return since is not None and kernel_release() >= since


def kernel_release() -> tuple[int, int]:
    """(major, minor) of the running Linux kernel, e.g. (6, 18) for '6.18.44-generic'."""
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(found[1]), int(found[2])) if found else (0, 0)
