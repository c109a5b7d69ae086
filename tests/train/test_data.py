"""Samples, features of several roles and stores, the tokenizer, and the order of batches."""

from __future__ import annotations

import numpy as np
import pytest

from vdial.cache import FeatureReader, FeatureStore
from vdial.manifests import Manifest
from vdial.train.config import model_config, resolve
from vdial.train.data import StagePlan, StageSampler, stream_indices
from vdial.train.features import FeatureSet, InputSpec, derangement
from vdial.train.models.prefix_lm import PrefixProcessor, context_text
from vdial.train.run import RunData, RunError
from vdial.train.samples import build_samples
from vdial.train.tokenizer import WordTokenizer, load_tokenizer

from .conftest import toy_config, toy_recipe


def test_word_tokenizer_round_trip_and_unknown_words(tmp_path):
    tok = WordTokenizer.train(["the circle is red .", "it moves left ."])
    ids = tok.encode("The circle is RED .")
    assert tok.decode(ids) == "the circle is red ."
    assert tok.encode("purple") == [tok.token_id("<unk>")]
    assert tok.decode(ids + [tok.eos_id] + ids) == "the circle is red ."  # stops at <eos>
    tok.add_special_tokens(["<cap>"])
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.encode("it moves left .") == tok.encode("it moves left .")
    assert again.token_id("<cap>") == tok.token_id("<cap>") == tok.vocab_size - 1


def test_training_turns_prediction_turns_and_captions(toy):
    dialogs = Manifest.read(toy["manifest"]).dialogs
    train = build_samples(dialogs, "train", dataset="toy").samples
    assert len(train) == 48 and all(s.answer for s in train)
    second = next(s for s in train if s.turn == 1)
    assert second.history == (("is it moving ?", "yes it is ."),)
    assert context_text(second, 1, True) == [
        "a clip .",
        "is it moving ? yes it is .",
        "what colour is it ?",
    ]
    assert context_text(second, 0, False) == ["what colour is it ?"]
    asked = build_samples(dialogs, "test", dataset="toy", mode="predict").samples
    assert len(asked) == 8 and {s.turn for s in asked} == {1}
    assert all(s.answer is None for s in asked)
    captions = build_samples(dialogs, "train", dataset="toy", unit="caption").samples
    assert len(captions) == 24 and all(s.answer == "a clip ." and s.turn == -1 for s in captions)


def test_derangement_moves_every_video():
    ids = [f"v{i}" for i in range(9)]
    swap = derangement(ids, seed=1)
    assert sorted(swap) == ids and sorted(swap.values()) == ids
    assert all(k != v for k, v in swap.items())


def _features(toy, spec=None, visual="real", **kw):
    spec = spec or InputSpec(kind="tokens", frames=4)
    ids = sorted(Manifest.read(toy["manifest"]).media["id"].to_pylist())
    return FeatureSet(
        str(toy["store"]), {"visual": (("toy",), spec)}, visual=visual, media_ids=ids, **kw
    )


def _sample(toy, split="train"):
    return build_samples(Manifest.read(toy["manifest"]).dialogs, split, dataset="toy").samples[0]


def test_visual_ablations(toy):
    sample = _sample(toy)
    reader = FeatureReader(toy["store"], "toy")
    real = _features(toy).read(sample)["visual"]
    np.testing.assert_array_equal(real["data"], np.asarray(reader[sample.media_id], np.float32))
    assert real["rows"] == 4
    assert not _features(toy, visual="zero").read(sample)["visual"]["data"].any()
    shuffled = _features(toy, visual="shuffle")
    other = shuffled.swap[sample.media_id]
    assert other != sample.media_id
    np.testing.assert_array_equal(
        shuffled.read(sample)["visual"]["data"], np.asarray(reader[other], np.float32)
    )


