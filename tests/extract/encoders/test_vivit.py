"""ViViT: preprocessing against VivitImageProcessor, tokens against VivitModel, checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import VivitConfig, VivitImageProcessor, VivitModel

from vdial.extract.encoders.base import WeightsError
from vdial.extract.encoders.vivit import SIZES, build_vivit, processor_pixels

# transformers' ViViT names -> the hub checkpoint's (ViT-style, in VivitForVideoClassification)
LEGACY = [
    (r"^layers\.", "encoder.layer."),
    (r"attention\.q_proj", "attention.attention.query"),
    (r"attention\.k_proj", "attention.attention.key"),
    (r"attention\.v_proj", "attention.attention.value"),
    (r"attention\.o_proj", "attention.output.dense"),
    (r"mlp\.fc1", "intermediate.dense"),
    (r"mlp\.fc2", "output.dense"),
]


def frames(t=8, h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def hub_layout(model: VivitModel, num_labels=7) -> dict[str, torch.Tensor]:
    """The state dict as google/vivit-b-16x2-kinetics400's pytorch_model.bin names it."""
    out = {}
    for key, value in model.state_dict().items():
        for pattern, repl in LEGACY:
            key = re.sub(pattern, repl, key)
        out[f"vivit.{key}"] = value.clone()
    dim = model.config.hidden_size
    out["classifier.weight"] = torch.randn(num_labels, dim)
    out["classifier.bias"] = torch.zeros(num_labels)
    return out


@pytest.mark.parametrize("size", ["base", "tiny"])
@pytest.mark.parametrize("shape", [(90, 120), (131, 97), (64, 64)])
def test_pixels_match_vivit_image_processor(size, shape):
    """Resize (PIL bilinear, short side), crop, offset rescale and normalise, value for value."""
    cfg = SIZES[size]
    crop = cfg.config["image_size"]
    processor = VivitImageProcessor(
        size={"shortest_edge": cfg.resize_short}, crop_size={"height": crop, "width": crop}
    )
    if size == "base":  # the paper size is exactly the processor's defaults
        defaults = VivitImageProcessor()
        assert defaults.size == processor.size and defaults.crop_size == processor.crop_size
        assert defaults.offset and defaults.rescale_factor == 1 / 127.5
        assert defaults.image_mean == defaults.image_std == [0.5, 0.5, 0.5]
    video = frames(3, *shape)
    theirs = processor(list(video), return_tensors="pt")["pixel_values"][0]
    ours = processor_pixels(video, resize_short=cfg.resize_short, crop=crop)
    assert ours.shape == theirs.shape == (3, 3, crop, crop)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    black_white = np.stack([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 255, np.uint8)])
    extremes = processor_pixels(black_white, resize_short=cfg.resize_short, crop=crop)
    assert extremes[0].eq(-3).all() and extremes[1].eq(1).all()  # offset + 0.5/0.5: [-3, 1]


def test_tokens_match_vivit_model_last_hidden_state():
    enc = build_vivit("tiny", random_init=True, seed=1)
    ref = VivitModel(VivitConfig(**SIZES["tiny"].config), add_pooling_layer=False).eval()
    ref.load_state_dict(enc.model.state_dict())
    video = frames(8)
    processor = VivitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}
    )
    clips = processor([list(video[:4]), list(video[4:])], return_tensors="pt")["pixel_values"]
    units = enc.preprocess(video)
    torch.testing.assert_close(units, clips, rtol=0, atol=1e-5)
    with torch.inference_mode():
        expected = ref(pixel_values=clips).last_hidden_state  # [2, 1 + 2*4*4, 32]
        ours = enc.encode(units)
    assert ours.shape == (2, 2, 16, 32)  # 2 clips x 2 tubelet rows x 4x4 tokens x 32
    torch.testing.assert_close(ours.flatten(1, 2), expected[:, 1:])
    assert enc.spec.grid == (4, 4) and enc.spec.frames_per_row == 2 and enc.spec.clip_len == 4


def test_kept_cls_leads_every_row_of_its_clip():
    enc = build_vivit("tiny", random_init=True, keep_prefix_tokens=True)
    plain = build_vivit("tiny", random_init=True)
    units = enc.preprocess(frames(8))
    with torch.inference_mode():
        tokens, patches = enc.encode(units), plain.encode(units)
        cls = enc.model(pixel_values=units).last_hidden_state[:, 0]
    assert tokens.shape == (2, 2, 17, 32) and enc.item_shape == (17, 32)
    torch.testing.assert_close(tokens[:, :, 1:], patches)
    torch.testing.assert_close(tokens[:, 0, 0], cls)
    torch.testing.assert_close(tokens[:, 1, 0], cls)


