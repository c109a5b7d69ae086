"""The on-disk layout of a segment array, and a direct reader of its shard for fast item reads.

Every segment column is one Zarr v3 array stored as a single shard (the sharding codec) whose
inner chunks hold `chunk_rows` rows each, serialised little-endian and followed by a CRC32C
checksum, with the shard index (offset, length per inner chunk, then its own CRC32C) at the end of
the file. A writer writes the shard whole, once: no other process ever touches it.

Why a reader of our own: zarr-python 3 reads a sharded chunk through its asyncio event loop and
re-reads the shard index on every access, about 2.8 ms per 2 MiB item on a local disk against
0.2 ms for two `pread`s (measured in bench/store.py). For local, uncompressed float shards we
therefore read the index once per segment and then exactly an item's rows into the output array
(`rangeread`: `pread`, or huge-page faults where those read faster). Any other layout (compressed
extras, object storage) is read through Zarr.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.storage import LocalStore

from vdial.cache.rangeread import TruncatedError, read_ranges

_EMPTY = 2**64 - 1  # offset and length of an inner chunk the shard does not hold
_CRC = 4  # bytes of the CRC32C that follows every inner chunk and the index


def create_segment_array(
    group: zarr.Group, name: str, values: np.ndarray, chunk_rows: int
) -> zarr.Array:
    """Write `values` as one single-shard array of `group`; floats raw, everything else zstd.

    float16/float32 activations barely compress (bench/store.py), so they are stored raw and read
    at disk speed; extras (timestamps, indices, boxes) are small and compress well.
    """
    rows = values.shape[0]
    shard_rows = max(1, -(-rows // chunk_rows)) * chunk_rows
    compress = values.dtype.kind != "f"
    array = group.create_array(
        name,
        shape=values.shape,
        dtype=values.dtype,
        chunks=(chunk_rows, *values.shape[1:]),
        shards=(shard_rows, *values.shape[1:]),
        serializer=BytesCodec(endian="little"),
        compressors=[ZstdCodec(level=3), Crc32cCodec()] if compress else [Crc32cCodec()],
        fill_value=0,
        # Store every inner chunk, zeros included, so that a missing chunk always means damage.
        config={"write_empty_chunks": True},
    )
    if rows:
        array[...] = values
    return array


def shard_key(array: zarr.Array) -> str:
    """The store key of the array's only shard, relative to the array, e.g. 'c/0/0/0'."""
    return array.metadata.chunk_key_encoding.encode_chunk_key((0,) * array.ndim)


def is_single_shard(array: zarr.Array) -> bool:
    """Whether `array` is laid out as vdial writes segments: one shard along the rows."""
    codecs = array.metadata.codecs
    return (
        len(codecs) == 1
        and isinstance(codecs[0], ShardingCodec)
        and array.shape[0] <= array.shards[0]
        and tuple(array.shards[1:]) == tuple(array.shape[1:])
    )


_DIRECT_CODECS = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "crc32c"},
]


def _direct_layout(meta: dict) -> tuple[int, tuple[int, ...]] | None:
    """(chunk_rows, row shape) when array metadata `meta` (a parsed zarr.json) describes a
    single-shard float array of raw little-endian chunks with CRCs, else None."""
    try:
        (sharding,) = meta["codecs"]
        config = sharding["configuration"]
        shape, shard = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        encoding = meta["chunk_key_encoding"]
        ok = (
            meta.get("zarr_format") == 3
            and meta.get("node_type") == "array"
            and meta["data_type"] in ("float16", "float32", "float64")
            and not meta.get("storage_transformers")
            and sharding["name"] == "sharding_indexed"
            and config["codecs"] == _DIRECT_CODECS
            and config["index_codecs"] == _DIRECT_CODECS
            and config.get("index_location", "end") == "end"
            and shape[0] <= shard[0]
            and shard[1:] == shape[1:] == config["chunk_shape"][1:]
            and encoding == {"name": "default", "configuration": {"separator": "/"}}
        )
    except (KeyError, TypeError, ValueError):
        return None
    return (int(config["chunk_shape"][0]), tuple(shape[1:])) if ok else None


class CorruptShardError(OSError):
    """A shard file whose index is truncated or fails its checksum."""


