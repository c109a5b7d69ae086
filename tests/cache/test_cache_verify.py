"""verify_store: a sound store passes; each kind of damage is found, named and located by id."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.cache.cache_testlib import SPEC, ragged_item, rows_of
from vdial.cache import FeatureStore
from vdial.cache.verify import verify_store

IDS = [f"v{i:02d}" for i in range(8)]


@pytest.fixture
def filled(store, make_feature):
    feature = make_feature()
    with feature.writer(segment_items=3) as writer:
        for item_id in IDS:
            rows = rows_of(item_id)
            writer.add(item_id, ragged_item(item_id, rows), timestamps=np.arange(rows))
        writer.fail("broken", "decode", "moov atom not found")
    return FeatureStore.open(store.path, "a")


def _kinds(report, severity="error"):
    return {(p.kind, p.ids) for p in report.problems if p.severity == severity}


def _data_shard(store, item_id):
    segment, _, _ = store["dinov2"].location(item_id)
    return store.path / "dinov2" / "segments" / segment / "data" / "c" / "0" / "0" / "0"


def test_a_sound_store_passes_and_expected_ids_are_accounted_for(filled):
    report = verify_store(filled, expected_ids=[*IDS, "broken"])
    assert report.ok and report.problems == [
        p for p in report.problems if p.kind == "failed"
    ]  # only the recorded failure, as a warning
    (failed,) = report.problems
    assert failed.severity == "warning" and failed.ids == ("broken",)
    assert "decode: moov atom not found" in failed.message
    counts = report.features["dinov2"]
    assert (counts["segments"], counts["items"], counts["failed"]) == (3, 8, 1)
    assert counts["bytes"] > sum(rows_of(i) for i in IDS) * 16 * 8 * 2


def test_missing_and_unexpected_ids_against_the_manifest(filled):
    report = verify_store(filled, expected_ids=["v00", "v01", "new1", "new2"])
    assert not report.ok
    assert _kinds(report) == {("missing", ("new1", "new2"))}
    unexpected = [p for p in report.problems if p.kind == "unexpected"]
    assert unexpected[0].ids == tuple(IDS[2:]) and unexpected[0].severity == "warning"


def test_nan_and_inf_are_reported_by_id(store, make_feature):
    feature = make_feature()
    with feature.writer() as writer:
        for item_id in ("ok", "nan", "inf"):
            data = ragged_item(item_id, 3)
            data[1, 2, 3] = {"ok": 0.0, "nan": np.nan, "inf": -np.inf}[item_id]
            writer.add(item_id, data, timestamps=np.zeros(3))
    assert _kinds(verify_store(store)) == {("nonfinite", ("nan", "inf"))}


def test_a_flipped_byte_a_truncated_shard_and_a_lost_shard_are_corrupt(filled):
    path = _data_shard(filled, "v00")
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))
    report = verify_store(filled)
    (problem,) = report.problems
    assert problem.kind == "corrupt" and "inner chunk 0 fails its checksum" in problem.message
    assert "v00" in problem.ids

    path.write_bytes(bytes(raw[: len(raw) // 2]))
    (problem,) = verify_store(filled).problems
    assert problem.kind == "corrupt" and "damaged or truncated" in problem.message

    path.unlink()
    (problem,) = verify_store(filled).problems
    assert problem.kind == "corrupt" and "shard file is missing" in problem.message


def test_a_malformed_index_costs_its_items_and_is_reported(filled):
    segment, _, _ = filled["dinov2"].location("v03")
    meta = filled.path / "dinov2" / "segments" / segment / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["vdial_segment"]["offsets"].pop()
    meta.write_text(json.dumps(doc))
    feature = FeatureStore.open(filled.path)["dinov2"]
    assert "malformed index" in feature.malformed_segments[segment] and "v03" not in feature
    report = verify_store(FeatureStore.open(filled.path), expected_ids=IDS)
    assert {kind for kind, _ in _kinds(report)} == {"index", "missing"}


def test_a_segment_copied_from_a_store_with_another_spec_is_a_spec_error(filled, tmp_path):
    other = FeatureStore.open(tmp_path / "other", "a").create_feature(
        "dinov2",
        item_shape=(16, 8),
        spec={**SPEC, "frames": 32},
        extras={"timestamps": ((), "float32")},
    )
    with other.writer() as writer:
        writer.add("x1", ragged_item("x1", 2), timestamps=np.zeros(2))
    (segment,) = other.segments
    shutil.copytree(
        tmp_path / "other" / "dinov2" / "segments" / segment,
        filled.path / "dinov2" / "segments" / segment,
    )
    report = verify_store(FeatureStore.open(filled.path))
    (problem,) = report.problems
    assert problem.kind == "spec" and problem.ids == ("x1",) and not report.ok


def test_uncommitted_segments_and_stale_views_are_warnings(filled):
    view = filled.create_feature(
        "dinov2/mean",
        item_shape=(8,),
        spec=SPEC,
        lineage={"parent": "dinov2", "parent_fingerprint": "old", "transform": {"op": "mean"}},
    )
    with view.writer() as writer:
        writer.add("v00", np.zeros((2, 8)))

    # A writer killed between its arrays and its index leaves an uncommitted segment.
    with filled["dinov2"].writer(commit=False) as writer:
        writer.add("late", ragged_item("late", 1), timestamps=np.zeros(1))
    report = verify_store(FeatureStore.open(filled.path))
    assert report.ok
    assert {(p.feature, p.kind) for p in report.problems} == {
        ("dinov2", "uncommitted"),
        ("dinov2/mean", "view"),
    }
    with view.writer() as writer:
        writer.add("ghost", np.zeros((1, 8)))
    assert ("view", ("ghost",)) in _kinds(verify_store(FeatureStore.open(filled.path)))
