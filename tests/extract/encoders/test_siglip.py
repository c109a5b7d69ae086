"""SigLIP: the tapped layer against timm/prismatic, MERV's resize, timm and open_clip layouts."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from vdial.extract.encoders import WeightsError
from vdial.extract.encoders.siglip import SIZES, build_siglip

TINY = {"img_size": 64, "num_classes": 0, **SIZES["tiny"].overrides}


def frames(t=2, h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def full_timm_model(seed=0):
    """The whole tiny timm model (final norm and MAP head included), as MERV creates it."""
    torch.manual_seed(seed)
    model = timm.create_model("vit_base_patch16_siglip_224", pretrained=False, **TINY).eval()
    with torch.no_grad():  # timm zero-inits some biases; make every weight matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def save_layout(model, layout, tmp_path):
    """The model's weights as HF timm's `model.safetensors` or open_clip's checkpoint."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "timm":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file(state, path)
    else:  # open_clip: the timm trunk under visual.trunk, next to the text tower
        path = tmp_path / "open_clip_pytorch_model.bin"
        clip = {f"visual.trunk.{k}": v for k, v in state.items()}
        clip |= {"text.token_embedding.weight": torch.zeros(10, 8), "logit_scale": torch.ones([])}
        clip["logit_bias"] = torch.zeros([])
        torch.save(clip, path)
    return path


@pytest.mark.parametrize("layout", ["timm", "open_clip"])
def test_taps_what_prismatic_get_intermediate_layers_returns(tmp_path, layout):
    """MERV's forward is get_intermediate_layers(n={depth-2}) on the unpruned timm model."""
    ref = full_timm_model(seed=1)
    enc = build_siglip("tiny", weights=save_layout(ref, layout, tmp_path))
    x = enc.preprocess(frames(3))
    depth = len(ref.blocks)
    with torch.inference_mode():
        out = enc.encode(x)
        (prismatic,) = ref.get_intermediate_layers(x, n={depth - 2})
        (inter,) = ref.forward_intermediates(
            x, indices=[depth - 2], norm=False, output_fmt="NLC", intermediates_only=True
        )
        torch.testing.assert_close(out, prismatic)
        torch.testing.assert_close(out, inter)
        # and not the last block, nor the normed output
        (last,) = ref.get_intermediate_layers(x, n={depth - 1})
        assert not torch.allclose(out, last, atol=1e-3)
    assert out.shape == (3, 16, 32) and enc.spec.grid == (4, 4)
    assert enc.weights.startswith("sha256:") and len(enc.weights) == 7 + 64


def test_tapped_layer_by_hand_from_timm_modules():
    """Independent path: timm modules run by hand up to block depth-2; there is no prefix token."""
    enc = build_siglip("tiny", random_init=True, seed=2)
    ref = full_timm_model(seed=2)
    with torch.no_grad():  # the pruned model's weights are a subset of the full one's
        ref.load_state_dict(enc.model.state_dict(), strict=False)
    x = enc.preprocess(frames())
    with torch.inference_mode():
        h = ref.norm_pre(ref._pos_embed(ref.patch_embed(x)))
        for block in ref.blocks[: len(ref.blocks) - 1]:
            h = block(h)
        torch.testing.assert_close(enc.encode(x), h)
    assert ref.num_prefix_tokens == 0 and enc.spec.prefix_tokens == 0
    assert enc.model.attn_pool is None and len(enc.model.blocks) == 2
    assert enc.spec.tokens_per_frame == 16 and enc.item_shape == (16, 32)


def test_preprocess_matches_merv_resize_naive_transform():
    """prismatic/MERV "resize-naive": timm's eval transform with Resize((S, S)) and no crop."""
    from PIL import Image
    from timm.data import resolve_data_config
    from torchvision import transforms

    enc = build_siglip("tiny", random_init=True)
    size = enc.spec.input_size
    cfg = resolve_data_config({"input_size": (3, size, size)}, model=full_timm_model())
    assert (cfg["mean"], cfg["std"]) == (enc.spec.mean, enc.spec.std) == ((0.5,) * 3, (0.5,) * 3)
    assert cfg["interpolation"] == enc.spec.interpolation == "bicubic"
    resize_naive = transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    img = frames(1, 90, 160, seed=1)[0]
    # a smooth image: PIL's and torch's bicubic filters differ most on pixel noise
    img = np.asarray(Image.fromarray(img).resize((16, 9)).resize((160, 90), Image.BILINEAR))
    ours = enc.preprocess(img[None])[0]
    theirs = resize_naive(Image.fromarray(img))
    assert ours.shape == theirs.shape == (3, size, size)
    assert (ours - theirs).abs().mean() < 0.02


def test_random_init_is_seeded():
    a = build_siglip("tiny", random_init=True, seed=3)
    b = build_siglip("tiny", random_init=True, seed=3)
    c = build_siglip("tiny", random_init=True, seed=4)
    x = a.preprocess(frames())
    with torch.inference_mode():
        torch.testing.assert_close(a.encode(x), b.encode(x))
        assert not torch.allclose(a.encode(x), c.encode(x))
    assert a.weights == "random:3"


def test_missing_checkpoint_names_the_expected_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_siglip()
    message = str(err.value)
    assert "model.safetensors" in message and "open_clip_pytorch_model.bin" in message
    assert "vit_base_patch16_siglip_224.webli" in message
    assert str(tmp_path / "siglip") in message and "--random-init" in message


def test_checkpoint_of_the_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="does not fit siglip:tiny"):
        build_siglip("tiny", weights=path)


@pytest.mark.slow
def test_base_shape():
    enc = build_siglip("base", random_init=True)
    with torch.inference_mode():
        out = enc.encode(enc.preprocess(frames(1, 240, 320)))
    assert out.shape == (1, 196, 768) and enc.spec.grid == (14, 14)
    assert len(enc.model.blocks) == 11 and torch.isfinite(out).all()
