"""Writers: crash safety, invisible uncommitted segments, resume, failures, concurrency."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from tests.cache.cache_testlib import SPEC, ragged_item, rows_of
from vdial.cache import FeatureStore
from vdial.cache.index import SegmentIndex
from vdial.cache.verify import verify_store


def _add(writer, item_id: str, scale: float = 1.0) -> np.ndarray:
    data = ragged_item(item_id, rows_of(item_id)) * scale
    writer.add(item_id, data, timestamps=np.arange(len(data)))
    return data.astype(np.float16)


def test_exception_inside_the_block_commits_fully_added_items(store, make_feature):
    feature = make_feature()
    expected = {}
    with pytest.raises(RuntimeError, match="decoder exploded"):
        with feature.writer(segment_items=2) as writer:
            for item_id in ["a", "b", "c"]:
                expected[item_id] = _add(writer, item_id)
            raise RuntimeError("decoder exploded")
    reopened = FeatureStore.open(store.path)["dinov2"]
    assert sorted(reopened.ids) == ["a", "b", "c"] and len(reopened.segments) == 2
    for item_id, data in expected.items():
        np.testing.assert_array_equal(reopened[item_id], data)


def test_a_segment_without_its_index_is_invisible(store, make_feature, monkeypatch):
    feature = make_feature()
    with feature.writer() as writer:
        kept = _add(writer, "a")

    # A crash between writing a segment's arrays and its index: the commit never happens.
    def crash(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(SegmentIndex, "to_attrs", crash)
    with pytest.raises(KeyboardInterrupt):
        with feature.writer() as writer:
            _add(writer, "a", scale=-1.0)
            _add(writer, "b")
    monkeypatch.undo()

    # And an orphan written by hand: data present, no index.
    group = zarr.open_group(LocalStore(store.path), mode="a", path="dinov2/segments/dead-000000")
    group.create_array("data", data=np.ones((4, 16, 8), np.float16))

    reopened = FeatureStore.open(store.path)["dinov2"]
    assert reopened.ids == ["a"] and "b" not in reopened
    np.testing.assert_array_equal(reopened["a"], kept)
    assert (
        len(reopened.uncommitted_segments) == 2 and "dead-000000" in reopened.uncommitted_segments
    )
    assert len(reopened.segments) == 1
    info = FeatureStore.open(store.path).info()[0]
    assert (info["items"], info["uncommitted_segments"]) == (1, 2)


def test_resume_writes_only_missing_ids_and_the_later_segment_wins(store, make_feature):
    feature = make_feature()
    with feature.writer() as writer:
        first = {i: _add(writer, i) for i in ["a", "b"]}
    wanted = ["a", "b", "c", "d"]

    resumed = FeatureStore.open(store.path, "a")["dinov2"]
    todo = resumed.missing(wanted)
    assert todo == ["c", "d"]
    writer = resumed.writer()
    writer.writer_id = "00000000"  # sorts before the first writer: order must come from time
    with writer:
        second = {i: _add(writer, i) for i in todo}
        second["a"] = _add(writer, "a", scale=-2.0)  # a rewrite of an existing id

    final = FeatureStore.open(store.path)["dinov2"]
    assert sorted(final.ids) == wanted and final.missing(wanted) == []
    assert final.segments[-1].startswith("00000000-") and final.superseded == 1
    np.testing.assert_array_equal(final["a"], second["a"])
    np.testing.assert_array_equal(final["b"], first["b"])
    assert FeatureStore.open(store.path).info()[0]["superseded"] == 1


def test_failures_are_recorded_and_superseded_by_a_later_success(store, make_feature):
    feature = make_feature()
    with feature.writer() as writer:
        _add(writer, "ok")
        writer.fail("bad", "decode", "moov atom not found")
        writer.fail("worse", "encode", "CUDA out of memory")
    reopened = FeatureStore.open(store.path, "a")["dinov2"]
    assert reopened.failures == {
        "bad": {"stage": "decode", "message": "moov atom not found"},
        "worse": {"stage": "encode", "message": "CUDA out of memory"},
    }
    assert reopened.missing(["ok", "bad", "worse"]) == ["bad", "worse"]
    with pytest.raises(KeyError, match="failed at decode: moov atom not found"):
        reopened["bad"]

    with reopened.writer() as writer:
        fixed = _add(writer, "bad")
        writer.fail("ok", "decode", "flaky disk")  # a failed retry never hides committed data
    final = FeatureStore.open(store.path)["dinov2"]
    assert set(final.failures) == {"worse"}
    np.testing.assert_array_equal(final["bad"], fixed)
    assert "ok" in final


def test_fingerprint_tracks_the_data_a_run_would_read(store, make_feature):
    feature = make_feature()
    with feature.writer() as writer:
        for item_id in ["a", "b"]:
            _add(writer, item_id)
    before = feature.fingerprint()
    assert len(before) == 64
    assert FeatureStore.open(store.path)["dinov2"].fingerprint() == before
    with feature.writer() as writer:
        writer.fail("c", "decode", "broken")  # failures are not training data
    assert FeatureStore.open(store.path)["dinov2"].fingerprint() == before

    with feature.writer() as writer:
        _add(writer, "c")
    grown = FeatureStore.open(store.path)["dinov2"].fingerprint()
    with feature.writer() as writer:
        _add(writer, "a", scale=3.0)
    rewritten = FeatureStore.open(store.path)["dinov2"].fingerprint()
    assert len({before, grown, rewritten}) == 3


def _write_worker(path: str, ids: list[str], barrier) -> None:
    barrier.wait(timeout=60)  # both create the store and the feature, then write, at once
    feature = FeatureStore.open(path, "a").create_feature(
        "dinov2",
        item_shape=(16, 8),
        spec=SPEC,
        extras={"timestamps": ((), "float32")},
        exist_ok=True,
    )
    with feature.writer(segment_items=3) as writer:
        for item_id in ids:
            writer.add(
                item_id,
                ragged_item(item_id, rows_of(item_id)),
                timestamps=np.zeros(5)[: rows_of(item_id)],
            )


def test_two_writer_processes_create_and_fill_one_feature(tmp_path):
    path = tmp_path / "cache" / "toy"
    ids = [f"vid{i:03d}" for i in range(16)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [
        ctx.Process(target=_write_worker, args=(str(path), ids[k::2], barrier)) for k in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    feature = FeatureStore.open(path)["dinov2"]
    assert sorted(feature.ids) == ids and feature.superseded == 0
    assert len({name.split("-")[0] for name in feature.segments}) == 2  # one id per writer
    for item_id in ids:
        expected = ragged_item(item_id, rows_of(item_id)).astype(np.float16)
        np.testing.assert_array_equal(feature[item_id], expected)


def _resuming_worker(path: str, ids: list[str], done) -> None:
    """Write the ids the feature does not hold yet, slowly, counting them in `done`."""
    feature = FeatureStore.open(path, "a").create_feature(
        "dinov2",
        item_shape=(16, 8),
        spec=SPEC,
        extras={"timestamps": ((), "float32")},
        exist_ok=True,
    )
    with feature.writer(segment_items=3) as writer:
        for item_id in feature.missing(ids):
            writer.add(
                item_id,
                ragged_item(item_id, rows_of(item_id)),
                timestamps=np.arange(rows_of(item_id)),
            )
            with done.get_lock():
                done.value += 1
            time.sleep(0.01)


def test_two_writers_one_killed_and_restarted_equal_one_uninterrupted_writer(tmp_path):
    ids = [f"vid{i:03d}" for i in range(40)]
    ctx = multiprocessing.get_context("spawn")

    def run(path, part, done):
        process = ctx.Process(target=_resuming_worker, args=(str(path), part, done))
        process.start()
        return process

    # The counters must outlive the children's start-up, which unpickles their semaphores.
    counts = [ctx.Value("i", 0) for _ in range(4)]
    reference = tmp_path / "one"
    single = run(reference, ids, counts[0])
    single.join(timeout=120)

    path = tmp_path / "two"
    seed = int(time.time())  # a random moment, printed so that a failure can be replayed
    rng = random.Random(seed)
    kill_after, extra_wait = rng.randint(1, 18), rng.uniform(0, 0.01)
    workers = [run(path, ids[k::2], counts[1 + k]) for k in range(2)]
    while counts[2].value < kill_after and workers[1].is_alive():
        time.sleep(0.001)
    time.sleep(extra_wait)
    os.kill(workers[1].pid, signal.SIGKILL)
    workers[1].join()
    assert workers[1].exitcode == -signal.SIGKILL, f"seed {seed}"
    restarted = run(path, ids[1::2], counts[3])
    for process in (workers[0], restarted):
        process.join(timeout=120)
    assert (single.exitcode, workers[0].exitcode, restarted.exitcode) == (0, 0, 0)

    store = FeatureStore.open(path)
    report = verify_store(store, expected_ids=ids)
    assert report.ok, (seed, report.problems)
    assert {p.kind for p in report.problems} <= {"uncommitted"}  # what the kill interrupted
    written, expected = store["dinov2"], FeatureStore.open(reference)["dinov2"]
    assert sorted(written.ids) == sorted(expected.ids) == ids
    assert written.content_digest() == expected.content_digest(), f"seed {seed}"
    for item_id in ids:
        for name, values in expected.item(item_id).items():
            got = written.item(item_id)[name]
            assert got.dtype == values.dtype and got.tobytes() == values.tobytes()


def test_add_copies_a_reused_caller_buffer(make_feature):
    feature = make_feature(dtype="float32")  # no cast, so only an explicit copy protects us
    buffer = np.empty((2, 16, 8), np.float32)
    with feature.writer() as writer:
        for value, item_id in enumerate(["a", "b"]):
            buffer[:] = value
            writer.add(item_id, buffer, timestamps=np.zeros(2))
    assert feature["a"].dtype == np.float32
    assert (feature["a"] == 0).all() and (feature["b"] == 1).all()
