"""CLIP ViT/14 vision tower: the tapped layers, the projection, preprocessing, checkpoints, bytes.

References: transformers' own `CLIPVisionModel(output_hidden_states=True)` and
`CLIPVisionModelWithProjection` loaded from the same folder by `from_pretrained`, and
`CLIPImageProcessor` for the preprocessing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

from vdial.cache import FeatureStore
from vdial.extract.encoders import WeightsError, build_encoder
from vdial.extract.encoders.base import file_digest
from vdial.extract.encoders.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    SIZES,
    build_clip,
    byte_level_tokenizer,
)

TINY = SIZES["tiny"]


def frames(t=3, h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def upstream_folder(directory, seed=0, fmt="safetensors"):
    """A random tiny CLIPModel saved as openai/clip-vit-large-patch14 lays its folder out."""
    p = TINY.projection_dim
    config = CLIPConfig(
        text_config={**TINY.text_config, "projection_dim": p},
        vision_config={**TINY.vision_config, "projection_dim": p},
        projection_dim=p,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(directory)
    else:  # the hub's pytorch_model.bin also holds the position_ids buffers of old transformers
        config.save_pretrained(directory)
        state = dict(model.state_dict())
        state["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
        state["text_model.embeddings.position_ids"] = torch.arange(16).unsqueeze(0)
        torch.save(state, directory / "pytorch_model.bin")
    vocab = byte_level_tokenizer().get_vocab()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return upstream_folder(tmp_path_factory.mktemp("clip") / "clip-tiny", seed=5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_tapped_layers_equal_transformers_hidden_states(tmp_path, fmt):
    directory = upstream_folder(tmp_path / "clip-tiny", seed=1, fmt=fmt)
    enc = build_clip("tiny", weights=directory, layers=(0, 2, 3), projection=True)
    units = enc.preprocess(frames())
    with torch.inference_mode():
        outputs = enc.encode(units)
        ref = CLIPVisionModel.from_pretrained(directory, local_files_only=True).eval()
        hidden = ref(pixel_values=units, output_hidden_states=True).hidden_states
        proj = CLIPVisionModelWithProjection.from_pretrained(directory, local_files_only=True)
        image_embeds = proj.eval()(pixel_values=units).image_embeds
    assert len(hidden) == 4  # embeddings + 3 layers
    tokens = torch.stack([t for t, _ in outputs])
    assert tokens.shape == (3, 3, 17, 32)
    torch.testing.assert_close(tokens, torch.stack([hidden[k] for k in (0, 2, 3)], dim=1))
    torch.testing.assert_close(torch.stack([e for _, e in outputs]), image_embeds)
    assert enc.weights == file_digest(
        directory / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    )


def test_rows_stack_the_layers_and_carry_the_image_embeds(folder):
    enc = build_clip("tiny", weights=folder, projection=True)
    plain = build_clip("tiny", weights=folder, keep_prefix_tokens=False)
    video = frames(4)
    units = enc.preprocess(video)
    with torch.inference_mode():
        rows, extras = enc.to_rows(enc.encode(units), np.arange(4) / 5.0, np.arange(4) * 3)
        no_cls, plain_extras = plain.to_rows(plain.encode(units), np.arange(4), np.arange(4))
    assert rows.shape == (4, 2, 17, 32) == (4, *enc.item_shape)
    assert extras["image_embeds"].shape == (4, 24) and extras["image_embeds"].dtype == np.float32
    np.testing.assert_array_equal(extras["frame_indices"], [0, 3, 6, 9])
    np.testing.assert_allclose(no_cls, rows[:, :, 1:], rtol=1e-5, atol=1e-5)  # CLS is token 0
    assert set(plain_extras) == {"timestamps", "frame_indices"}
    assert plain.item_shape == (2, 16, 32)
    attrs = enc.provenance()
    assert attrs["layers"] == [2, 3] and attrs["projection_dim"] == 24
    assert attrs["grid"] == [4, 4] and attrs["keep_prefix_tokens"] is True
    assert plain.provenance()["projection_dim"] == 0


def test_later_layers_run_only_for_the_projection(folder):
    """Tapping layer 1 of 3 runs layer 1 only; the projection needs the last layer's CLS."""
    ran = []
    for projection in (False, True):
        enc = build_clip("tiny", weights=folder, layers=(1,), projection=projection)
        for k, layer in enumerate(enc.model.vision_model.encoder.layers, start=1):
            layer.register_forward_hook(lambda *_, k=k: ran.append(k))
        with torch.inference_mode():
            enc.encode(enc.preprocess(frames(2)))
        ran.append("|")
    assert ran == [1, "|", 1, 2, 3, "|"]


