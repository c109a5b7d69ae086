"""Dialog turns, tokenizer, ablations and batching."""

from __future__ import annotations

import numpy as np

from vdial.cache import FeatureReader
from vdial.manifests import Manifest
from vdial.train.data import DialogDataset, _derangement, collate, dialog_turns
from vdial.train.tokenizer import Tokenizer

from .conftest import toy_config


def test_tokenizer_round_trip_and_unknown_words(tmp_path):
    tok = Tokenizer.train(["the circle is red .", "it moves left ."])
    ids = tok.encode("The circle is RED .")
    assert tok.decode(ids) == "the circle is red ."
    assert tok.encode("purple")[0] == tok.unk_id
    assert tok.decode(ids + [tok.eos_id] + ids) == "the circle is red ."  # stops at <eos>
    tok.save(tmp_path / "tok.json")
    assert Tokenizer.load(tmp_path / "tok.json").encode("it moves left .") == tok.encode(
        "it moves left ."
    )


def test_training_turns_and_scored_turns(toy):
    config = toy_config(toy, history_turns=1)
    dialogs = Manifest.read(toy["manifest"]).dialogs
    train = dialog_turns(dialogs, "train", config, scored=False)
    assert len(train) == 48 and all(t.answer for t in train)
    second = [t for t in train if t.turn == 1][0]
    assert second.context == "a clip . <sep> is it moving ? yes it is . <sep> what colour is it ?"
    scored = dialog_turns(dialogs, "test", config, scored=True)
    assert len(scored) == 8 and {t.turn for t in scored} == {1}
    assert all(t.answer is None for t in scored)


def test_derangement_moves_every_video():
    ids = [f"v{i}" for i in range(9)]
    swap = _derangement(ids, seed=1)
    assert sorted(swap) == ids and sorted(swap.values()) == ids
    assert all(k != v for k, v in swap.items())


def test_visual_ablations(toy):
    config = toy_config(toy)
    turns = dialog_turns(Manifest.read(toy["manifest"]).dialogs, "train", config, scored=False)
    tok = Tokenizer.train(t.context for t in turns)
    reader = FeatureReader(toy["store"], "toy")
    real = DialogDataset(turns, reader, tok, config)
    zero = DialogDataset(turns, reader, tok, config, visual="zero")
    shuffled = DialogDataset(turns, reader, tok, config, visual="shuffle")
    vid = turns[0].media_id
    expected = np.asarray(reader[vid], dtype=np.float32).reshape(-1, 8)
    np.testing.assert_array_equal(real.visual_tokens(vid), expected)
    assert not zero.visual_tokens(vid).any()
    other = shuffled.swap[vid]
    assert other != vid
    np.testing.assert_array_equal(shuffled.visual_tokens(vid), real.visual_tokens(other))


def test_frames_are_subsampled_or_padded(toy):
    turns = dialog_turns(
        Manifest.read(toy["manifest"]).dialogs, "train", toy_config(toy), scored=False
    )
    tok = Tokenizer.train(t.context for t in turns)
    reader = FeatureReader(toy["store"], "toy")
    vid = turns[0].media_id
    item = np.asarray(reader[vid], dtype=np.float32)
    two = DialogDataset(turns, reader, tok, toy_config(toy, frames=2)).visual_tokens(vid)
    np.testing.assert_array_equal(two, item[[0, 3]].reshape(-1, 8))
    six = DialogDataset(turns, reader, tok, toy_config(toy, frames=6)).visual_tokens(vid)
    assert six.shape == (24, 8) and not six[16:].any()


def test_collate_masks_everything_but_the_answer():
    samples = [
        {
            "index": 0,
            "visual": np.zeros((2, 3), np.float32),
            "context": [5, 6, 4],
            "answer": [7, 3],
        },
        {"index": 1, "visual": np.ones((2, 3), np.float32), "context": [5, 4], "answer": []},
    ]
    batch = collate(samples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 4, 7, 3], [5, 4, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 7, 3], [-100] * 5]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["context_lengths"].tolist() == [3, 2]
    assert batch["visual"].shape == (2, 2, 3)


def test_feature_cache_reads_each_item_once_within_budget(toy):
    config = toy_config(toy, feature_cache_mb=1)
    turns = dialog_turns(Manifest.read(toy["manifest"]).dialogs, "train", config, scored=False)
    reader = FeatureReader(toy["store"], "toy")
    reads = []

    class Counting:
        def __getitem__(self, item_id):
            reads.append(item_id)
            return reader[item_id]

    dataset = DialogDataset(turns, Counting(), Tokenizer.train(["x"]), config)
    first = [dataset.visual_tokens(t.media_id) for t in turns]
    second = [dataset.visual_tokens(t.media_id) for t in turns]
    assert len(reads) == len({t.media_id for t in turns})  # two turns per video, one read
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    uncached = DialogDataset(turns, Counting(), Tokenizer.train(["x"]), toy_config(toy))
    reads.clear()
    uncached.visual_tokens(turns[0].media_id), uncached.visual_tokens(turns[0].media_id)
    assert len(reads) == 2
