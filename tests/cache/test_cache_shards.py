"""Segment arrays: the single-shard layout, and the direct reader against Zarr's own reads."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from zarr.codecs import ShardingCodec
from zarr.storage import LocalStore

from tests.cache.cache_testlib import evict
from vdial.cache import rangeread
from vdial.cache.shards import CorruptShardError, DirectShard, create_segment_array, shard_key


@pytest.fixture
def group(tmp_path):
    return zarr.open_group(LocalStore(tmp_path / "g"), mode="w", zarr_format=3)


def test_a_segment_array_is_one_shard_of_checksummed_inner_chunks(group, tmp_path):
    values = np.random.default_rng(0).standard_normal((10, 3, 4)).astype(np.float16)
    array = create_segment_array(group, "data", values, chunk_rows=3)
    (sharding,) = array.metadata.codecs
    assert isinstance(sharding, ShardingCodec) and sharding.chunk_shape == (3, 3, 4)
    assert array.shards == (12, 3, 4)
    files = [p for p in (tmp_path / "g" / "data").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["0", "zarr.json"]  # one shard file
    shard = tmp_path / "g" / "data" / shard_key(array)
    # 4 padded inner chunks of 3 x 3 x 4 float16 + a CRC each, then 4 (offset, length) + a CRC.
    assert shard.stat().st_size == 4 * (3 * 3 * 4 * 2 + 4) + 4 * 16 + 4
    np.testing.assert_array_equal(array[...], values)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_direct_reads_equal_zarr_reads_for_every_row_range(group, dtype):
    values = np.random.default_rng(1).standard_normal((11, 2, 5)).astype(dtype)
    values[3:6] = 0  # an all-zero chunk is stored too
    array = create_segment_array(group, "data", values, chunk_rows=3)
    direct = DirectShard.of(array)
    assert direct is not None
    for start in range(11):
        for stop in range(start, 12):
            got = direct.read(start, stop)
            assert got.flags.writeable and got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, array[start:stop])


@pytest.mark.parametrize("huge", [True, False], ids=["huge-faults", "pread-only"])
def test_direct_reads_of_rows_spanning_huge_pages_equal_zarr_reads(
    group, tmp_path, monkeypatch, huge
):
    """Rows of 128 KiB: item reads cut at 2 MiB boundaries, big pieces mapped, small ones pread."""
    device = tmp_path.stat().st_dev
    monkeypatch.setitem(rangeread._HUGE_FAULTS, device, huge)
    values = np.random.default_rng(2).standard_normal((24, 64, 1024)).astype(np.float16)
    array = create_segment_array(group, "data", values, chunk_rows=7)
    direct = DirectShard.of(array)
    for start in range(0, 24, 3):
        for stop in range(start + 1, 25, 4):
            evict(direct.path)
            np.testing.assert_array_equal(direct.read(start, stop), values[start:stop])
    assert rangeread._HUGE_FAULTS[device] is huge


def test_compressed_extras_and_other_stores_are_read_through_zarr(group):
    stamps = create_segment_array(group, "timestamps", np.arange(7, dtype=np.int64), 2)
    inner = [codec.to_dict()["name"] for codec in stamps.metadata.codecs[0].codecs]
    assert inner == ["bytes", "zstd", "crc32c"] and DirectShard.of(stamps) is None
    np.testing.assert_array_equal(stamps[...], np.arange(7))
    memory = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    assert DirectShard.of(create_segment_array(memory, "d", np.ones((2, 2), "f2"), 1)) is None


def test_a_damaged_shard_is_an_error_naming_the_file(group, tmp_path):
    values = np.ones((6, 4), dtype=np.float16)
    array = create_segment_array(group, "data", values, chunk_rows=2)
    path = tmp_path / "g" / "data" / shard_key(array)
    raw = path.read_bytes()

    path.write_bytes(raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:])  # flip a bit of the index CRC
    with pytest.raises(CorruptShardError, match="fails its checksum"):
        DirectShard.of(array).read(0, 1)

    path.write_bytes(raw[:20])  # truncated
    with pytest.raises(CorruptShardError, match=f"{path.name}.*too short"):
        DirectShard.of(array).read(0, 1)

    # An index pointing past the end of a truncated file.
    chunk = 2 * 4 * 2 + 4
    path.write_bytes(raw[: 2 * chunk] + raw[-(3 * 16 + 4) :])
    with pytest.raises(CorruptShardError, match="truncated, inner chunk 2 ends past"):
        DirectShard.of(array).read(4, 6)
    assert os.path.exists(path)
