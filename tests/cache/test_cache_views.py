"""Views: every op against PyTorch on the whole stacked tensor, extras, lineage, resume, failures,
bad inputs, and values independent of block size, worker count and scheduler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vdial.cache import VIEW_OPS, FeatureStore, make_view, view_op, views
from vdial.cache.view_ops import Parent

H, W, D, PREFIX = 3, 5, 4, 2  # an odd patch grid, so concat2x2 pads and pooling windows overlap
LENGTHS = {"a": 3, "b": 1, "c": 4, "d": 5, "e": 4, "f": 2}  # ragged T; two items share T = 4
SPEC = {"encoder": "toy", "weights": "random:0", "frames": 5, "grid": [H, W], "dim": D}
EXTRAS = {"timestamps": ((), "float64"), "frame_indices": ((), "int64")}


def _fill(feature, lengths, seed):
    rng = np.random.default_rng(seed)
    with feature.writer(segment_items=2) as writer:
        for item_id, frames in lengths.items():
            writer.add(
                item_id,
                rng.standard_normal((frames, *feature.item_shape)),
                timestamps=np.arange(frames) * 0.5 + 0.25,
                frame_indices=np.arange(frames) * 3,
            )
    return feature


def _source(store, lengths=LENGTHS, *, prefix=False, seed=0):
    """Feature "enc" of (T, H*W, D) items, or "cls" with PREFIX tokens kept before the grid."""
    name = "cls" if prefix else "enc"
    spec = {**SPEC, "keep_prefix_tokens": prefix, "prefix_tokens": PREFIX}
    feature = store.create_feature(
        name,
        item_shape=((PREFIX if prefix else 0) + H * W, D),
        spec=spec,
        extras=EXTRAS,
        exist_ok=True,
    )
    return _fill(feature, lengths, seed)


# -- independent references: one torch call over all frames, or all items of one length --------


def _stack(source, ids=LENGTHS):
    return torch.from_numpy(np.concatenate([source[i] for i in ids]).astype(np.float32))


def _split(stacked, ids=LENGTHS):
    counts = [LENGTHS[i] for i in ids]
    return dict(zip(ids, np.split(stacked.numpy(), np.cumsum(counts)[:-1]), strict=True))


def _by_length(source, fn):
    out = {}
    for t in sorted(set(LENGTHS.values())):
        ids = [i for i, n in LENGTHS.items() if n == t]
        batch = torch.stack([torch.from_numpy(source[i].astype(np.float32)) for i in ids])
        out.update(zip(ids, fn(batch, t).numpy(), strict=True))
    return out


def ref_pool2d(source, grid):
    frames = _stack(source).reshape(-1, H, W, D).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(frames, (grid, grid)).permute(0, 2, 3, 1)
    return _split(pooled.reshape(-1, grid * grid, D))


def ref_pool3d(source, grid):
    def pool(batch, t):  # (B, T, N, D) -> (B, D, T, H, W), MERV's AdaptiveAvgPool3d
        volume = batch.reshape(len(batch), t, H, W, D).permute(0, 4, 1, 2, 3)
        pooled = F.adaptive_avg_pool3d(volume, (max(1, t // 2), grid, grid))
        return pooled.permute(0, 2, 3, 4, 1).reshape(len(batch), -1, grid * grid, D)

    return _by_length(source, pool)


def ref_concat2x2(source):
    frames = _stack(source).reshape(-1, H, W, D).permute(0, 3, 1, 2)
    # pixel_unshuffle puts channel c of window position (dy, dx) at c * 4 + dy * 2 + dx.
    packed = F.pixel_unshuffle(F.pad(frames, (0, W % 2, 0, H % 2)), 2)
    rows, cols = packed.shape[-2:]
    tokens = packed.reshape(-1, D, 4, rows, cols).permute(0, 3, 4, 2, 1)
    return _split(tokens.reshape(-1, rows * cols, 4 * D))


def ref_subsample(source, keep):
    return {i: source[i].astype(np.float32)[keep[n]] for i, n in LENGTHS.items()}


EVERY_2 = {1: [0], 2: [0], 3: [0, 2], 4: [0, 2], 5: [0, 2, 4]}
FRAMES_3 = {1: [0], 2: [0, 1], 3: [0, 1, 2], 4: [0, 2, 3], 5: [0, 2, 4]}  # round(1.5) = 2

CASES = {
    # op, params: (parent, reference, view suffix, item shape, spec changes, extras, exact)
    ("pool2d", 2): (
        "enc",
        lambda s: ref_pool2d(s, 2),
        "pool2x2",
        (4, D),
        {"grid": [2, 2]},
        "keep",
        True,
    ),
    ("pool3d", 3): (
        "enc",
        lambda s: ref_pool3d(s, 3),
        "pool3d-3x3",
        (9, D),
        {"grid": [3, 3], "frames": 2},
        "drop",
        False,
    ),
    ("temporal-mean", None): (
        "enc",
        lambda s: _by_length(s, lambda b, t: b.mean(dim=1, keepdim=True)),
        "temporal-mean",
        (H * W, D),
        {"frames": 1},
        "drop",
        False,
    ),
    ("spatial-mean", None): (
        "enc",
        lambda s: _split(_stack(s).mean(dim=1)),
        "spatial-mean",
        (D,),
        {"grid": None},
        "keep",
        False,
    ),
    ("st-pool", None): (
        "enc",
        lambda s: _by_length(s, lambda b, t: torch.cat([b.mean(dim=2), b.mean(dim=1)], dim=1)),
        "st-pool",
        (D,),
        {"grid": None},
        "drop",
        False,
    ),
    ("concat2x2", None): (
        "enc",
        ref_concat2x2,
        "concat2x2",
        (6, 4 * D),
        {"grid": [2, 3], "dim": 4 * D},
        "keep",
        True,
    ),
    ("drop-prefix", None): (
        "cls",
        lambda s: _split(_stack(s, LENGTHS)[:, PREFIX:]),
        "drop-prefix",
        (H * W, D),
        {"keep_prefix_tokens": False},
        "keep",
        True,
    ),
    ("subsample", "every"): (
        "enc",
        lambda s: ref_subsample(s, EVERY_2),
        "subsample-every2",
        (H * W, D),
        {"frames": 3},
        "select",
        True,
    ),
    ("subsample", "frames"): (
        "enc",
        lambda s: ref_subsample(s, FRAMES_3),
        "subsample-frames3",
        (H * W, D),
        {"frames": 3},
        "select",
        True,
    ),
}


def _op(key):
    name, param = key
    if name.startswith("pool"):
        return view_op(name, grid=param)
    if name == "subsample":
        return view_op(name, **({"every": 2} if param == "every" else {"frames": 3}))
    return view_op(name)


def test_every_registered_op_is_tested():
    assert {name for name, _ in CASES} == set(VIEW_OPS.names())


@pytest.mark.parametrize("key", list(CASES), ids=[f"{n}-{p}" for n, p in CASES])
def test_op_equals_torch_on_the_whole_tensor(store, key):
    parent, reference, suffix, item_shape, spec_changes, extras, exact = CASES[key]
    source = _source(store, prefix=parent == "cls")
    view = make_view(store, parent, _op(key), block_items=4, workers=2, progress=False)

    assert view.name == f"{parent}/{suffix}" and sorted(view.ids) == sorted(LENGTHS)
    assert view.item_shape == item_shape and view.dtype == np.float16
    assert view.spec == {**source.spec, **spec_changes}
    for item_id, expected in reference(source).items():
        got = view[item_id]
        if exact:  # per-frame ops: bit-identical to the batched torch call, after the f16 cast
            np.testing.assert_array_equal(got, expected.astype(np.float16))
        else:  # reductions: equal up to float16 rounding (summation order may differ)
            np.testing.assert_allclose(got.astype(np.float32), expected, rtol=1e-3, atol=1e-3)

    lineage = view.lineage
    assert lineage["parent"] == parent and lineage["parent_fingerprint"] == source.fingerprint()
    if extras == "drop":  # rows are no longer frames: per-frame extras would lie
        assert view.extras == {}
        assert lineage["dropped_extras"]["names"] == ["frame_indices", "timestamps"]
        assert lineage["dropped_extras"]["why"].startswith("rows are ")
        assert view.item("d").keys() == {"data"}
        return
    assert view.extras == source.extras and "dropped_extras" not in lineage
    selected = {"every": EVERY_2, "frames": FRAMES_3}.get(key[1]) if extras == "select" else None
    for item_id, frames in LENGTHS.items():
        item = view.item(item_id)
        rows = selected[frames] if selected else list(range(frames))
        np.testing.assert_array_equal(item["timestamps"], np.array(rows) * 0.5 + 0.25)
        np.testing.assert_array_equal(item["frame_indices"], np.array(rows) * 3)
        assert len(item["data"]) == len(rows)


def test_divisible_pool2d_is_a_block_mean(store):
    feature = store.create_feature("sq", item_shape=(16, 3), spec={"grid": [4, 4]})
    with feature.writer() as writer:
        writer.add("a", np.random.default_rng(1).standard_normal((2, 16, 3)))
    view = make_view(store, "sq", view_op("pool2d", grid=2), name="sq-2x2", progress=False)
    blocks = feature["a"].astype(np.float32).reshape(2, 2, 2, 2, 2, 3)  # T, gy, by, gx, bx, D
    expected = blocks.mean(axis=(2, 4)).reshape(2, 4, 3)
    np.testing.assert_allclose(view["a"].astype(np.float32), expected, atol=2e-3)
    assert store.features == ["sq", "sq-2x2"]


def test_pool2d_keeps_the_lineage_of_earlier_views(store):
    source = _source(store)
    view = make_view(store, "enc", view_op("pool2d", grid=3), progress=False)
    # Same transform record as before there were several ops, so those views still resume.
    assert FeatureStore.open(store.path)["enc/pool3x3"].lineage == {
        "parent": "enc",
        "parent_fingerprint": source.fingerprint(),
        "transform": {"op": "adaptive_avg_pool2d", "grid": [3, 3]},
    }
    assert view_op("pool2d") == view_op("pool2d", grid=8)  # MERV's 64 tokens by default
    assert view_op("subsample", frames=4).transform() == {"op": "subsample", "frames": 4}
    assert view_op("pool3d", grid=2).transform() == {"op": "pool3d", "grid": 2}
    assert view.fingerprint() == FeatureStore.open(store.path)["enc/pool3x3"].fingerprint()


def test_views_of_views_chain_their_lineage(store):
    source = _source(store, prefix=True)
    patches = make_view(store, "cls", view_op("drop-prefix"), progress=False)
    pooled = make_view(store, patches.name, view_op("pool2d", grid=1), progress=False)
    assert pooled.name == "cls/drop-prefix/pool1x1"
    assert pooled.lineage["parent"] == "cls/drop-prefix"
    assert store[pooled.lineage["parent"]].lineage["parent"] == "cls"
    tokens = source["d"].astype(np.float32)[:, PREFIX:]
    expected = patches["d"].astype(np.float32).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(pooled["d"].astype(np.float32), expected, atol=1e-3)
    np.testing.assert_array_equal(patches["d"], tokens.astype(np.float16))
    assert pooled.spec["keep_prefix_tokens"] is False and pooled.spec["grid"] == [1, 1]


def test_resume_computes_only_the_missing_ids(store):
    _source(store, {"a": 2, "b": 3})
    first = make_view(store, "enc", view_op("spatial-mean"), block_items=1, progress=False)
    old = {i: first.location(i) for i in first.ids}
    assert make_view(store, "enc", view_op("spatial-mean"), progress=False).segments == (
        first.segments
    )  # nothing missing: nothing written

    grown = _fill(store["enc"], {"c": 1, "d": 2, "e": 4}, seed=1)
    resumed = make_view(store, "enc", view_op("spatial-mean"), block_items=2, progress=False)
    assert sorted(resumed.ids) == ["a", "b", "c", "d", "e"] and resumed.superseded == 0
    assert {i: resumed.location(i) for i in old} == old
    assert len(resumed.segments) == len(first.segments) + 2  # new ids only, in blocks of 2
    assert resumed.lineage["parent_fingerprint"] == grown.fingerprint()
    np.testing.assert_array_equal(
        resumed["e"], grown["e"].astype(np.float32).mean(axis=1).astype(np.float16)
    )


def test_parent_failures_carry_over_once(store):
    source = _source(store, {"a": 2})
    with source.writer() as writer:
        writer.fail("broken", "decode", "moov atom not found")
    view = make_view(store, "enc", view_op("temporal-mean"), progress=False)
    assert view.ids == ["a"]
    assert view.failures == {
        "broken": {"stage": "parent enc: decode", "message": "moov atom not found"}
    }
    again = make_view(store, "enc", view_op("temporal-mean"), progress=False)
    assert again.segments == view.segments  # resuming records nothing twice


def test_values_do_not_depend_on_blocks_workers_or_scheduler(store):
    _source(store)
    runs = {
        "one": {"block_items": 1, "scheduler": "sync"},
        "three": {"block_items": 3, "workers": 2},
        "all": {"block_items": 64, "workers": 1},
    }
    made = {
        key: make_view(store, "enc", view_op("pool3d", grid=2), name=key, progress=False, **kw)
        for key, kw in runs.items()
    }
    # One segment per block: memory is bounded by block size x workers, not by the item count.
    assert [len(v.segments) for v in made.values()] == [6, 2, 1]
    assert not views._open  # each thread's store handles live for one run only
    for item_id in LENGTHS:
        one = made["one"][item_id]
        for other in ("three", "all"):
            assert made[other][item_id].tobytes() == one.tobytes()


def test_runs_on_a_dask_distributed_client(store):
    distributed = pytest.importorskip("distributed")
    source = _source(store, {"a": 3, "b": 2, "c": 1})
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        view = make_view(
            store, "enc", view_op("pool2d", grid=1), scheduler=client, block_items=2, progress=False
        )
    assert sorted(view.ids) == ["a", "b", "c"] and len(view.segments) == 2
    assert not views._open  # the workers' store handles are released with the run
    np.testing.assert_allclose(
        view["a"].astype(np.float32),
        source["a"].astype(np.float32).mean(axis=1, keepdims=True),
        atol=1e-3,
    )


def test_progress_bar_counts_items(store, capsys):
    _source(store)
    make_view(store, "enc", view_op("spatial-mean"), block_items=2, progress=True)
    out = capsys.readouterr().out
    assert "enc -> enc/spatial-mean" in out and "6/6" in out and "items/s" in out


def _plain(store, name, item_shape, **spec):
    return store.create_feature(name, item_shape=item_shape, spec=spec)


@pytest.mark.parametrize(
    ("make_parent", "op", "message"),
    [
        (lambda s: _plain(s, "clip", (1, 8)), "pool2d", r"spec\['grid'\] = None; pool2d needs"),
        (
            lambda s: _plain(s, "odd", (10, 8), grid=[4, 4]),
            "pool3d",
            r"item shape \(10, 8\); a 4x4 patch grid needs \(16, D\)",
        ),
        (
            lambda s: _source(s, {"a": 1}, prefix=True),
            "concat2x2",
            "keeps 2 prefix \\(CLS/register\\) tokens .* make a drop-prefix view of it first",
        ),
        (
            lambda s: _source(s, {"a": 1}, prefix=True),
            "st-pool",
            "st-pool needs patch tokens only",
        ),
        (lambda s: _source(s, {"a": 1}), "drop-prefix", "'enc' has no prefix tokens to drop"),
        (
            lambda s: _plain(s, "vec", (8,), grid=[2, 4]),
            "temporal-mean",
            r"temporal-mean needs \(T, N, D\) token items; feature 'vec' has \(T, 8\)",
        ),
        (lambda s: _plain(s, "vec", (8,)), "spatial-mean", r"needs \(T, N, D\)"),
    ],
)
def test_ops_refuse_parents_they_do_not_apply_to(store, make_parent, op, message):
    make_parent(store)
    parent = store.features[0]
    with pytest.raises(ValueError, match=message):
        make_view(store, parent, view_op(op), progress=False)
    assert store.features == [parent]  # nothing created


def test_bad_parameters_are_clear_errors(store):
    _source(store, {"a": 1})
    with pytest.raises(ValueError, match="grid must be between 1 and 3 for a 3x5 patch grid"):
        make_view(store, "enc", view_op("pool2d", grid=4), progress=False)
    with pytest.raises(ValueError, match="grid must be a positive integer, got 0"):
        view_op("pool3d", grid=0)
    with pytest.raises(ValueError, match="exactly one of every"):
        view_op("subsample")
    with pytest.raises(ValueError, match="exactly one of every"):
        view_op("subsample", every=2, frames=3)
    with pytest.raises(ValueError, match="frames must be a positive integer, got 0"):
        view_op("subsample", frames=0)
    with pytest.raises(ValueError, match=r"'temporal-mean' does not take grid \(it takes: no"):
        view_op("temporal-mean", grid=2)
    with pytest.raises(KeyError, match="unknown view op 'pool'; known: concat2x2, drop-prefix"):
        view_op("pool")
    with pytest.raises(KeyError, match="no feature 'nope'"):
        make_view(store, "nope", view_op("pool2d"), progress=False)
    with pytest.raises(ValueError, match="block_items must be >= 1"):
        make_view(store, "enc", view_op("pool2d", grid=1), block_items=0, progress=False)
    make_view(store, "enc", view_op("pool2d", grid=1), name="p", progress=False)
    with pytest.raises(ValueError, match="exists with a different definition"):
        make_view(store, "enc", view_op("pool2d", grid=2), name="p", progress=False)


def test_subsample_frame_counts_follow_the_spec():
    op = view_op("subsample", every=3)
    assert op.rows(7).tolist() == [0, 3, 6] and op.rows(1).tolist() == [0]
    assert view_op("subsample", frames=4).rows(10).tolist() == [0, 3, 6, 9]  # both ends kept
    assert view_op("subsample", frames=4).rows(3).tolist() == [0, 1, 2]  # never repeats a frame
    parent = Parent(name="x", spec={"frames": 5}, item_shape=(4, 2))
    assert op.output(parent) == ((4, 2), {"frames": 2})  # ceil(5 / 3) frames kept
    assert view_op("subsample", frames=8).output(parent) == ((4, 2), {"frames": 5})
