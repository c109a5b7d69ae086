"""CLIP text features: values against transformers, keys and failures, resume, the CLI.

The reference is `CLIPTextModelWithProjection.from_pretrained` on the same openai-layout folder,
and by hand: the last hidden state at the end-of-text token times `text_projection`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer
from typer.testing import CliRunner

from tests.extract.encoders.test_clip import upstream_folder
from vdial.cache import FeatureStore
from vdial.cli import app
from vdial.extract.encoders import WeightsError
from vdial.extract.encoders.base import file_digest
from vdial.extract.text import TextConfig, build_text_tower, run_text_extraction, texts_by_key
from vdial.manifests import DIALOG_SCHEMA, MEDIA_SCHEMA, Manifest

CAPTIONS = {
    "d0": "A man opens the fridge and takes out a bottle.",
    "d1": "a woman sits.",
    "d2": "Someone walks to the door, then back to the window, then sits down slowly",
    "d3": None,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return upstream_folder(tmp_path_factory.mktemp("clip") / "clip-tiny", seed=3)


def manifest(captions=CAPTIONS, media=None, turns=2):
    """A manifest whose dialog k (on video media[k]) repeats its caption on every turn."""
    media = media or [f"v{k}" for k in range(len(captions))]
    rows = [
        {
            "dialog_id": dialog_id,
            "media_id": media_id,
            "split": "test",
            "turn": turn,
            "question": f"q{turn}",
            "answers": [],
            "caption": caption,
            "summary": None if caption is None else caption.upper(),
            "source": f"toy.json#dialogs[{k}].dialog[{turn}]",
        }
        for k, ((dialog_id, caption), media_id) in enumerate(
            zip(captions.items(), media, strict=True)
        )
        for turn in range(turns)
    ]
    media_rows = [{"id": m, "path": None, "kind": "video", "split": "test"} for m in set(media)]
    return Manifest(
        name="toy",
        media=pa.Table.from_pylist(media_rows, schema=MEDIA_SCHEMA),
        dialogs=pa.Table.from_pylist(rows, schema=DIALOG_SCHEMA),
    )


def test_embeddings_equal_clip_text_model_with_projection(folder):
    tower = build_text_tower("clip:tiny", weights=folder)
    texts = [c for c in CAPTIONS.values() if c]
    ours = tower.embed(texts)
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    ref = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=16)
        ids = torch.tensor(tokens["input_ids"])
        out = ref(input_ids=ids, attention_mask=torch.tensor(tokens["attention_mask"]))
        # by hand: the first end-of-text token's final state, projected
        eot = (ids == tokenizer.eos_token_id).int().argmax(-1)
        by_hand = ref.text_projection(out.last_hidden_state[torch.arange(len(texts)), eot])
    assert ours.shape == (3, 24)
    torch.testing.assert_close(ours, out.text_embeds)
    torch.testing.assert_close(ours, by_hand)
    assert ids[2, -1] == tokenizer.eos_token_id  # the long caption was truncated to 16 tokens
    one = torch.cat([tower.embed([t]) for t in texts])  # padding per batch changes nothing
    torch.testing.assert_close(one, ours)
    assert tower.weights == file_digest(folder / "model.safetensors")


def test_store_items_keyed_by_dialog_with_failures_and_resume(folder, tmp_path):
    config = TextConfig(encoder="clip:tiny", weights=str(folder), batch_size=2, dtype="float32")
    summary = run_text_extraction(manifest(), tmp_path / "s", config)
    assert summary.feature == "clip-text-caption" and summary.done == 3
    assert list(summary.failed) == ["d3"] and "has no caption" in summary.failed["d3"]
    feature = FeatureStore.open(tmp_path / "s")["clip-text-caption"]
    assert feature.ids == ["d0", "d1", "d2"] and feature.item_shape == (24,)
    assert feature.failures["d3"]["stage"] == "text"
    expected = build_text_tower("clip:tiny", weights=folder).embed(
        [CAPTIONS["d0"], CAPTIONS["d1"], CAPTIONS["d2"]]
    )
    for k, item_id in enumerate(feature.ids):
        assert feature[item_id].shape == (1, 24)
        np.testing.assert_allclose(feature[item_id][0], expected[k].numpy(), rtol=1e-5, atol=1e-6)
    spec = feature.spec
    assert spec["column"] == "caption" and spec["key"] == "dialog_id" and spec["dim"] == 24
    assert spec["weights"] == file_digest(folder / "model.safetensors")

    again = run_text_extraction(manifest(), tmp_path / "s", config)
    assert (again.done, again.skipped, again.failed_before, again.failed) == (0, 3, 1, {})


def test_media_keys_and_conflicting_texts():
    toy = manifest(
        {"d0": "a cat", "d1": "a cat", "d2": "a dog", "d3": "a bird"}, ["a", "a", "b", "b"]
    )
    found, failed = texts_by_key(toy, "caption", "media_id")
    assert found == {"a": "a cat"}
    assert "'b' has 2 different captions" in failed["b"] and "'a bird'" in failed["b"]
    found, _ = texts_by_key(toy, "summary", "dialog_id")
    assert found["d2"] == "A DOG"
    with pytest.raises(ValueError, match="text column must be one of"):
        texts_by_key(toy, "question", "dialog_id")
    with pytest.raises(ValueError, match="no split 'train'"):
        texts_by_key(toy, "caption", "dialog_id", split="train")


def test_random_init_uses_a_byte_level_tokenizer_and_is_seeded():
    a = build_text_tower("clip:tiny", random_init=True, seed=1)
    b = build_text_tower("clip:tiny", random_init=True, seed=1)
    c = build_text_tower("clip:tiny", random_init=True, seed=2)
    texts = ["a red ball", "é"]
    assert a.tokenizer("Ab c")["input_ids"] == [512, 97, 256 + 98, 256 + 99, 513]  # lower-cased
    assert a.tokenizer("é")["input_ids"] == [512, 0xC3, 256 + 0xA9, 513]  # é in UTF-8
    torch.testing.assert_close(a.embed(texts), b.embed(texts))
    assert not torch.allclose(a.embed(texts), c.embed(texts))
    assert a.weights == "random:1" and a.spec["tokenizer"].startswith("byte-level")


def test_bad_folders_and_towers_are_clear_errors(folder, tmp_path):
    with pytest.raises(KeyError, match="'dinov2' has no text tower"):
        build_text_tower("dinov2:tiny", random_init=True)
    broken = upstream_folder(tmp_path / "no-tokenizer")
    (broken / "vocab.json").unlink()
    (broken / "merges.txt").unlink()
    with pytest.raises(WeightsError, match="has no CLIP tokenizer: expected tokenizer.json"):
        build_text_tower("clip:tiny", weights=broken)
    (broken / "merges.txt").write_text("#version: 0.2\n")
    (broken / "vocab.json").write_text("{not json")
    with pytest.raises(WeightsError, match="unreadable CLIP tokenizer files"):
        build_text_tower("clip:tiny", weights=broken)
    with pytest.raises(WeightsError, match="checkpoint not found"):
        build_text_tower("clip:tiny", weights=tmp_path / "nowhere")


def test_cli_writes_the_feature(folder, tmp_path):
    toy = manifest()
    toy.write(tmp_path / "m")
    args = ["extract-text", "--manifest", tmp_path / "m", "--store", tmp_path / "s"]
    args += ["-e", "clip:tiny", "--weights", folder, "--column", "summary"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "clip-text-summary" in result.output and "3 written" in result.output
    assert "failed d3: dialog_id 'd3' has no summary" in result.output
    feature = FeatureStore.open(tmp_path / "s")["clip-text-summary"]
    assert feature.ids == ["d0", "d1", "d2"] and feature.dtype == np.float16
    bad = CliRunner().invoke(app, [str(a) for a in [*args[:5], "--random-init", "--key", "x"]])
    assert bad.exit_code == 1 and "text key must be one of" in bad.output
