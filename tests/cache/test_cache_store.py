"""FeatureStore: round trips, lookups, what opening reads, open modes, definitions, info."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from tests.cache.cache_testlib import SPEC, ragged_item, rows_of
from vdial.cache import FeatureStore


def test_round_trip_of_ragged_float16_items_with_extras(store, make_feature):
    feature = make_feature(extras={"timestamps": ((), "float32"), "boxes": ((4,), "float32")})
    lengths = {"a": 3, "b": 1, "c": 7, "d": 2, "e": 5}
    written = {}
    with feature.writer(segment_items=2) as writer:
        for item_id, rows in lengths.items():
            data = ragged_item(item_id, rows) * 10
            stamps = np.arange(rows, dtype=np.float64) / 3  # float64 in, float32 stored
            boxes = np.random.default_rng(rows).uniform(0, 1, (rows, 4))
            writer.add(item_id, data, timestamps=stamps, boxes=boxes)
            written[item_id] = (data, stamps, boxes)

    reopened = FeatureStore.open(store.path, "r")["dinov2"]
    assert reopened.dtype == np.float16 and reopened.item_shape == (16, 8)
    assert len(reopened.segments) == 3  # 2 + 2 + 1 items
    for item_id, (data, stamps, boxes) in written.items():
        got = reopened[item_id]
        assert got.dtype == np.float16 and got.shape == (lengths[item_id], 16, 8)
        np.testing.assert_array_equal(got, data.astype(np.float16))
        item = reopened.item(item_id)
        assert set(item) == {"data", "timestamps", "boxes"}
        np.testing.assert_array_equal(item["timestamps"], stamps.astype(np.float32))
        np.testing.assert_array_equal(item["boxes"], boxes.astype(np.float32))
    many = reopened.read_many(["e", "a"])
    np.testing.assert_array_equal(many[0], written["e"][0].astype(np.float16))
    np.testing.assert_array_equal(many[1], written["a"][0].astype(np.float16))


def test_lookup_contains_ids_and_missing(store, make_feature):
    feature = make_feature()
    with feature.writer(segment_items=3) as writer:
        for item_id in ["v3", "v1", "v2", "v0"]:
            writer.add(item_id, ragged_item(item_id, 2), timestamps=np.zeros(2))
    feature = FeatureStore.open(store.path)["dinov2"]
    assert sorted(feature.ids) == ["v0", "v1", "v2", "v3"] and len(feature) == 4
    assert "v2" in feature and "v9" not in feature and 3 not in feature
    assert feature.missing(["v9", "v1", "x", "v0", "a"]) == ["v9", "x", "a"]
    with pytest.raises(KeyError, match="'v9' is not in feature 'dinov2'"):
        feature["v9"]


def _record_reads(monkeypatch) -> list[str]:
    """Record every key the local Zarr store reads."""
    keys: list[str] = []
    original = LocalStore.get

    async def get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", get)
    return keys


def test_opening_reads_metadata_only_and_an_item_reads_only_its_chunks(
    store, make_feature, monkeypatch
):
    feature = make_feature()
    ids = [f"v{i:02d}" for i in range(12)]
    with feature.writer(segment_items=4) as writer:
        for item_id in ids:
            writer.add(
                item_id,
                ragged_item(item_id, rows_of(item_id)),
                timestamps=np.zeros(5)[: rows_of(item_id)],
            )

    keys = _record_reads(monkeypatch)
    reopened = FeatureStore.open(store.path, "r")["dinov2"]
    assert len(reopened) == 12 and "v05" in reopened and reopened.missing(ids) == []
    reopened.fingerprint()
    assert keys and all(k.endswith("zarr.json") for k in keys), keys

    # An item's rows come straight from its shard: the index once per segment, then its bytes.
    reads = []
    real_pread, real_preadv = os.pread, os.preadv
    monkeypatch.setattr(
        os, "pread", lambda fd, n, off: reads.append(("index", n)) or real_pread(fd, n, off)
    )
    monkeypatch.setattr(
        os,
        "preadv",
        lambda fd, bufs, off: (
            reads.append(("rows", sum(len(b) for b in bufs))) or real_preadv(fd, bufs, off)
        ),
    )
    segment, _, _ = reopened.location("v06")
    array = zarr.open_array(
        LocalStore(store.path, read_only=True), path=f"dinov2/segments/{segment}/data", mode="r"
    )
    np.testing.assert_array_equal(
        reopened["v06"], ragged_item("v06", rows_of("v06")).astype(np.float16)
    )
    row_bytes = 16 * 8 * 2  # item_shape (16, 8) float16
    index_bytes = -(-array.shape[0] // array.chunks[0]) * 16 + 4
    assert ("index", index_bytes) in reads
    assert sum(n for what, n in reads if what == "rows") == rows_of("v06") * row_bytes
    reads.clear()
    same_segment = [i for i in ids if reopened.location(i)[0] == segment and i != "v06"][0]
    reopened[same_segment]
    assert [what for what, _ in reads] == ["rows"] * len(reads)  # the index is read once


def test_open_modes(tmp_path: Path):
    path = tmp_path / "store"
    with pytest.raises(FileNotFoundError, match=str(path)):
        FeatureStore.open(path, "r")
    assert not path.exists()  # "r" never creates

    created = FeatureStore.open(path, "a")
    created.create_feature("f", item_shape=(2,), spec={})
    assert FeatureStore.open(path, "a").features == ["f"]
    assert FeatureStore.open(path, "w").features == []
    assert FeatureStore.open(path, "r").features == []
    with pytest.raises(ValueError, match="mode must be"):
        FeatureStore.open(path, "x")

    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"precious")
    for mode in ("a", "w"):
        with pytest.raises(FileExistsError, match="not a vdial feature store"):
            FeatureStore.open(other, mode)
    assert (other / "keep.jpg").read_bytes() == b"precious"

    plain = tmp_path / "plain.zarr"
    zarr.open_group(LocalStore(plain), mode="w")
    with pytest.raises(ValueError, match="not a vdial feature store"):
        FeatureStore.open(plain, "r")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    for mode in ("r", "a"):
        with pytest.raises(ValueError, match=r"broken/zarr.json: unreadable Zarr metadata"):
            FeatureStore.open(broken, mode)
    assert (broken / "zarr.json").read_text() == "{not json"


def test_read_only_store_refuses_writes(store, make_feature):
    make_feature()
    reader = FeatureStore.open(store.path, "r")
    with pytest.raises(PermissionError, match="read-only"):
        reader["dinov2"].writer()
    with pytest.raises(PermissionError, match="read-only"):
        reader.create_feature("other", item_shape=(1,), spec={})


def test_nested_features_listing_and_unknown_feature(store, make_feature):
    make_feature("dinov2/pool4x4", item_shape=(16, 8))
    make_feature("siglip/layer-2", item_shape=(4, 4))
    make_feature("dinov2")  # an intermediate group becomes a feature
    assert store.features == ["dinov2", "dinov2/pool4x4", "siglip/layer-2"]
    assert "dinov2/pool4x4" in store and "siglip" not in store and "nope" not in store
    assert store["dinov2/pool4x4"].item_shape == (16, 8)
    with pytest.raises(KeyError, match="features: dinov2, dinov2/pool4x4, siglip/layer-2"):
        store["clip"]
    for bad in ("segments", "a/segments", "", "a//b", "/a", "a b"):
        with pytest.raises(ValueError, match="invalid feature name"):
            store.create_feature(bad, item_shape=(1,), spec={})


def test_create_feature_exist_ok_resumes_only_an_identical_definition(store, make_feature):
    feature = make_feature()
    with feature.writer() as writer:
        writer.add("a", ragged_item("a", 2), timestamps=np.zeros(2))
    with pytest.raises(ValueError, match="already exists"):
        make_feature()

    same = make_feature(spec=dict(SPEC), exist_ok=True)
    assert same.ids == ["a"]
    with pytest.raises(ValueError, match="spec.weights_digest: stored") as err:
        make_feature(spec={**SPEC, "weights_digest": "sha256:abc"}, exist_ok=True)
    assert "sha256:abc" in str(err.value) and "another store" in str(err.value)
    assert all(f"spec.{k}:" not in str(err.value) for k in SPEC if k != "weights_digest")
    with pytest.raises(ValueError, match=r"spec.added: stored \(absent\), requested 1"):
        make_feature(spec={**SPEC, "added": 1}, exist_ok=True)
    with pytest.raises(ValueError, match="item_shape: stored"):
        make_feature(item_shape=(16, 9), exist_ok=True)
    with pytest.raises(ValueError, match="dtype: stored"):
        make_feature(dtype="float32", exist_ok=True)
    with pytest.raises(
        ValueError, match=r"extras.timestamps: stored .*float32.*, requested \(absent\)"
    ):
        make_feature(extras={}, exist_ok=True)
    with pytest.raises(ValueError, match="JSON"):
        make_feature(name="other", spec={"mean": {1, 2}})


def test_add_checks_shape_dtype_extras_and_overflow(make_feature):
    feature = make_feature()
    with feature.writer() as writer:
        with pytest.raises(ValueError, match=r"id 'x': data has shape \(2, 16, 9\)"):
            writer.add("x", np.zeros((2, 16, 9)), timestamps=np.zeros(2))
        with pytest.raises(ValueError, match=r"id 'x': data has shape \(16, 8\)"):
            writer.add("x", np.zeros((16, 8)), timestamps=np.zeros(2))
        with pytest.raises(ValueError, match="id 'x': data has dtype complex128"):
            writer.add("x", np.zeros((2, 16, 8), complex), timestamps=np.zeros(2))
        with pytest.raises(ValueError, match="id 'x': .*overflow float16"):
            writer.add("x", np.full((2, 16, 8), 1e6, np.float32), timestamps=np.zeros(2))
        with pytest.raises(ValueError, match=r"id 'x'.*missing \['timestamps'\]"):
            writer.add("x", np.zeros((2, 16, 8)))
        with pytest.raises(ValueError, match=r"id 'x'.*unknown \['boxes'\]"):
            writer.add("x", np.zeros((2, 16, 8)), timestamps=np.zeros(2), boxes=np.zeros(2))
        with pytest.raises(ValueError, match="id 'x': extra 'timestamps' has 3 rows, data has 2"):
            writer.add("x", np.zeros((2, 16, 8)), timestamps=np.zeros(3))
    assert len(feature) == 0 and feature.segments == []


def test_info_reports_counts_bytes_and_provenance(store, make_feature):
    feature = make_feature()
    with feature.writer(segment_items=2) as writer:
        for item_id in ["a", "b", "c"]:
            writer.add(item_id, ragged_item(item_id, 3), timestamps=np.zeros(3))
        writer.fail("broken", "decode", "moov atom not found")
    make_feature("dinov2/pool2x2", item_shape=(4, 8), lineage={"parent": "dinov2"})

    rows = {row["name"]: row for row in FeatureStore.open(store.path).info()}
    assert set(rows) == {"dinov2", "dinov2/pool2x2"}
    row = rows["dinov2"]
    assert (row["items"], row["failed"], row["segments"]) == (3, 1, 2)
    assert (row["item_shape"], row["dtype"], row["extras"]) == ((16, 8), "float16", ["timestamps"])
    assert (row["encoder"], row["weights"], row["parent"]) == ("dinov2_vits14", "random:0", None)
    # Bytes are the segments' array files on disk (chunks and array metadata).
    on_disk = sum(
        f.stat().st_size
        for array_dir in (store.path / "dinov2" / "segments").glob("*/*")
        for f in array_dir.rglob("*")
        if f.is_file()
    )
    assert row["bytes"] == on_disk and on_disk > 3 * 3 * 16 * 8 * 2
    assert rows["dinov2/pool2x2"]["parent"] == "dinov2"
    assert rows["dinov2/pool2x2"]["items"] == rows["dinov2/pool2x2"]["bytes"] == 0


def test_creators_racing_for_a_store_and_a_feature_share_them(tmp_path, monkeypatch):
    import vdial.cache.store as store_module

    path = tmp_path / "store"
    look_for_store = store_module._open_existing

    def lose_store_race(location):
        found = look_for_store(location)  # nothing there yet...
        monkeypatch.setattr(store_module, "_open_existing", look_for_store)
        FeatureStore.open(location.path, "a").create_feature("f", item_shape=(2,), spec={"k": 1})
        return found

    monkeypatch.setattr(store_module, "_open_existing", lose_store_race)
    store = FeatureStore.open(path, "a")
    assert store.features == ["f"]

    find_feature = FeatureStore._feature_group

    def lose_feature_race(self, name):
        monkeypatch.setattr(FeatureStore, "_feature_group", find_feature)
        FeatureStore.open(path, "a").create_feature(name, item_shape=(2,), spec={"k": 2})
        return None  # as if we looked just before the other process created it

    monkeypatch.setattr(FeatureStore, "_feature_group", lose_feature_race)
    feature = store.create_feature("g", item_shape=(2,), spec={"k": 2}, exist_ok=True)
    assert feature.spec == {"k": 2} and store.features == ["f", "g"]
    monkeypatch.setattr(FeatureStore, "_feature_group", lose_feature_race)
    with pytest.raises(ValueError, match="spec.k: stored 2, requested 3"):
        store.create_feature("h", item_shape=(2,), spec={"k": 3}, exist_ok=True)


def test_iter_items_reads_each_segment_column_once_and_equals_item_reads(
    store, make_feature, monkeypatch
):
    feature = make_feature()
    ids = [f"v{i:02d}" for i in range(7)]
    with feature.writer(segment_items=3) as writer:
        for item_id in ids:
            rows = rows_of(item_id)
            writer.add(item_id, ragged_item(item_id, rows), timestamps=np.arange(rows))
    feature = FeatureStore.open(store.path)["dinov2"]
    keys = _record_reads(monkeypatch)
    streamed = dict(feature.iter_items(["v05", "v00", "v01"]))
    chunk_keys = [k for k in keys if not k.endswith("zarr.json")]
    assert len(chunk_keys) == len(set(chunk_keys)) == 2 * 2  # 2 segments x (data, timestamps)
    monkeypatch.undo()
    assert list(streamed) == ["v00", "v01", "v05"]  # segment order
    for item_id, columns in streamed.items():
        for name, values in feature.item(item_id).items():
            np.testing.assert_array_equal(columns[name], values)
    assert sorted(i for i, _ in feature.iter_items()) == ids
