"""Extraction through a real dask.distributed LocalCluster of two worker processes."""

from __future__ import annotations

import pytest

from vdial.cache import FeatureStore
from vdial.extract.runner import ExtractConfig, run_extraction
from vdial.manifests import read_folder

ENCODERS = ("dinov2:tiny", "siglip:tiny")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from vdial.synth import generate

    root = tmp_path_factory.mktemp("cluster")
    generate(root / "synth", size="tiny", seed=1, videos=10, progress=False)
    videos = root / "synth" / "videos"
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 and nothing else")
    return read_folder(videos, name="clips")


@pytest.fixture(scope="module")
def local(manifest, tmp_path_factory):
    """The same extraction in this process: what every cluster run must reproduce."""
    path = tmp_path_factory.mktemp("local") / "store"
    config = ExtractConfig(encoders=ENCODERS, random_init=True, frames=3, segment_items=3)
    run_extraction(manifest, path, config, progress=False)
    return FeatureStore.open(path)


def test_a_two_worker_cluster_writes_the_same_store_as_one_process(manifest, local, tmp_path):
    from dask.distributed import Client, LocalCluster

    clips = len(manifest.media_paths()) - 1  # all but the broken file
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = ExtractConfig(
            encoders=ENCODERS,
            random_init=True,
            frames=3,
            segment_items=3,
            scheduler=cluster.scheduler_address,
        )
        summary = run_extraction(manifest, tmp_path / "cluster", remote, progress=False)
        # Resuming against the cluster does nothing more.
        again = run_extraction(manifest, tmp_path / "cluster", remote, progress=False)
        with Client(cluster) as client:
            # Both worker processes took tasks, and each wrote its own segments.
            pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2
    assert summary.done == {"dinov2": clips, "siglip": clips}
    assert set(summary.failed) == {"broken"}
    clustered = FeatureStore.open(tmp_path / "cluster")
    for name in ("dinov2", "siglip"):
        feature = clustered[name]
        assert len(feature.segments) == -(-(clips + 1) // 3) and not feature.uncommitted_segments
        writers = {s.writer["pid"] for s in feature.segment_indexes}
        assert writers <= pids and len(writers) == 2
        assert feature.failures["broken"]["stage"] == "decode"
        assert feature.content_digest() == local[name].content_digest()
    assert again.done == {"dinov2": 0, "siglip": 0}
    assert again.skipped == {"dinov2": clips, "siglip": clips}


def test_one_worker_per_device_on_this_machine(manifest, local, tmp_path):
    """`--devices a,b`: our own LocalCluster, one single-threaded worker process per device."""
    config = ExtractConfig(
        encoders=ENCODERS, random_init=True, frames=3, segment_items=3, devices=("cpu", "cpu")
    )
    summary = run_extraction(manifest, tmp_path / "s", config, progress=False)
    assert summary.devices == ("cpu", "cpu")
    store = FeatureStore.open(tmp_path / "s")
    for name in ("dinov2", "siglip"):
        assert len({s.writer["pid"] for s in store[name].segment_indexes}) == 2
        assert store[name].content_digest() == local[name].content_digest()
