"""LanguageBind video tower: preprocessing, the temporal attention, the tap, checkpoints.

References: torchvision's video transforms (MERV's pipeline), transformers' `CLIPVisionModel` for
the spatial blocks, and the temporal attention written out here head by head from its weights.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

from vdial.extract.encoders.base import WeightsError, file_digest
from vdial.extract.encoders.languagebind import (
    OPENAI_MEAN,
    OPENAI_STD,
    SIZES,
    build_languagebind,
)

TINY = SIZES["tiny"].vision_config


def frames(t=4, h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def merv_transform(video: np.ndarray, size: int) -> torch.Tensor:
    """MERV's get_video_transform minus the random flip, on [C, T, H, W] as decord gives it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.transforms._transforms_video import CenterCropVideo, NormalizeVideo
    x = torch.from_numpy(video).permute(3, 0, 1, 2) / 255.0
    x = NormalizeVideo(mean=OPENAI_MEAN, std=OPENAI_STD)(x)
    c, t, h, w = x.shape  # pytorchvideo's ShortSideScale
    if w < h:
        new_h, new_w = int(math.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(w / h * size))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return CenterCropVideo(size)(x).permute(1, 0, 2, 3)  # -> [T, C, S, S]


def spatial_reference(enc) -> CLIPVisionModel:
    """transformers' CLIP tower holding the encoder's spatial weights."""
    config = CLIPVisionConfig(**{k: v for k, v in TINY.items() if k != "num_frames"})
    ref = CLIPVisionModel(config).eval()
    state = {k: v for k, v in enc.model.state_dict().items() if ".temporal_" not in k}
    ref.load_state_dict(state, strict=True)
    return ref


def temporal_reference(h, state, prefix, t, heads, eps=1e-5):
    """LanguageBind's temporal step on [(G t), N, D], head by head from the layer's weights."""
    w = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    gt, n, d = h.shape
    x = h.view(gt // t, t, n, d) + w["temporal_embedding"][0, :t, None, :]
    y = F.layer_norm(x, (d,), w["temporal_layer_norm1.weight"], w["temporal_layer_norm1.bias"], eps)
    out = torch.zeros_like(x)
    dh = d // heads
    for head in range(heads):
        rows = slice(head * dh, (head + 1) * dh)

        def proj(name, rows=rows):
            weight = w[f"temporal_attn.{name}.weight"][rows]
            return y @ weight.T + w[f"temporal_attn.{name}.bias"][rows]

        q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")  # [G, t, N, dh]
        scores = torch.einsum("gsnc,grnc->gnsr", q, k) / math.sqrt(dh)
        mixed = torch.einsum("gnsr,grnc->gsnc", scores.softmax(-1), v)
        out = out + mixed @ w["temporal_attn.out_proj.weight"][:, rows].T
    out = out + w["temporal_attn.out_proj.bias"]
    return (x + out).reshape(gt, n, d)


def upstream_checkpoint(enc, directory, text_keys=True, fmt="bin"):
    """Write `enc`'s tower as LanguageBind_Video_merge lays it out (config.json + weights)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {f"vision_model.{k}": v.clone() for k, v in enc.model.state_dict().items()}
    # older transformers saved this buffer; the hub checkpoint has it
    state["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    if text_keys:  # the text tower and projections, which the video encoder never reads
        state["text_model.embeddings.token_embedding.weight"] = torch.randn(10, 16)
        state["text_projection.weight"] = torch.randn(8, 16)
        state["visual_projection.weight"] = torch.randn(8, 32)
        state["logit_scale"] = torch.tensor(2.6592)
    config = {
        "model_type": "LanguageBindVideo",
        "projection_dim": 8,
        "text_config": {"hidden_size": 16, "num_hidden_layers": 1},
        "vision_config": {**TINY, "add_time_attn": True, "lora_r": 0, "force_patch_dropout": 0.0},
    }
    (directory / "config.json").write_text(json.dumps(config))
    if fmt == "bin":
        torch.save(state, directory / "pytorch_model.bin")
        return directory / "pytorch_model.bin"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, directory / "model.safetensors")
    return directory / "model.safetensors"


@pytest.mark.parametrize("shape", [(60, 80), (97, 61), (56, 56), (57, 140)])
def test_preprocess_matches_mervs_video_transform(shape):
    enc = build_languagebind("tiny", random_init=True)
    video = frames(4, *shape)
    units = enc.preprocess(video)
    assert units.shape == (1, 4, 3, 56, 56)
    torch.testing.assert_close(units[0], merv_transform(video, 56), rtol=0, atol=1e-5)


def test_frames_are_sampled_like_upstream_decord():
    enc = build_languagebind("tiny", random_init=True, frames=8)
    for total in (1, 7, 8, 100, 1001):
        np.testing.assert_array_equal(
            enc.frame_indices(total, 30.0), np.linspace(0, total - 1, 8, dtype=int)
        )
    with pytest.raises(ValueError, match="cannot sample from 0 frames"):
        enc.frame_indices(0, 30.0)


def test_without_temporal_attention_it_is_clips_hidden_states_minus_two():
    """Zero temporal weights leave plain CLIP: our tap equals transformers' hidden_states[-2]."""
    enc = build_languagebind("tiny", random_init=True, keep_prefix_tokens=True)
    with torch.no_grad():
        for layer in enc.model.encoder.layers:
            layer.temporal_embedding.zero_()
            layer.temporal_attn.out_proj.weight.zero_()
            layer.temporal_attn.out_proj.bias.zero_()
    units = enc.preprocess(frames())
    with torch.inference_mode():
        ours = enc.encode(units)
        hidden = spatial_reference(enc)(units[0], output_hidden_states=True).hidden_states
    assert len(hidden) == 3  # embeddings + 2 layers: [-2] is the output of layer 1 of 2
    torch.testing.assert_close(ours[0], hidden[-2])


def test_tokens_match_a_hand_written_temporal_attention():
    enc = build_languagebind("tiny", random_init=True, seed=2, keep_prefix_tokens=True)
    ref, state = spatial_reference(enc), enc.model.state_dict()
    units = enc.preprocess(frames())
    with torch.inference_mode():
        h = ref.pre_layrnorm(ref.embeddings(units[0]))
        h = temporal_reference(h, state, "encoder.layers.0.", t=2, heads=2)
        expected = ref.encoder.layers[0](h, None)
        ours = enc.encode(units)
        plain = build_languagebind("tiny", random_init=True, seed=2).encode(units)
    assert ours.shape == (1, 4, 17, 32)
    torch.testing.assert_close(ours[0], expected)
    torch.testing.assert_close(plain, ours[:, :, 1:])  # CLS dropped by default (MERV)
    assert enc.item_shape == (17, 32) and enc.spec.grid == (4, 4) and enc.spec.clip_len == 4


def test_frames_mix_only_within_their_temporal_group():
    """4 frames with a 2-frame checkpoint are two groups, as upstream's rearrange makes them."""
    enc = build_languagebind("tiny", random_init=True)
    video = frames()
    changed = video.copy()
    changed[0] = 255 - changed[0]
    with torch.inference_mode():
        a, b = enc.encode(enc.preprocess(video))[0], enc.encode(enc.preprocess(changed))[0]
    delta = (a - b).abs().flatten(1).amax(1)
    assert delta[0] > 0.1 and delta[1] > 1e-3  # frame 1 attends to frame 0
    assert delta[2] == 0 and delta[3] == 0  # the second group never sees frame 0


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_weights_round_trip_in_the_upstream_layout(tmp_path, fmt):
    ref = build_languagebind("tiny", random_init=True, seed=9)
    file = upstream_checkpoint(ref, tmp_path / "LanguageBind_Video_tiny", fmt=fmt)
    loaded = build_languagebind("tiny", weights=tmp_path / "LanguageBind_Video_tiny")
    units = ref.preprocess(frames())
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(units), ref.encode(units), rtol=0, atol=0)
    assert loaded.weights == file_digest(file)