def test_rows_are_tubelets_stamped_with_their_first_frame():
    enc = build_vivit("tiny", random_init=True)
    indices = enc.frame_indices(80, 25.0)
    assert len(indices) == 8
    with torch.inference_mode():
        outputs = list(enc.encode(enc.preprocess(frames(8))))
    rows, extras = enc.to_rows(outputs, indices / 25.0, indices)
    assert rows.shape == (4, 16, 32) and rows.dtype == np.float32
    np.testing.assert_array_equal(extras["frame_indices"], indices[[0, 2, 4, 6]])
    np.testing.assert_allclose(rows[2], outputs[1][0].numpy())  # clip 1, first tubelet row


@pytest.mark.parametrize("layout", ["hub-bin", "safetensors"])
def test_weights_round_trip(tmp_path, layout):
    """The hub's legacy-named pytorch_model.bin, or save_pretrained's safetensors, reloads."""
    ref = build_vivit("tiny", random_init=True, seed=5)
    if layout == "hub-bin":
        torch.save(hub_layout(ref.model), tmp_path / "pytorch_model.bin")
        ref.model.config.to_json_file(tmp_path / "config.json")
        file = tmp_path / "pytorch_model.bin"
    else:
        ref.model.save_pretrained(tmp_path)
        file = tmp_path / "model.safetensors"
    loaded = build_vivit("tiny", weights=tmp_path)
    units = ref.preprocess(frames(8))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(units), ref.encode(units), rtol=0, atol=0)
    from vdial.extract.encoders.base import file_digest

    assert loaded.weights == file_digest(file) and loaded.weights.startswith("sha256:")


def test_missing_checkpoint_names_the_expected_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_vivit("base")
    message = str(err.value)
    assert str(tmp_path / "vivit" / "vivit-b-16x2-kinetics400") in message
    assert "pytorch_model.bin" in message and "--random-init" in message
    assert "google/vivit-b-16x2-kinetics400" in message


def test_checkpoint_of_another_size_or_with_missing_keys_is_a_clear_error(tmp_path):
    other = VivitModel(VivitConfig(**{**SIZES["tiny"].config, "hidden_size": 48}))
    other.save_pretrained(tmp_path / "wide")
    with pytest.raises(WeightsError, match=r"does not fit vivit:tiny.*hidden_size"):
        build_vivit("tiny", weights=tmp_path / "wide")
    ref = build_vivit("tiny", random_init=True)
    state = hub_layout(ref.model)
    del state["vivit.encoder.layer.1.output.dense.weight"]
    (tmp_path / "holed").mkdir()
    torch.save(state, tmp_path / "holed" / "pytorch_model.bin")
    ref.model.config.to_json_file(tmp_path / "holed" / "config.json")
    with pytest.raises(WeightsError, match=r"missing or mismatched.*layers\.1\.mlp\.fc2\.weight"):
        build_vivit("tiny", weights=tmp_path / "holed" / "pytorch_model.bin")
    (tmp_path / "empty").mkdir()
    ref.model.config.to_json_file(tmp_path / "empty" / "config.json")
    with pytest.raises(WeightsError, match="has no model.safetensors or pytorch_model.bin"):
        build_vivit("tiny", weights=tmp_path / "empty")


def test_frames_must_fill_whole_clips():
    with pytest.raises(ValueError, match="clips of 4 frames"):
        build_vivit("tiny", random_init=True, frames=6)
    enc = build_vivit("tiny", random_init=True)
    with pytest.raises(ValueError, match="multiple of 4 frames"):
        enc.preprocess(frames(6))


@pytest.mark.slow
def test_base_size_gives_16_rows_of_14x14x768():
    enc = build_vivit("base", random_init=True)
    assert enc.spec.frames == enc.spec.clip_len == 32
    units = enc.preprocess(frames(32, 240, 320))
    assert units.shape == (1, 32, 3, 224, 224)
    with torch.inference_mode():
        outputs = list(enc.encode(units))
    rows, extras = enc.to_rows(outputs, np.arange(32) / 25.0, np.arange(32))
    assert rows.shape == (16, 196, 768) and np.isfinite(rows).all()
    np.testing.assert_array_equal(extras["frame_indices"], np.arange(0, 32, 2))
