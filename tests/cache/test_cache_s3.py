"""A feature store on S3-compatible object storage (a local moto server), through fsspec."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest

from tests.cache.cache_testlib import SPEC, ragged_item
from vdial.cache import FeatureReader, FeatureStore, make_view, view_op


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on localhost with one bucket; yields the fsspec storage options."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials).create_bucket(
        Bucket="features"
    )
    yield {
        "endpoint_url": endpoint,
        "key": "test",
        "secret": "test",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    server.stop()


def test_a_store_on_s3_round_trips_items_extras_and_metadata(s3):
    url = "s3://features/cache/toy"
    store = FeatureStore.open(url, "a", storage_options=s3)
    assert store.path == url
    feature = store.create_feature(
        "dinov2", item_shape=(16, 8), spec=SPEC, extras={"timestamps": ((), "float32")}
    )
    lengths = {"a": 3, "b": 1, "c": 5}
    with feature.writer(segment_items=2) as writer:
        for item_id, rows in lengths.items():
            writer.add(item_id, ragged_item(item_id, rows), timestamps=np.arange(rows) / 2)
        writer.fail("d", "decode", "moov atom not found")

    reopened = FeatureStore.open(url, "r", storage_options=s3)
    assert reopened.features == ["dinov2"]
    remote = reopened["dinov2"]
    assert sorted(remote.ids) == ["a", "b", "c"] and remote.failures["d"]["stage"] == "decode"
    for item_id, rows in lengths.items():
        np.testing.assert_array_equal(
            remote[item_id], ragged_item(item_id, rows).astype(np.float16)
        )
        np.testing.assert_array_equal(
            remote.item(item_id)["timestamps"], (np.arange(rows) / 2).astype(np.float32)
        )
    (row,) = reopened.info()
    assert row["items"] == 3 and row["bytes"] > 9 * 16 * 8 * 2

    # A DataLoader worker gets the URL and options and opens its own handle.
    reader = pickle.loads(pickle.dumps(FeatureReader(url, "dinov2", storage_options=s3)))
    assert reader.path == url and not reader.is_open
    np.testing.assert_array_equal(reader["c"], ragged_item("c", 5).astype(np.float16))


def test_s3_locations_are_checked_like_local_ones(s3):
    import fsspec

    fs = fsspec.filesystem("s3", **s3)
    fs.pipe("features/foreign/notes.txt", b"not a store")
    with pytest.raises(FileExistsError, match="s3://features/foreign exists and is not a vdial"):
        FeatureStore.open("s3://features/foreign", "a", storage_options=s3)
    with pytest.raises(FileNotFoundError, match="no vdial feature store at s3://features/none"):
        FeatureStore.open("s3://features/none", "r", storage_options=s3)
    with pytest.raises(ValueError, match="storage_options apply to URLs"):
        FeatureStore.open("local/path", "r", storage_options=s3)


def test_a_pooled_view_of_an_s3_store_is_computed_by_workers_that_reopen_it(s3):
    url = "s3://features/cache/pooled"
    store = FeatureStore.open(url, "a", storage_options=s3)
    feature = store.create_feature("siglip", item_shape=(16, 8), spec={"grid": [4, 4]})
    with feature.writer() as writer:
        for item_id in ("a", "b"):
            writer.add(item_id, ragged_item(item_id, 3))
    view = make_view(store, "siglip", view_op("spatial-mean"), workers=2, progress=False)
    reopened = FeatureStore.open(url, "r", storage_options=s3)[view.name]
    for item_id in ("a", "b"):
        expected = ragged_item(item_id, 3).astype(np.float16).astype(np.float32).mean(axis=1)
        np.testing.assert_allclose(reopened[item_id].astype(np.float32), expected, atol=1e-3)