def test_missing_checkpoint_names_the_expected_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_languagebind()
    message = str(err.value)
    assert str(tmp_path / "languagebind" / "LanguageBind_Video_merge") in message
    assert "pytorch_model.bin" in message and "--random-init" in message


def test_mismatching_checkpoints_are_clear_errors(tmp_path):
    ref = build_languagebind("tiny", random_init=True)
    upstream_checkpoint(ref, tmp_path / "ok")
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["vision_config"]["num_frames"] = 8
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"does not fit languagebind:tiny.*'num_frames': 8"):
        build_languagebind("tiny", weights=tmp_path / "ok")

    file = upstream_checkpoint(ref, tmp_path / "holed")
    state = torch.load(file, weights_only=True)
    del state["vision_model.encoder.layers.1.temporal_attn.q_proj.weight"]
    torch.save(state, file)
    with pytest.raises(WeightsError, match=r"layers\.1\.temporal_attn\.q_proj\.weight"):
        build_languagebind("tiny", weights=file)

    config["vision_config"] = {**TINY, "add_time_attn": False}
    (tmp_path / "holed" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="not a LanguageBind video checkpoint"):
        build_languagebind("tiny", weights=tmp_path / "holed")


def test_frames_must_fill_whole_temporal_groups():
    with pytest.raises(ValueError, match="groups of 2 frames"):
        build_languagebind("tiny", random_init=True, frames=3)
    enc = build_languagebind("tiny", random_init=True)
    with pytest.raises(ValueError, match="needs 4 frames, got 6"):
        enc.preprocess(frames(6))


@pytest.mark.slow
def test_large_size_gives_rows_of_16x16x1024():
    enc = build_languagebind("large", random_init=True, frames=8)
    assert enc.spec.grid == (16, 16) and enc.spec.dim == 1024
    units = enc.preprocess(frames(8, 240, 320))
    with torch.inference_mode():
        outputs = list(enc.encode(units))
    rows, extras = enc.to_rows(outputs, np.arange(8) / 25.0, np.arange(8))
    assert rows.shape == (8, 256, 1024) and np.isfinite(rows).all()
    np.testing.assert_array_equal(extras["frame_indices"], np.arange(8))
