"""The extraction runner: batching across videos, resume, failures, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_video
from vdial.cache import FeatureStore
from vdial.extract.encoders import ENCODERS, build_encoder
from vdial.extract.runner import ExtractConfig, run_extraction
from vdial.manifests import read_folder


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "videos"
    root.mkdir()
    for k, length in enumerate([5, 9, 12]):
        frames = rng.integers(0, 256, (length, 48, 64, 3), dtype=np.uint8)
        write_video(root / f"clip{k}.mp4", frames)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    return read_folder(root, name="clips")


def config(**overrides):
    base = dict(encoders=("dinov2:tiny",), random_init=True, frames=3, batch_frames=64)
    return ExtractConfig(**{**base, **overrides})


def test_batching_across_videos_equals_one_video_at_a_time(folder, tmp_path):
    run_extraction(folder, tmp_path / "a", config(batch_frames=64), progress=False)
    run_extraction(folder, tmp_path / "b", config(batch_frames=1), progress=False)
    a = FeatureStore.open(tmp_path / "a")["dinov2"]
    b = FeatureStore.open(tmp_path / "b")["dinov2"]
    assert a.ids == b.ids == ["clip0", "clip1", "clip2"]
    for item_id in a.ids:
        np.testing.assert_allclose(a[item_id], b[item_id], atol=2e-3)  # float16 storage
        assert (
            a.item(item_id)["frame_indices"].tolist() == b.item(item_id)["frame_indices"].tolist()
        )


def test_failures_recorded_and_resume_does_no_work(folder, tmp_path):
    first = run_extraction(folder, tmp_path / "s", config(), progress=False)
    assert first.done == {"dinov2": 3} and set(first.failed) == {"broken"}
    feature = FeatureStore.open(tmp_path / "s")["dinov2"]
    assert feature.failures["broken"]["stage"] == "decode"
    assert feature.item("clip2")["frame_indices"].tolist() == [2, 6, 10]  # 12 frames, 3 segments
    segments = list(feature.segments)
    again = run_extraction(folder, tmp_path / "s", config(), progress=False)
    assert again.done == {"dinov2": 0} and again.skipped == {"dinov2": 3}
    assert again.failed_before == {"dinov2": 1} and not again.failed
    assert FeatureStore.open(tmp_path / "s")["dinov2"].segments == segments  # nothing written
    retried = run_extraction(folder, tmp_path / "s", config(retry_failed=True), progress=False)
    assert set(retried.failed) == {"broken"} and retried.done == {"dinov2": 0}


def test_a_different_spec_is_not_mixed_into_a_feature(folder, tmp_path):
    run_extraction(folder, tmp_path / "s", config(), progress=False)
    with pytest.raises(ValueError, match="spec"):
        run_extraction(folder, tmp_path / "s", config(frames=4), progress=False)


def test_every_encoder_extracts_the_synthetic_dataset_in_one_decode(tmp_path):
    """All registered families at their tiny size, in one run over synthetic AVSD videos."""
    from vdial.manifests import read_avsd
    from vdial.synth import generate

    generate(tmp_path / "synth", size="tiny", seed=0, progress=False)
    manifest = read_avsd(
        {"test": tmp_path / "synth" / "avsd" / "test.json"}, tmp_path / "synth" / "videos", name="t"
    )
    refs = tuple(f"{name}:tiny" for name in ENCODERS)
    summary = run_extraction(
        manifest, tmp_path / "s", ExtractConfig(encoders=refs, random_init=True), progress=False
    )
    ids = sorted(manifest.media_paths())
    assert not summary.failed and summary.done == {name: len(ids) for name in ENCODERS}
    store = FeatureStore.open(tmp_path / "s")
    assert sorted(store.features) == sorted(ENCODERS)
    for name in ENCODERS:
        feature = store[name]
        assert feature.ids == ids and feature.spec["weights"] == "random:0"
        for item_id in ids:
            item = feature.item(item_id)
            rows = np.asarray(item["data"])
            assert rows.shape[1:] == tuple(feature.item_shape) and len(rows) >= 1, name
            assert np.isfinite(rows).all(), name
            assert len(item["timestamps"]) == len(rows), name
            assert np.all(np.diff(item["frame_indices"]) >= 0), name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_extracts_at_the_papers_size(name, tmp_path):
    """The real architectures (random weights) through the runner: rows of the papers' shape."""
    frames = np.random.default_rng(0).integers(0, 256, (20, 96, 128, 3), dtype=np.uint8)
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "clip0.mp4", frames)
    folder = read_folder(tmp_path / "v", name="one")
    ref = f"{name}:{ENCODERS.get(name).default_size}"
    with torch_meta():
        spec = build_encoder(ref, random_init=True).spec
    cfg = ExtractConfig(encoders=(ref,), random_init=True, frames=max(spec.clip_len, 1))
    summary = run_extraction(folder, tmp_path / "s", cfg, progress=False)
    assert summary.done == {name: 1} and not summary.failed
    feature = FeatureStore.open(tmp_path / "s")[name]
    rows = np.asarray(feature["clip0"])
    assert rows.shape[1:] == tuple(feature.item_shape) and np.isfinite(rows).all()
    assert feature.item_shape[-1] == spec.dim and feature.spec["size"] == spec.size


def torch_meta():
    import torch

    return torch.device("meta")