def test_preprocess_matches_clip_image_processor():
    """Short side to S (bicubic), centre crop, OpenAI mean/std: the checkpoint's processor."""
    from PIL import Image

    enc = build_clip("tiny", random_init=True)
    size = enc.spec.input_size
    processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
    )
    img = frames(1, 90, 120, seed=1)[0]
    # a smooth image: PIL's and torch's bicubic filters differ most on pixel noise
    img = np.asarray(Image.fromarray(img).resize((12, 9)).resize((120, 90), Image.BILINEAR))
    ours = enc.preprocess(img[None])[0]
    theirs = processor(images=Image.fromarray(img), return_tensors="pt")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, size, size)
    # 0.006 here; the same image flipped upside down is 0.07 away
    assert (ours - theirs).abs().mean() < 0.015


def test_layers_option_is_checked():
    for bad in [(), (3, 2), (2, 2), (4,), (-1, 2), (True,)]:
        with pytest.raises(ValueError, match=r"increasing hidden_states indices in 0\.\.3"):
            build_clip("tiny", random_init=True, layers=bad)
    enc = build_encoder("clip:tiny", random_init=True, options={"layers": [0, 1, 2, 3]})
    assert enc.item_shape == (4, 17, 32)


def test_missing_checkpoint_names_the_expected_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_clip()
    message = str(err.value)
    assert str(tmp_path / "clip" / "clip-vit-large-patch14") in message
    assert "model.safetensors" in message and "--random-init" in message


def test_mismatching_checkpoints_are_clear_errors(tmp_path):
    directory = upstream_folder(tmp_path / "clip-tiny")
    config = json.loads((directory / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 4
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"does not fit clip:tiny.*'num_hidden_layers': 4"):
        build_clip("tiny", weights=directory)

    directory = upstream_folder(tmp_path / "holed", fmt="bin")
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    del state["vision_model.encoder.layers.2.mlp.fc1.weight"]
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"layers\.2\.mlp\.fc1\.weight"):
        build_clip("tiny", weights=directory)

    config["model_type"] = "siglip"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="not a CLIPModel config"):
        build_clip("tiny", weights=directory / "pytorch_model.bin")

    (directory / "pytorch_model.bin").unlink()
    config["model_type"] = "clip"
    config["vision_config"]["num_hidden_layers"] = 3
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="has no model.safetensors or pytorch_model.bin"):
        build_clip("tiny", weights=directory)


def test_extraction_writes_the_layers_and_embeds_into_the_store(folder, tmp_path):
    from tests.conftest import write_video
    from vdial.extract.runner import ExtractConfig, run_extraction
    from vdial.manifests import read_folder

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "v0.mp4", frames(9, 48, 64, seed=3))
    config = ExtractConfig(
        encoders=("clip:tiny",),
        weights={"clip": str(folder)},
        options={"clip": {"projection": True}},
        dtype="float32",
    )
    run_extraction(read_folder(videos, name="v"), tmp_path / "store", config, progress=False)
    feature = FeatureStore.open(tmp_path / "store")["clip"]
    item = feature.item("v0")
    assert item["data"].shape == (4, 2, 17, 32) and item["image_embeds"].shape == (4, 24)
    assert feature.spec["layers"] == [2, 3] and feature.spec["weights"].startswith("sha256:")
    enc = build_clip("tiny", weights=folder, projection=True)
    assert item["frame_indices"].tolist() == enc.frame_indices(9, 8.0).tolist()
    # the same frames through transformers' model give the stored image embeds
    import av

    with av.open(str(videos / "v0.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    units = enc.preprocess(decoded[item["frame_indices"]])
    proj = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        expected = proj(pixel_values=units).image_embeds.numpy()
    np.testing.assert_allclose(item["image_embeds"], expected, rtol=1e-4, atol=1e-5)


def test_large_rows_and_bytes_per_video_at_8_frames():
    """The figure the README states: 8 x 4 x 257 x 1024 float16 values per video."""
    with torch.device("meta"):
        enc = build_clip("large", random_init=True, projection=True)
    assert enc.spec.frames == 8 and enc.spec.layers == (21, 22, 23, 24)
    assert enc.item_shape == (4, 257, 1024) and enc.spec.projection_dim == 768
    tokens = 8 * math.prod(enc.item_shape) * np.dtype("float16").itemsize
    extras = 8 * sum(
        math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in enc.row_extras.values()
    )
    assert tokens == 16_842_752 and extras == 8 * (768 * 4 + 8 + 8) == 24_704
