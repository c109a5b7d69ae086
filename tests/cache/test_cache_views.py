"""pool_spatial: values against independent pooling, lineage, extras, resume and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vdial.cache import FeatureStore, pool_spatial

SPEC = {"encoder": "siglip", "weights_digest": "random:1", "grid": [4, 6]}


def _source(store, lengths: dict[str, int], grid=(4, 6), dim=5, seed=0):
    feature = store.create_feature(
        "siglip",
        item_shape=(grid[0] * grid[1], dim),
        spec={**SPEC, "grid": list(grid)},
        extras={"timestamps": ((), "float32")},
        exist_ok=True,
    )
    rng = np.random.default_rng(seed)
    with feature.writer(segment_items=2) as writer:
        for item_id, frames in lengths.items():
            data = rng.standard_normal((frames, grid[0] * grid[1], dim))
            writer.add(item_id, data, timestamps=np.arange(frames) * 0.5)
    return feature


def test_pooling_equals_adaptive_avg_pool2d_over_the_whole_tensor(store):
    lengths = {"a": 3, "b": 1, "c": 4}
    source = _source(store, lengths)
    view = pool_spatial(store, "siglip", 3, progress=False)
    assert view.name == "siglip/pool3x3" and view.item_shape == (9, 5) and len(view) == 3

    # Reference: every frame of every item stacked into one (N, D, H, W) tensor, pooled at once.
    tokens = np.concatenate([source[i] for i in lengths]).astype(np.float32)
    frames = torch.from_numpy(tokens).reshape(-1, 4, 6, 5).permute(0, 3, 1, 2)
    reference = F.adaptive_avg_pool2d(frames, (3, 3)).permute(0, 2, 3, 1).reshape(-1, 9, 5)
    got = np.concatenate([view[i] for i in lengths])
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, reference.numpy().astype(np.float16))
    for item_id, frames_n in lengths.items():
        np.testing.assert_array_equal(view.item(item_id)["timestamps"], np.arange(frames_n) * 0.5)


def test_pooling_divisible_grid_is_a_block_mean(store):
    source = _source(store, {"a": 2}, grid=(4, 4), dim=3)
    view = pool_spatial(store, "siglip", 2, name="siglip-2x2", progress=False)
    x = source["a"].astype(np.float32).reshape(2, 2, 2, 2, 2, 3)  # T, gy, by, gx, bx, D
    block_mean = x.mean(axis=(2, 4)).reshape(2, 4, 3)
    np.testing.assert_allclose(view["a"].astype(np.float32), block_mean, atol=2e-3)
    assert store.features == ["siglip", "siglip-2x2"]


def test_view_records_lineage_and_spec(store):
    source = _source(store, {"a": 2})
    view = pool_spatial(store, "siglip", 2, progress=False)
    reopened = FeatureStore.open(store.path)["siglip/pool2x2"]
    assert reopened.lineage == {
        "parent": "siglip",
        "parent_fingerprint": source.fingerprint(),
        "transform": {"op": "adaptive_avg_pool2d", "grid": [2, 2]},
    }
    assert reopened.spec == {**SPEC, "grid": [2, 2]}
    assert reopened.dtype == source.dtype and reopened.extras == source.extras
    assert view.fingerprint() == reopened.fingerprint()


def test_pooling_resumes_with_only_the_new_ids(store):
    _source(store, {"a": 2, "b": 3})
    first = pool_spatial(store, "siglip", 2, progress=False)
    old_locations = {i: first.location(i) for i in first.ids}
    grown = _source(store, {"c": 1, "d": 2}, seed=1)

    resumed = pool_spatial(store, "siglip", 2, progress=False)
    assert sorted(resumed.ids) == ["a", "b", "c", "d"] and resumed.superseded == 0
    assert {i: resumed.location(i) for i in ["a", "b"]} == old_locations
    assert resumed.location("c")[0] == resumed.location("d")[0] == resumed.segments[-1]
    assert resumed.lineage["parent_fingerprint"] == grown.fingerprint()


def test_pooling_rejects_features_without_a_patch_grid(store):
    store.create_feature("clip", item_shape=(1, 8), spec={"encoder": "clip"})
    with pytest.raises(ValueError, match=r"spec\['grid'\] = None"):
        pool_spatial(store, "clip", 1, progress=False)
    store.create_feature("odd", item_shape=(10, 8), spec={"grid": [4, 4]})
    with pytest.raises(ValueError, match=r"item shape \(10, 8\); a 4x4 patch grid needs \(16, D\)"):
        pool_spatial(store, "odd", 2, progress=False)
    _source(store, {"a": 1})
    with pytest.raises(ValueError, match="grid must be between 1 and 4"):
        pool_spatial(store, "siglip", 5, progress=False)
    with pytest.raises(KeyError, match="no feature 'nope'"):
        pool_spatial(store, "nope", 2, progress=False)


def test_parent_failures_carry_over_to_the_view(store):
    source = _source(store, {"a": 2})
    with source.writer() as writer:
        writer.fail("broken", "decode", "moov atom not found")
    view = pool_spatial(store, "siglip", 2, progress=False)
    assert view.ids == ["a"]
    assert view.failures == {
        "broken": {"stage": "parent siglip: decode", "message": "moov atom not found"}
    }
    again = pool_spatial(store, "siglip", 2, progress=False)  # resuming adds no duplicates
    assert len(again.segments) == len(view.segments)