@dataclass(kw_only=True)
class DirectShard:
    """Reads rows of a local single-shard segment array with `pread`, the index read once."""

    path: Path  # the shard file
    rows: int  # rows in the array
    chunk_rows: int  # rows per inner chunk
    row_shape: tuple[int, ...]
    dtype: np.dtype  # little-endian
    _index: np.ndarray | None = None  # (chunks, 2) offsets and lengths

    @classmethod
    def of(cls, array: zarr.Array) -> DirectShard | None:
        """A direct reader for `array`, or None when its layout or store needs Zarr."""
        if not isinstance(array.store, LocalStore):
            return None
        return cls.at(Path(array.store.root) / array.path)

    @classmethod
    def at(cls, folder: Path) -> DirectShard | None:
        """A direct reader for the local array in `folder`, from its zarr.json alone.

        Parsing one small JSON file costs microseconds where opening the array through Zarr
        costs milliseconds, which a reader otherwise pays on its first read of every segment.
        """
        try:
            meta = json.loads((folder / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return None
        layout = _direct_layout(meta)
        if layout is None:
            return None
        chunk_rows, row_shape = layout
        return cls(
            path=folder.joinpath("c", *["0"] * (1 + len(row_shape))),
            rows=int(meta["shape"][0]),
            chunk_rows=chunk_rows,
            row_shape=row_shape,
            dtype=np.dtype(meta["data_type"]).newbyteorder("<"),
        )

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def index(self, fd: int) -> np.ndarray:
        if self._index is None:
            self._index = read_index(fd, self.chunks, self.path)
        return self._index

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new writable array."""
        out = np.empty((stop - start, *self.row_shape), dtype=self.dtype)
        row_bytes = out.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        view = out.reshape(-1).view(np.uint8)
        ranges = []  # (output byte, file byte, bytes)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            index = self.index(fd)
            row = start
            while row < stop:
                chunk, first = divmod(row, self.chunk_rows)
                take = min(stop - row, self.chunk_rows - first)
                offset, length = (int(v) for v in index[chunk])
                want, at = take * row_bytes, (row - start) * row_bytes
                if offset == _EMPTY:
                    view[at : at + want] = 0  # never written by vdial, but valid Zarr: fill value
                elif length != self.chunk_rows * row_bytes + _CRC:
                    raise CorruptShardError(f"{self.path}: inner chunk {chunk} has {length} bytes")
                else:
                    ranges.append((at, offset + first * row_bytes, want))
                row += take
            read_ranges(fd, ranges, view)
        except TruncatedError as err:
            raise CorruptShardError(f"{self.path}: truncated ({err})") from None
        finally:
            os.close(fd)
        return out


def read_index(fd: int, chunks: int, path: Path) -> np.ndarray:
    """The checked (chunks, 2) offset/length table at the end of a shard file."""
    size = os.fstat(fd).st_size
    want = chunks * 16 + _CRC
    if size < want:
        raise CorruptShardError(f"{path}: {size} bytes, too short for a {chunks}-chunk index")
    return parse_index(os.pread(fd, want, size - want), chunks, size - want, path)


def parse_index(raw: bytes, chunks: int, data_bytes: int, path: Path | str) -> np.ndarray:
    """Check the index bytes `raw` (with their CRC) of a shard holding `data_bytes` of chunks."""
    if google_crc32c.value(raw[:-_CRC]) != int.from_bytes(raw[-_CRC:], "little"):
        raise CorruptShardError(
            f"{path}: the shard index fails its checksum (the file is damaged or truncated)"
        )
    index = np.frombuffer(raw[:-_CRC], dtype="<u8").reshape(chunks, 2)
    held = index[:, 0] != _EMPTY
    ends = index[held, 0] + index[held, 1]
    if ends.size and int(ends.max()) > data_bytes:
        chunk = int(np.flatnonzero(held)[np.argmax(ends > data_bytes)])
        raise CorruptShardError(f"{path}: truncated, inner chunk {chunk} ends past the data")
    return index


def shard_problems(raw: bytes, chunks: int, path: str) -> list[str]:
    """Everything wrong with a whole shard's bytes: its index, absent chunks, failed CRCs."""
    want = chunks * 16 + _CRC
    if len(raw) < want:
        return [f"{path}: {len(raw)} bytes, too short for a {chunks}-chunk index (truncated)"]
    try:
        index = parse_index(raw[-want:], chunks, len(raw) - want, path)
    except CorruptShardError as err:
        return [str(err)]
    problems = []
    for chunk, (offset, length) in enumerate(index.tolist()):
        if offset == _EMPTY:
            problems.append(f"{path}: inner chunk {chunk} is absent")
            continue
        body = raw[offset : offset + length]
        if google_crc32c.value(body[:-_CRC]) != int.from_bytes(body[-_CRC:], "little"):
            problems.append(f"{path}: inner chunk {chunk} fails its checksum")
    return problems
