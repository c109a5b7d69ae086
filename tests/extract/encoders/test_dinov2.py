"""DINOv2: the tapped layer against timm's modules, preprocessing, checkpoint layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vdial.extract.encoders import WeightsError, build_encoder, parse_ref


def frames(t=3, h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_refs_parse_with_default_size():
    assert parse_ref("dinov2") == ("dinov2", "large")
    assert parse_ref("dinov2:tiny") == ("dinov2", "tiny")
    with pytest.raises(KeyError, match="unknown size"):
        parse_ref("dinov2:huge")
    with pytest.raises(KeyError, match="unknown encoder"):
        parse_ref("nope")


def test_dinov2_taps_penultimate_block_patch_tokens():
    """Independent path: timm modules by hand up to block depth-2, minus the 5 prefix tokens."""
    enc = build_encoder("dinov2:tiny", random_init=True)
    m = enc.model
    x = enc.preprocess(frames(2))
    with torch.inference_mode():
        h = m.norm_pre(m._pos_embed(m.patch_embed(x)))
        for block in m.blocks[: len(m.blocks) - 1]:
            h = block(h)
        expected = h[:, m.num_prefix_tokens :]
        torch.testing.assert_close(enc.encode(x), expected)
    assert m.num_prefix_tokens == 5  # CLS + 4 registers
    assert enc.spec.grid == (4, 4) and enc.spec.dim == 32


def test_preprocess_matches_timm_transform():
    """Our tensor resize+crop+normalise against timm's PIL pipeline for the same config."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    enc = build_encoder("dinov2:tiny", random_init=True)
    size = enc.spec.input_size
    cfg = resolve_data_config({"input_size": (3, size, size)}, model=enc.model)
    assert cfg["mean"] == enc.spec.mean and cfg["std"] == enc.spec.std
    transform = create_transform(**cfg)
    img = frames(1, 90, 120, seed=1)
    # a smooth image: PIL's and torch's bicubic filters differ most on pixel noise
    img = np.asarray(Image.fromarray(img[0]).resize((12, 9)).resize((120, 90), Image.BILINEAR))
    ours = enc.preprocess(img[None])[0]
    theirs = transform(Image.fromarray(img))
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().mean() < 0.02


@pytest.mark.parametrize("layout", ["timm", "upstream"])
def test_dinov2_weights_round_trip(tmp_path, layout):
    """A state dict saved in timm's or the official DINOv2 layout loads and reproduces outputs."""
    ref = build_encoder("dinov2:tiny", random_init=True, seed=7)
    state = ref.model.state_dict()
    if layout == "upstream":  # the official repo's names: register_tokens, mask_token, cls pos slot
        state = {("register_tokens" if k == "reg_token" else k): v for k, v in state.items()}
        pos = state["pos_embed"]
        state["pos_embed"] = torch.cat([torch.zeros(1, 1, pos.shape[-1]), pos], dim=1)
        state["mask_token"] = torch.zeros(1, pos.shape[-1])
    path = tmp_path / "dinov2.pth"
    torch.save(state, path)
    loaded = build_encoder("dinov2:tiny", weights=path)
    x = ref.preprocess(frames(2))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(x), ref.encode(x))
    assert loaded.weights.startswith("sha256:") and len(loaded.weights) == 7 + 64


def test_missing_checkpoint_names_the_expected_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_encoder("dinov2")
    message = str(err.value)
    assert "dinov2_vitl14_reg4_pretrain.pth" in message
    assert str(tmp_path / "dinov2") in message and "--random-init" in message


def test_checkpoint_of_the_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="does not fit dinov2:tiny"):
        build_encoder("dinov2:tiny", weights=path)
