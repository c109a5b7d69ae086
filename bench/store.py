"""Feature-store benchmark: vdial's Zarr store against one `.npy` per item and one HDF5 file.

On the same synthetic float16 features (A: 16x64x1024 items, B: 16x257x1024, C: ragged T in 4..32
of 64x1024), measured in one run:

- random read of single items, every item once in a seeded random order (an epoch), ms/item and
  MB/s, cold (the formats' files dropped from the page cache with posix_fadvise(DONTNEED), and
  /proc/sys/vm/drop_caches where permitted; the pages still resident afterwards are counted with
  mincore; an untimed pass over the same items first, so that a virtual machine's host caches
  every format alike) then warm (the same items again); each reader interleaved item by item
  with npy reads of the same items, its ratio to npy taken within the pass; vdial through
  `feature[id]`, `FeatureReader` and `Feature.item` (Zarr);
- write time of every item with one and two vdial writer processes and with `np.save` and h5py
  (each in spawned processes, timed from a barrier once imports are done): without fsync (the
  page cache absorbs the writes of every format alike) and including the `sync` that follows;
- bytes on disk (du) against the raw float16 bytes;
- peak RSS of `vdial cache pool --grid 4` on dataset A at a quarter and at all of its items, each
  in a fresh interpreter: the pooling is out of core, so the peak must not grow with the items.

Each dataset is written and read in a fresh interpreter (what one leaves behind, gigabytes of
page cache and freed heap, changed the next one's read times by up to 2x). Item data are slices
of one seeded random pool at a per-item seeded offset: deterministic, all different, and free
to generate. Run: .venv/bin/python bench/store.py [--quick] [--only A,C]
->   bench/results/store.json and store.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FEATURE = "feat"
POOL_GRID = 4
POOL_ELEMENTS = 24 * 2**20  # float16 values every item is sliced from (48 MiB)
MARKER = ".vdial-bench-store"  # marks a workdir this script may delete
READERS = ("npy", "hdf5", "vdial feature[id]", "vdial FeatureReader", "vdial item() (zarr)")
CONTENDERS = READERS[1:]  # each timed side by side with npy
FIRST_READS = 400  # the reads of an epoch reported apart: when the page cache holds least
VERSIONS = ("numpy", "zarr", "h5py")


@dataclass(frozen=True, kw_only=True)
class Dataset:
    key: str
    label: str
    frames: tuple[int, int]  # T range of the items, inclusive
    item_shape: tuple[int, int]  # per-frame (tokens, dim)
    spec: dict  # what an extractor would record
    items: int  # default item count
    quick_items: int  # item count with --quick

    def rows(self, index: int) -> int:
        lo, hi = self.frames
        return lo if lo == hi else int(np.random.default_rng(index).integers(lo, hi + 1))

    def item(self, index: int) -> np.ndarray:
        """Item `index`: a view of the shared random pool, (T, *item_shape) float16."""
        rows = self.rows(index)
        n = rows * self.item_shape[0] * self.item_shape[1]
        start = int(np.random.default_rng([index, 1]).integers(0, POOL_ELEMENTS - n))
        return _pool()[start : start + n].reshape(rows, *self.item_shape)

    def raw_bytes(self, items: int) -> int:
        return sum(self.rows(i) for i in range(items)) * int(np.prod(self.item_shape)) * 2


def _spec(grid: int, prefix: int) -> dict:
    """What an extractor records (pool2d reads the patch grid from it)."""
    return dict(name="synthetic", frames=16, grid=[grid, grid], dim=1024, prefix_tokens=prefix,
                keep_prefix_tokens=bool(prefix), weights="random:0")  # fmt: skip


DATASETS = {
    "A": Dataset(key="A", label="16x64x1024", frames=(16, 16), item_shape=(64, 1024),
                 spec=_spec(8, 0), items=2000, quick_items=150),
    "B": Dataset(key="B", label="16x257x1024", frames=(16, 16), item_shape=(257, 1024),
                 spec=_spec(16, 1), items=500, quick_items=40),
    "C": Dataset(key="C", label="Tx64x1024, T in 4..32", frames=(4, 32), item_shape=(64, 1024),
                 spec=_spec(8, 0), items=1800, quick_items=150),
}  # fmt: skip

_POOL: list[np.ndarray] = []


def _pool() -> np.ndarray:
    if not _POOL:
        values = np.random.default_rng(0).standard_normal(POOL_ELEMENTS, dtype=np.float32)
        _POOL.append(values.astype(np.float16))
    return _POOL[0]


def item_id(index: int) -> str:
    return f"item{index:06d}"


# -- writing ------------------------------------------------------------------------------------


def open_writer(fmt: str, path: Path, ds: Dataset, items: int) -> Callable[[list[int]], None]:
    """Open or create `fmt` at `path` (not timed); returns the function writing some items."""
    if fmt == "vdial":
        from vdial.cache import FeatureStore

        feature = FeatureStore.open(path, "a").create_feature(
            FEATURE, item_shape=ds.item_shape, spec=ds.spec, exist_ok=True
        )

        def write(indices: list[int]) -> None:
            with feature.writer() as writer:
                for i in indices:
                    writer.add(item_id(i), ds.item(i))

    elif fmt == "npy":
        path.mkdir(parents=True, exist_ok=True)

        def write(indices: list[int]) -> None:
            for i in indices:
                np.save(path / f"{item_id(i)}.npy", ds.item(i))

    elif fmt == "hdf5":
        import h5py

        h5 = h5py.File(path, "w")
        h5.create_dataset("ids", data=np.array([item_id(i) for i in range(items)], dtype="S"))
        if ds.frames[0] == ds.frames[1]:  # one (items, T, ...) dataset, one item per chunk
            shape = (ds.frames[0], *ds.item_shape)
            data = h5.create_dataset("data", (items, *shape), "f2", chunks=(1, *shape))
            where = list(range(items))
        else:  # ragged: rows concatenated, chunks of the mean item, and an offsets dataset
            offsets = np.concatenate([[0], np.cumsum([ds.rows(i) for i in range(items)])])
            h5.create_dataset("offsets", data=offsets)
            chunk = (sum(ds.frames) // 2, *ds.item_shape)
            data = h5.create_dataset("data", (offsets[-1], *ds.item_shape), "f2", chunks=chunk)
            where = [slice(offsets[i], offsets[i + 1]) for i in range(items)]

        def write(indices: list[int]) -> None:
            for i in indices:
                data[where[i]] = ds.item(i)
            h5.close()

    else:
        raise ValueError(f"unknown format {fmt!r}")
    return write


def _write_child(fmt, path, key, items, indices, barrier, queue) -> None:
    """In a spawned process: open, build the pool, wait for the others, write, report times."""
    ds = DATASETS[key]
    write = open_writer(fmt, path, ds, items)
    ds.item(0)
    barrier.wait(timeout=600)
    start = time.monotonic()
    write(indices)
    queue.put((start, time.monotonic()))


def timed_write(fmt: str, path: Path, ds: Dataset, items: int, processes: int) -> dict:
    """Write items 0..items-1 with `processes` spawned writers (each a contiguous share)."""
    os.sync()  # start with no dirty pages left by the previous step
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes + 1), ctx.Queue()
    shares = np.array_split(np.arange(items), processes)
    children = [
        ctx.Process(
            target=_write_child,
            args=(fmt, path, ds.key, items, share.tolist(), barrier, queue),
        )
        for share in shares
    ]
    for child in children:
        child.start()
    while barrier.n_waiting < processes:  # imports and opening are not timed
        if not all(child.is_alive() for child in children):
            raise RuntimeError(f"a {fmt} writer process died before writing")
        time.sleep(0.01)
    barrier.wait()
    for child in children:
        child.join()
    if any(child.exitcode for child in children):
        raise RuntimeError(
            f"a {fmt} writer process failed: exit codes {[c.exitcode for c in children]}"
        )
    spans = [queue.get(timeout=10) for _ in children]
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    synced = time.monotonic()
    os.sync()
    sync_s = time.monotonic() - synced
    raw = ds.raw_bytes(items)
    row = dict(dataset=ds.key, format=fmt, processes=processes, items=items, mb=raw / 1e6)
    return row | dict(seconds=seconds, seconds_synced=seconds + sync_s)


# -- reading ------------------------------------------------------------------------------------


def open_reader(name: str, paths: dict[str, Path], ds: Dataset):
    """(get(index) -> array, close) for one reader; whatever it opens is opened here."""
    if name == "npy":
        return (lambda i: np.load(paths["npy"] / f"{item_id(i)}.npy")), (lambda: None)
    if name == "hdf5":
        import h5py

        h5 = h5py.File(paths["hdf5"], "r")
        rows = {k.decode(): n for n, k in enumerate(h5["ids"][...])}
        data = h5["data"]
        if "offsets" in h5:
            offsets = h5["offsets"][...]

            def get(i):
                row = rows[item_id(i)]
                return data[offsets[row] : offsets[row + 1]]

            return get, h5.close
        return (lambda i: data[rows[item_id(i)]]), h5.close
    if name == "vdial FeatureReader":
        from vdial.cache.reader import FeatureReader

        reader = FeatureReader(paths["vdial"], FEATURE)
        len(reader)  # opens the store, as a DataLoader worker does on its first item
        return (lambda i: reader[item_id(i)]), (lambda: None)
    from vdial.cache import FeatureStore

    feature = FeatureStore.open(paths["vdial"], "r")[FEATURE]
    if name == "vdial item() (zarr)":
        return (lambda i: feature.item(item_id(i))["data"]), (lambda: None)
    return (lambda i: feature[item_id(i)]), (lambda: None)


def format_files(name: str, paths: dict[str, Path]) -> list[Path]:
    path = paths[name.split()[0]]
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def drop_cache(files: list[Path], drop_caches: bool) -> None:
    """Evict `files` from the page cache (they must be clean: the writes were synced)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if drop_caches:
        Path("/proc/sys/vm/drop_caches").write_text("1")