def test_frames_are_subsampled_or_padded(toy):
    sample = _sample(toy)
    item = np.asarray(FeatureReader(toy["store"], "toy")[sample.media_id], np.float32)
    two = _features(toy, InputSpec(frames=2)).read(sample)["visual"]
    np.testing.assert_array_equal(two["data"], item[[0, 3]])
    six = _features(toy, InputSpec(frames=6)).read(sample)["visual"]
    assert six["data"].shape == (6, 4, 8) and six["rows"] == 4 and not six["data"][4:].any()
    repeat = _features(toy, InputSpec(frames=6, pad="repeat")).read(sample)["visual"]
    np.testing.assert_array_equal(repeat["data"], item[[0, 1, 2, 3, 3, 3]])


def test_two_features_concatenate_to_the_shortest_and_missing_ids_are_named(toy):
    """The AVSD legacy input: rows of several features side by side, truncated to the
    shortest; an id one feature lacks is one error naming the feature and the ids."""
    ids = Manifest.read(toy["manifest"]).media["id"].to_pylist()
    store = FeatureStore.open(toy["store"], mode="a")
    for name, rows, dim in (("rgb", 5, 3), ("flow", 4, 2)):
        feature = store.create_feature(name, item_shape=(dim,), dtype="float32", spec={"n": name})
        with feature.writer() as writer:
            for k, item_id in enumerate(ids):
                if name == "flow" and k == 30:
                    continue  # v030 (test split) was never extracted for flow
                writer.add(item_id, np.arange(rows * dim, dtype="f4").reshape(rows, dim) + k)
    recipe = toy_recipe(toy)
    recipe["inputs"] = {"visual": ["rgb", "flow"]}
    config = resolve(recipe, "test")
    data = RunData(config, model_config(config))
    part = data.part("toy", "train")
    sample = part.samples.samples[0]
    k = ids.index(sample.media_id)
    value = part.features.read(sample)["visual"]
    rgb = np.arange(15, dtype="f4").reshape(5, 3) + k
    flow = np.arange(8, dtype="f4").reshape(4, 2) + k
    np.testing.assert_array_equal(value["data"][:, 0], np.concatenate([rgb[:4], flow], 1))
    assert data.shapes()["visual"].dim == 5
    with pytest.raises(
        RunError, match=r"1 item\(s\) of split 'test' have no 'flow' features.*v030"
    ):
        data.part("toy", "test", mode="predict")


def test_regions_carry_normalised_boxes_and_classes(tmp_path, toy):
    store = FeatureStore.open(toy["store"], mode="a")
    feature = store.create_feature(
        "regions",
        item_shape=(6,),
        dtype="float32",
        spec={"name": "regions"},
        extras={
            "boxes": ((4,), "float32"),
            "class_id": ((), "int64"),
            "image_w": ((), "float32"),
            "image_h": ((), "float32"),
        },
    )
    boxes = np.array([[0, 0, 50, 100], [25, 50, 100, 200], [10, 10, 20, 20]], "f4")
    with feature.writer() as writer:
        writer.add(
            "v000",
            np.ones((3, 6), "f4"),
            boxes=boxes,
            class_id=np.array([4, 1, 7]),
            image_w=np.full(3, 100.0, "f4"),
            image_h=np.full(3, 200.0, "f4"),
        )
    spec = InputSpec(kind="regions", max_regions=2)
    regions = FeatureSet(str(toy["store"]), {"visual": (("regions",), spec)})
    value = regions.read(_sample(toy))["visual"]
    assert value["data"].shape == (2, 6)
    np.testing.assert_allclose(value["boxes"], [[0, 0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0]])
    assert value["classes"].tolist() == [4, 1]
    zero = FeatureSet(str(toy["store"]), {"visual": (("regions",), spec)}, visual="zero")
    zeroed = zero.read(_sample(toy))["visual"]
    assert not zeroed["data"].any() and not zeroed["boxes"].any()


