"""docs/store-format.md describes the files on disk: its reader and its claims hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tests.cache.cache_testlib import ragged_item, rows_of
from vdial.cache import FeatureStore
from vdial.cache.index import definition_digest

DOC = Path(__file__).resolve().parents[2] / "docs" / "store-format.md"


def _filled(store, make_feature):
    feature = make_feature()
    with feature.writer(segment_items=2) as writer:
        for item_id in ["a", "CGRUM", "b"]:
            rows = rows_of(item_id)
            writer.add(item_id, ragged_item(item_id, rows), timestamps=np.arange(rows))
    with feature.writer() as writer:  # a later copy of "a" wins
        writer.add("a", ragged_item("a", 2) + 1, timestamps=np.zeros(2))
    return FeatureStore.open(store.path)["dinov2"]


def test_the_documented_plain_zarr_reader_reads_what_vdial_reads(store, make_feature):
    feature = _filled(store, make_feature)
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    for item_id in ["CGRUM", "a"]:
        namespace: dict = {}
        exec(
            code.replace('"cache/avsd"', repr(str(store.path))).replace('"CGRUM"', repr(item_id)),
            namespace,
        )
        np.testing.assert_array_equal(namespace["rows"], feature[item_id])


def test_the_documented_attributes_index_and_codecs_are_on_disk(store, make_feature):
    feature = _filled(store, make_feature)
    root = json.loads((store.path / "zarr.json").read_text())
    assert root["attributes"] == {"vdial_store_version": 1}
    attrs = json.loads((store.path / "dinov2" / "zarr.json").read_text())["attributes"]
    assert attrs["vdial_feature"] is True
    assert set(attrs) == {"vdial_feature", "dtype", "item_shape", "extras", "spec", "lineage"}
    segment = feature.location("CGRUM")[0]
    seg_dir = store.path / "dinov2" / "segments" / segment
    index = json.loads((seg_dir / "zarr.json").read_text())["attributes"]["vdial_segment"]
    assert set(index) == {
        "version",
        "committed_at",
        "ids",
        "offsets",
        "lengths",
        "failures",
        "definition",
        "writer",
    }
    assert index["definition"] == definition_digest(attrs)
    assert set(index["writer"]) == {"host", "pid", "vdial"}
    data = json.loads((seg_dir / "data" / "zarr.json").read_text())
    (sharding,) = data["codecs"]
    assert sharding["name"] == "sharding_indexed"
    config = sharding["configuration"]
    assert [c["name"] for c in config["codecs"]] == ["bytes", "crc32c"]
    assert config["codecs"][0]["configuration"]["endian"] == "little"
    assert [c["name"] for c in config["index_codecs"]] == ["bytes", "crc32c"]
    assert config["index_location"] == "end"
    assert data["chunk_grid"]["configuration"]["chunk_shape"][0] >= data["shape"][0]  # one shard
    stamps = json.loads((seg_dir / "timestamps" / "zarr.json").read_text())
    inner = [c["name"] for c in stamps["codecs"][0]["configuration"]["codecs"]]
    assert inner == ["bytes", "crc32c"]  # float extras are raw too