def try_drop_caches() -> str:
    """Whether this process may write /proc/sys/vm/drop_caches (usually root outside containers)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1")
    except OSError as err:
        return f"not permitted ({type(err).__name__}: {err.strerror})"
    return "permitted"


def resident_fraction(files: list[Path]) -> float:
    """The fraction of the files' pages in the page cache (mincore), to check a cache drop."""
    from vdial.cache.rangeread import cached_pages

    resident = total = 0
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            held, pages = cached_pages(fd)
        finally:
            os.close(fd)
        resident, total = resident + held, total + pages
    return resident / max(total, 1)


def reads_in_flight(path: Path) -> Callable[[], int]:
    """A function counting the reads in flight on the block device holding `path` (sysfs); one
    that always says 0 where the device is not a block device (tmpfs, overlayfs)."""
    device = os.stat(path).st_dev
    counter = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/inflight")
    if not counter.exists():
        return lambda: 0
    return lambda: int(counter.read_text().split()[0])


def read_pass(name: str, paths: dict, ds: Dataset, order: list[int], drop: bool) -> dict:
    """`name` against npy over `order`: per cache state ('cold', 'warm') the (2, items) seconds
    of every npy read and every `name` read, interleaved item by item; and the share of both
    formats' pages still cached after the drop.

    Interleaving puts whatever else the machine is doing (a virtual disk's neighbours, its
    host's cache) on both formats alike, which timing them one pass after the other did not
    (single passes varied by 20-50 %). Which of the two reads an item first alternates. A read's
    clock runs until the disk has no read in flight, so that read-ahead a reader starts and does
    not wait for is charged to it, not to the next read (HDF5's made the next read ~1 ms slower).

    Before the cold reads an untimed pass reads the same items in both formats. A virtual
    machine's disk is cached by its host too, which no drop here reaches: without that pass, a
    format the host still held from writing read up to 2x faster than one it had evicted. After
    it both are equally cached by the host (on bare metal it changes nothing), so what is
    measured is this machine's page cache being cold. Each cache state opens fresh handles, so
    vdial's times include opening every segment on first touch.
    """
    names, files = ("npy", name), format_files("npy", paths) + format_files(name, paths)
    in_flight = reads_in_flight(paths["npy"])
    readers = [open_reader(n, paths, ds) for n in names]
    for i in order:
        for get, _ in readers:
            get(i)
    times, resident = {}, 0.0
    for cache in ("cold", "warm"):
        for _, close in readers:
            close()
        readers = [open_reader(n, paths, ds) for n in names]
        if cache == "cold":
            drop_cache(files, drop)
            resident = resident_fraction(files)
        seconds = np.zeros((2, len(order)))
        for k, i in enumerate(order):
            for r in (0, 1) if k % 2 else (1, 0):
                start = time.perf_counter()
                readers[r][0](i)
                while in_flight() and time.perf_counter() - start < 1:
                    pass
                seconds[r, k] = time.perf_counter() - start
        times[cache] = seconds
    for i in order[:3]:  # the values, outside the clock
        if not np.array_equal(readers[1][0](i), ds.item(i)):
            raise AssertionError(f"{name} returned wrong values for {item_id(i)}")
    for _, close in readers:
        close()
    return dict(times=times, resident=resident)