def test_text_features_are_keyed_by_dialog(toy):
    store = FeatureStore.open(toy["store"], mode="a")
    feature = store.create_feature("caption_emb", item_shape=(3,), dtype="float32", spec={"t": 1})
    with feature.writer() as writer:
        writer.add("v000", np.array([[1.0, 2.0, 3.0]], "f4"))
    spec = InputSpec(kind="text", visual=False)
    text = FeatureSet(str(toy["store"]), {"caption": (("caption_emb",), spec)}, visual="zero")
    np.testing.assert_array_equal(text.read(_sample(toy))["caption"]["data"], [1.0, 2.0, 3.0])


def test_feature_cache_reads_each_item_once_within_budget(toy):
    samples = build_samples(Manifest.read(toy["manifest"]).dialogs, "train", dataset="toy").samples
    for budget, reads_expected in ((1, 24), (0, 48)):
        features = _features(toy, cache_mb=budget)
        reads = []
        reader = features.readers["toy"]

        class Counting:
            def __getitem__(self, item_id, reads=reads, reader=reader):
                reads.append(item_id)
                return reader[item_id]

        features.readers["toy"] = Counting()
        first = [features.read(s)["visual"]["data"] for s in samples]
        assert len(reads) == reads_expected  # two turns per video: one read each, or two
        again = [features.read(s)["visual"]["data"] for s in samples]
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_processor_labels_only_the_answer(toy):
    config = toy_config(toy, history_turns=0, use_caption=False)
    cfg = model_config(config)
    tok = WordTokenizer.train(["what colour is it ?", "it is red ."])
    proc = PrefixProcessor(cfg, tok, encoder_decoder=False)
    sample = next(
        s
        for s in build_samples(
            Manifest.read(toy["manifest"]).dialogs, "train", dataset="toy"
        ).samples
        if s.turn == 1
    )
    features = _features(toy).read(sample)
    item = proc.encode(sample, features, [], np.random.default_rng(0))
    question = tok.encode("what colour is it ?")
    assert item["context"] == [tok.bos_id, *question, tok.sep_id]
    assert item["answer"] == [*tok.encode(sample.answer), tok.eos_id]
    batch = proc.collate([item, {**item, "answer": []}])
    n = len(item["context"])
    assert batch["labels"][0, :n].tolist() == [-100] * n
    assert batch["labels"][0, n:].tolist() == item["answer"]
    assert (batch["labels"][1] == -100).all()
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * len(item["answer"])
    assert batch["visual"].shape == (2, 16, 8) and batch["visual_mask"].all()


def test_streams_read_every_item_once_per_epoch():
    first = stream_indices(10, 3, 0, 10)
    assert sorted(first.tolist()) == list(range(10))
    across = stream_indices(10, 3, 7, 6)  # crosses into the second epoch
    np.testing.assert_array_equal(across[:3], first[7:])
    assert sorted(stream_indices(10, 3, 10, 10).tolist()) == list(range(10))


def test_each_batch_comes_from_one_dataset_by_weight():
    plan = StagePlan([30, 50], [3.0, 1.0], batch_size=8, seed=0, stage=0, steps=400)
    parts = [{i >= 30 for i in plan[step]} for step in range(400)]
    assert all(len(p) == 1 for p in parts)  # never mixed within a batch
    share = sum(p == {False} for p in parts) / 400
    assert 0.68 < share < 0.82  # weight 3 of 4
    assert plan[17] == StagePlan([30, 50], [3.0, 1.0], 8, 0, 0, 400)[17]  # a pure function


@pytest.mark.parametrize(("world", "accumulation"), [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_rank_shares_cover_the_global_batch_with_the_same_seeds(world, accumulation):
    plan = StagePlan([40], [1.0], batch_size=8, seed=1, stage=0, steps=5)
    single = list(StageSampler(plan, 2, 0, 1, 1, seed=1))
    shares = [list(StageSampler(plan, 2, r, world, accumulation, seed=1)) for r in range(world)]
    for step in range(3):
        merged = []
        for micro in range(accumulation):
            for rank in range(world):
                merged += shares[rank][step * accumulation + micro]
        assert merged == single[step]  # same items, same order, same per-sample seeds