def read_rows(ds: Dataset, paths: dict, order: list[int], repeats: int, drop: bool, advance):
    """Every contender against npy (read_pass) `repeats` times; medians over the repeats.

    x npy is the median of each pass's npy seconds / contender seconds (the two timed side by
    side); 'x npy, first N' the same over the first N reads, when the page cache holds least.
    """
    for name in READERS:  # load what each reader imports lazily, before any clock runs
        get, close = open_reader(name, paths, ds)
        get(order[0])
        close()
    nbytes = sum(ds.item(i).nbytes for i in order)
    first = min(FIRST_READS, len(order))
    passes: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    for _ in range(repeats):  # contenders in turn, so that a burst of other work hits one pass
        for name in CONTENDERS:
            passes[name].append(read_pass(name, paths, ds, order, drop))
            advance()
    rows = []
    for cache in ("cold", "warm"):
        every = [p for ps in passes.values() for p in ps]
        npy = [p["times"][cache][0] for p in every]
        rows.append(_read_row(ds, "npy", cache, npy, [1.0], [1.0], nbytes, first, every))
        for name, ps in passes.items():
            got = [p["times"][cache] for p in ps]
            ratio = [t[0].sum() / t[1].sum() for t in got]
            ratio_first = [t[0, :first].sum() / t[1, :first].sum() for t in got]
            seconds = [t[1] for t in got]
            rows.append(_read_row(ds, name, cache, seconds, ratio, ratio_first, nbytes, first, ps))
    return rows


def _read_row(ds, reader, cache, seconds, ratio, ratio_first, nbytes, first, passes) -> dict:
    """A table row: medians over the passes; 'resident' the most left cached by any drop."""
    median = float(np.median([s.sum() for s in seconds]))
    items = len(seconds[0])
    row = dict(dataset=ds.key, reader=reader, cache=cache, items=items, mb=nbytes / 1e6)
    row |= dict(seconds=median, ms_item=1000 * median / items, mb_s=nbytes / median / 1e6)
    row |= dict(x_npy=float(np.median(ratio)), x_npy_first=float(np.median(ratio_first)))
    resident = f"{100 * max(p['resident'] for p in passes):.1f}%" if cache == "cold" else "-"
    return row | dict(first=first, resident=resident)


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes allocated on disk as du counts them, apparent bytes of the files)."""
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    stats = [p.lstat() for p in entries]
    return sum(s.st_blocks * 512 for s in stats), sum(
        s.st_size for s in stats if stat.S_ISREG(s.st_mode)
    )


# -- pooled views -------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM); not ru_maxrss, which Linux carries across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def pool_child(store: str, block_items: str) -> None:
    """In a fresh interpreter: `vdial cache pool` on `store`, then its peak RSS as JSON."""
    import dask  # noqa: F401  (the libraries the command imports, loaded before the baseline)
    import torch  # noqa: F401
    import zarr  # noqa: F401

    import vdial.cache.views  # noqa: F401
    from vdial.cli import app

    imported = peak_rss_mib()
    start = time.perf_counter()
    app(
        ["cache", "pool", "--store", store, "--feature", FEATURE, "--grid", str(POOL_GRID)]
        + ["--block-items", block_items, "--no-progress"],
        standalone_mode=False,
    )
    seconds = time.perf_counter() - start
    print(json.dumps(dict(peak_mib=peak_rss_mib(), import_mib=imported, seconds=seconds)))


def pool_rows(stores: list[tuple[Path, int]], block_items: int, advance) -> list[dict]:
    rows = []
    for path, items in stores:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--pool-child", str(path)]
        cmd.append(str(block_items))
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = dict(items=items, **json.loads(out.strip().splitlines()[-1]))
        row |= dict(work_mib=row["peak_mib"] - row["import_mib"], items_s=items / row["seconds"])
        rows.append(row)
        advance()
    return rows


# -- one dataset, report ------------------------------------------------------------------------


def run_dataset(ds: Dataset, items: int, args: argparse.Namespace, drop: bool, advance) -> dict:
    from vdial.cache import FeatureStore

    work = args.workdir / ds.key
    work.mkdir()
    paths = {"vdial": work / "store", "npy": work / "npy", "hdf5": work / "data.h5"}
    writes = []
    for fmt, path, processes in (
        ("vdial", paths["vdial"], 1),
        ("vdial", work / "store_2writers", 2),
        ("npy", paths["npy"], 1),
        ("hdf5", paths["hdf5"], 1),
    ):
        writes.append(timed_write(fmt, path, ds, items, processes))
        if fmt == "vdial" and (held := len(FeatureStore.open(path, "r")[FEATURE])) != items:
            raise AssertionError(f"{path} holds {held} items, {items} were written")
        advance()
    npy = next(w for w in writes if w["format"] == "npy")
    for w in writes:
        w |= dict(mb_s=w["mb"] / w["seconds"], mb_s_synced=w["mb"] / w["seconds_synced"])
        w |= dict(x_npy=npy["seconds"] / w["seconds"])
        w |= dict(x_npy_synced=npy["seconds_synced"] / w["seconds_synced"])
    raw, disk = ds.raw_bytes(items), []
    for fmt in ("vdial", "npy", "hdf5"):
        du, apparent = disk_usage(paths[fmt] / FEATURE if fmt == "vdial" else paths[fmt])
        row = dict(dataset=ds.key, format=fmt, raw_mb=raw / 1e6, du_mb=du / 1e6)
        disk.append(row | dict(apparent_mb=apparent / 1e6, x_raw=du / raw))
    order = np.random.default_rng(1).permutation(items)[: args.reads or items].tolist()
    reads = read_rows(ds, paths, order, args.repeats, drop, advance)
    return dict(writes=writes, disk=disk, reads=reads)


def _target(target: str, value: float, unit: str, met: bool) -> dict:
    return dict(target=target, measured=f"{value:.3g}{unit}", met=met)


def targets(reads: list[dict], disk: list[dict], pool: list[dict]) -> list[dict]:
    out = []
    for r in reads:
        if r["reader"] != "vdial feature[id]":
            continue
        key = (r["dataset"], "hdf5", r["cache"])
        h5 = next(x for x in reads if (x["dataset"], x["reader"], x["cache"]) == key)
        name, x_h5 = f"{r['dataset']}: random read, {r['cache']}", r["x_npy"] / h5["x_npy"]
        out.append(_target(f"{name}, >= 0.8x npy", r["x_npy"], "x npy", r["x_npy"] >= 0.8))
        out.append(_target(f"{name}, faster than HDF5", x_h5, "x hdf5", x_h5 > 1))
    for d in disk:
        if d["format"] == "vdial":
            name = f"{d['dataset']}: bytes on disk <= 1.05x raw"
            out.append(_target(name, d["x_raw"], "x raw", d["x_raw"] <= 1.05))
    if len(pool) == 2:
        growth = pool[1]["peak_mib"] / pool[0]["peak_mib"]
        name = f"pool peak RSS, {pool[1]['items']} vs {pool[0]['items']} items, <= 1.25x"
        out.append(_target(name, growth, "x", growth <= 1.25))
    return out


# One template per table, "header={field:format}; ...": formatted (numeric) columns align right.
READ_TABLE = (
    "dataset={dataset}; reader={reader}; cache={cache}; items={items:d}; ms/item={ms_item:.2f}; "
    "MB/s={mb_s:.0f}; x npy={x_npy:.2f}; x npy, first reads={x_npy_first:.2f}; resident={resident}"
)
WRITE_TABLE = (
    "dataset={dataset}; format={format}; processes={processes:d}; items={items:d}; MB={mb:.0f}; "
    "s={seconds:.2f}; MB/s={mb_s:.0f}; x npy={x_npy:.2f}; s + sync={seconds_synced:.2f}; "
    "MB/s + sync={mb_s_synced:.0f}; x npy + sync={x_npy_synced:.2f}"
)
DISK_TABLE = (
    "dataset={dataset}; format={format}; raw MB={raw_mb:.1f}; du MB={du_mb:.1f}; "
    "apparent MB={apparent_mb:.1f}; x raw={x_raw:.3f}"
)
POOL_TABLE = (
    "items={items:d}; peak RSS MiB={peak_mib:.0f}; after imports MiB={import_mib:.0f}; "
    "peak - imports MiB={work_mib:.0f}; s={seconds:.1f}; items/s={items_s:.1f}"
)
TARGET_TABLE = "target={target}; measured={measured}; met={met}"


def table(template: str, rows: list[dict]) -> list[str]:
    columns = [column.split("=", 1) for column in template.split("; ")]
    lines = [
        "| " + " | ".join(head for head, _ in columns) + " |",
        "| " + " | ".join("---:" if ":" in fmt else "---" for _, fmt in columns) + " |",
    ]
    lines += ["| " + " | ".join(f.format(**row) for _, f in columns) + " |" for row in rows]
    return [*lines, ""]


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        "# Feature-store benchmark",
        "",
        f"{meta['cpus']} CPUs, Python {meta['python']}; {meta['versions']}. Datasets: "
        f"{meta['datasets']}. MB = 10^6 bytes; x npy = npy time / this time (> 1: faster).",
        "",
        "## Random read of single items",
        "",
        "Each item of the dataset once (or the first `--reads`) in a seeded random order, as a "
        "training epoch reads them. Every reader is timed against npy in passes that read each "
        "item in both formats back to back, so that whatever else the machine does hits both "
        "alike; x npy = npy seconds / this reader's seconds of the same pass, the median of "
        f"{meta['repeats']} passes (ms/item: the median pass; npy: over all passes); 'first "
        f"reads': x npy over the first {FIRST_READS} reads of the pass (cold: when the page "
        "cache holds least). Cold: "
        f"{meta['cache_drop']}; done after opening the readers. 'resident': the most of the two "
        "formats' pages still cached after a drop (mincore). Before each cold pass an untimed "
        "pass reads the same items in both formats, so that the virtual machine's host, whose "
        "cache no drop reaches, holds them alike. Warm: the same items again, through fresh "
        "handles. vdial's times include opening each segment on first touch.",
        "",
        *table(READ_TABLE, result["reads"]),
        "## Write",
        "",
        "All items of the dataset, by spawned processes timed from a barrier after their imports. "
        "Without fsync the page cache absorbs the writes of every format alike; '+ sync' adds "
        "the `sync` that followed (bounded by the disk's write speed).",
        "",
        *table(WRITE_TABLE, result["writes"]),
        "## Bytes on disk",
        "",
        "du (allocated blocks, directories included) of the feature folder, the npy folder and "
        "the HDF5 file, against the items' raw float16 bytes.",
        "",
        *table(DISK_TABLE, result["disk"]),
    ]
    if result["pool"]:
        lines += [
            "## Pooled view memory",
            "",
            f"`vdial cache pool --grid {POOL_GRID} --block-items {meta['pool_block']}` on "
            "dataset A, each size in a fresh interpreter; 'after imports': its RSS once the "
            "command's libraries are loaded.",
            "",
            *table(POOL_TABLE, result["pool"]),
        ]
    shown = [{**t, "met": "yes" if t["met"] else "**no**"} for t in result["targets"]]
    return "\n".join([*lines, "## Targets", "", *table(TARGET_TABLE, shown)])


def prepare_workdir(work: Path) -> None:
    if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
        raise SystemExit(f"{work} is not empty and was not made by this benchmark; choose another")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARKER).touch()


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def measure_dataset(ds: Dataset, items: int, args: argparse.Namespace, drop: bool) -> dict:
    """Everything measured on one dataset (and, for A, the pooled views), with a progress bar."""
    from rich.progress import Progress

    steps = 4 + len(CONTENDERS) * args.repeats + 3 * (ds.key == "A")
    with Progress() as progress:
        task = progress.add_task(f"{ds.key} {ds.label}, {items} items", total=steps)

        def advance() -> None:
            progress.advance(task)

        got = run_dataset(ds, items, args, drop, advance)
        got["pool"] = []
        work = args.workdir / ds.key
        if ds.key == "A":
            progress.update(task, description="A: pooled views")
            small = max(1, items // 4)
            open_writer("vdial", work / "store_small", ds, small)(list(range(small)))
            advance()
            stores = [(work / "store_small", small), (work / "store", items)]
            got["pool"] = pool_rows(stores, args.pool_block, advance)
        if not args.keep:
            shutil.rmtree(work)
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, help="items per dataset [A 2000, B 500, C 1800]")
    parser.add_argument("--only", default="A,B,C", help="datasets to run, e.g. A,C")
    parser.add_argument("--reads", type=int, default=0, help="items read per pass [0: all]")
    parser.add_argument("--repeats", type=int, default=3, help="read passes, median kept [3]")
    parser.add_argument("--quick", action="store_true", help="a ~1 min run to check the script")
    parser.add_argument("--workdir", type=Path, default=RESULTS / "store_work", help="scratch")
    parser.add_argument("--keep", action="store_true", help="keep the workdir's stores and files")
    parser.add_argument("--pool-child", nargs=2, metavar=("STORE", "BLOCK"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset-child", type=Path, metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pool_child:
        pool_child(*args.pool_child)
        return
    keys = [k.strip().upper() for k in args.only.split(",") if k.strip()]
    if unknown := sorted(set(keys) - set(DATASETS)):
        parser.error(f"--only: no dataset {', '.join(unknown)} (choose from {', '.join(DATASETS)})")
    chosen = [DATASETS[k] for k in keys]
    count = {d.key: args.items or (d.quick_items if args.quick else d.items) for d in chosen}
    # Each pool run needs more blocks than dask threads, or the small one is not comparable.
    args.pool_block = 64
    if args.quick:
        args.reads, args.repeats, args.pool_block = min(args.reads or 100, 100), 1, 8
    drop_method = try_drop_caches()
    if args.dataset_child:
        (ds,) = chosen
        got = measure_dataset(ds, count[ds.key], args, drop_method == "permitted")
        args.dataset_child.write_text(json.dumps(got))
        return
    need = [4.6 * d.raw_bytes(count[d.key]) for d in chosen]  # 4 copies, A: + pool stores
    need = sum(need) if args.keep else max(need)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(args.workdir).free < need:
        raise SystemExit(f"{args.workdir}: needs about {need / 2**30:.1f} GiB free; use --items")

    from rich.console import Console
    from rich.markdown import Markdown

    prepare_workdir(args.workdir)
    result = dict(reads=[], writes=[], disk=[], pool=[])
    # Each dataset in a fresh interpreter: what one dataset leaves behind (gigabytes of page
    # cache and of freed heap) otherwise changes the next one's read times by up to 2x.
    for ds in chosen:
        out = args.workdir / f"{ds.key}.json"
        cmd = [sys.executable, __file__, "--only", ds.key, "--reads", str(args.reads)]
        cmd += ["--repeats", str(args.repeats), "--workdir", str(args.workdir)]
        cmd += ["--dataset-child", str(out), "--items", str(count[ds.key])]
        cmd += ["--quick"] * args.quick + ["--keep"] * args.keep
        subprocess.run(cmd, check=True)
        got = json.loads(out.read_text())
        for key in ("reads", "writes", "disk", "pool"):
            result[key] += got[key]
    if not args.keep:
        shutil.rmtree(args.workdir)
    result["targets"] = targets(result["reads"], result["disk"], result["pool"])
    result["meta"] = dict(
        cpus=len(os.sched_getaffinity(0)),
        python=platform.python_version(),
        versions=", ".join(f"{d} {_version(d)}" for d in VERSIONS),
        datasets=", ".join(f"{d.key} {d.label} x {count[d.key]}" for d in chosen),
        cache_drop="posix_fadvise(POSIX_FADV_DONTNEED) on every file of the format; writing 1 "
        f"to /proc/sys/vm/drop_caches: {drop_method}",
        reads=args.reads,
        repeats=args.repeats,
        pool_block=args.pool_block,
    )
    text = markdown(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "store.md").write_text(text)
    (RESULTS / "store.json").write_text(json.dumps(result, indent=1))
    Console().print(Markdown(text))


if __name__ == "__main__":
    main()
