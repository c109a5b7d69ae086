"""EVA-CLIP: LAVIS's forward and key names, timm's model, the BLIP-2 eval resize, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vdial.extract.encoders import WeightsError
from vdial.extract.encoders.eva_clip import NORMALISATIONS, build_eva_clip

DIM, HEADS, GRID, DEPTH = 32, 2, 4, 3  # the tiny size: 3 EVA blocks, of which LAVIS runs 2


def frames(t=2, h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def lavis_state(seed=0, dim=DIM):
    """An `eva_vit_g.pth`-style state dict, names written from LAVIS's VisionTransformer.

    Like the real file it holds every block of the EVA-CLIP tower (DEPTH); LAVIS runs DEPTH - 1.
    """
    g = torch.Generator().manual_seed(seed)

    def r(*shape, base=0.0):
        return base + 0.1 * torch.randn(*shape, generator=g)

    hidden = int(dim * 4.3637)  # LAVIS's mlp_ratio
    state = {
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, GRID * GRID + 1, dim),
        "patch_embed.proj.weight": r(dim, 3, 14, 14),
        "patch_embed.proj.bias": r(dim),
    }
    for i in range(DEPTH):
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": r(dim, base=1.0),
            p + "norm1.bias": r(dim),
            p + "attn.q_bias": r(dim),
            p + "attn.v_bias": r(dim),
            p + "attn.qkv.weight": r(3 * dim, dim),
            p + "attn.proj.weight": r(dim, dim),
            p + "attn.proj.bias": r(dim),
            p + "norm2.weight": r(dim, base=1.0),
            p + "norm2.bias": r(dim),
            p + "mlp.fc1.weight": r(hidden, dim),
            p + "mlp.fc1.bias": r(hidden),
            p + "mlp.fc2.weight": r(dim, hidden),
            p + "mlp.fc2.bias": r(dim),
        }
    return state


def lavis_forward(state, x, blocks=DEPTH - 1):
    """LAVIS's `VisionTransformer.forward` (depth = DEPTH - 1), written out from its source."""
    x = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=14)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x], dim=1) + state["pos_embed"]
    b, n, c = x.shape
    for i in range(blocks):
        p = f"blocks.{i}."

        def ln(t, name, p=p):
            return F.layer_norm(
                t, (c,), state[p + name + ".weight"], state[p + name + ".bias"], 1e-6
            )

        q_bias, v_bias = state[p + "attn.q_bias"], state[p + "attn.v_bias"]
        bias = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias])
        qkv = F.linear(ln(x, "norm1"), state[p + "attn.qkv.weight"], bias)
        q, k, v = qkv.reshape(b, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * (c // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + F.linear(out, state[p + "attn.proj.weight"], state[p + "attn.proj.bias"])
        h = F.gelu(F.linear(ln(x, "norm2"), state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
    return x


def save_layout(state, layout, tmp_path):
    """The same weights in an upstream layout: LAVIS's file, a whole BLIP-2 model, timm's."""
    if layout == "lavis":
        path = tmp_path / "eva_vit_g.pth"
        torch.save(state, path)
    elif layout == "blip2":  # the tower inside a BLIP-2 / V2Dial checkpoint, beside other parts
        path = tmp_path / "blip2_pretrained.pth"
        model = {f"visual_encoder.{k}": v for k, v in state.items()}
        model |= {"ln_vision.weight": torch.ones(DIM), "query_tokens": torch.zeros(1, 4, DIM)}
        torch.save({"model": model}, path)
    else:  # timm's full tower: the LAVIS weights plus a final norm and a CLIP projection head
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file(
            {**state, "norm.weight": torch.ones(DIM), "norm.bias": torch.zeros(DIM)}
            | {"head.weight": torch.zeros(8, DIM), "head.bias": torch.zeros(8)},
            path,
        )
    return path


@pytest.mark.parametrize("layout", ["lavis", "blip2", "timm"])
def test_checkpoint_layouts_reproduce_lavis_forward(tmp_path, layout):
    """Each layout loads into the tiny model and gives LAVIS's output: CLS first, last block cut."""
    state = lavis_state(seed=3)
    enc = build_eva_clip(
        "tiny", weights=save_layout(state, layout, tmp_path), keep_prefix_tokens=True
    )
    x = enc.preprocess(frames())
    with torch.inference_mode():
        expected = lavis_forward(state, x)
        torch.testing.assert_close(enc.encode(x), expected, rtol=1e-4, atol=1e-5)
    assert enc.weights.startswith("sha256:") and len(enc.weights) == 7 + 64
    assert len(enc.model.blocks) == DEPTH - 1


def test_default_drops_cls_like_v2dial(tmp_path):
    state = lavis_state(seed=4)
    path = save_layout(state, "lavis", tmp_path)
    enc = build_eva_clip("tiny", weights=path)
    x = enc.preprocess(frames())
    with torch.inference_mode():
        torch.testing.assert_close(
            enc.encode(x), lavis_forward(state, x)[:, 1:], rtol=1e-4, atol=1e-5
        )
    assert enc.spec.keep_prefix_tokens is False and enc.spec.prefix_tokens == 1
    assert enc.spec.tokens_per_frame == GRID * GRID and enc.item_shape == (16, DIM)


def test_matches_timm_eva_built_from_the_same_weights():
    """timm's full EVA-CLIP-g geometry, loaded by timm's own filter, tapped at block depth-2."""
    import timm
    from timm.models.eva import checkpoint_filter_fn

    state = lavis_state(seed=5)
    ref = timm.create_model(
        "eva_giant_patch14_clip_224",
        img_size=56,
        num_classes=0,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
    ).eval()
    missing, unexpected = ref.load_state_dict(checkpoint_filter_fn(state, ref), strict=False)
    assert sorted(missing) == ["norm.bias", "norm.weight"] and not unexpected  # LAVIS has no norm
    enc = build_eva_clip("tiny", random_init=True, keep_prefix_tokens=True)
    enc.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("blocks.2.")})
    x = enc.preprocess(frames(3))
    with torch.inference_mode():
        ((patches, prefix),) = ref.forward_intermediates(
            x,
            indices=[DEPTH - 2],
            return_prefix_tokens=True,
            norm=False,
            output_fmt="NLC",
            intermediates_only=True,
        )
        torch.testing.assert_close(enc.encode(x), torch.cat([prefix, patches], dim=1))


def test_random_init_round_trip_and_seeds(tmp_path):
    ref = build_eva_clip("tiny", random_init=True, seed=7)
    assert ref.weights == "random:7"
    path = tmp_path / "eva_clip_tiny.pth"
    torch.save(ref.model.state_dict(), path)  # the pruned model's keys are LAVIS's
    loaded = build_eva_clip("tiny", weights=path)
    other = build_eva_clip("tiny", random_init=True, seed=8)
    x = ref.preprocess(frames())
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(x), ref.encode(x))
        assert not torch.allclose(other.encode(x), ref.encode(x))


@pytest.mark.parametrize("normalisation", ["openai-clip", "imagenet"])
def test_preprocess_matches_blip_eval_processor(normalisation):
    """Squash to S x S (no crop), bicubic, then the chosen mean/std: LAVIS's blip_image_eval."""
    from PIL import Image
    from torchvision import transforms

    enc = build_eva_clip("tiny", random_init=True, normalisation=normalisation)
    mean, std = NORMALISATIONS[normalisation]
    assert (enc.spec.mean, enc.spec.std) == (mean, std)
    size = enc.spec.input_size
    blip_eval = transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    img = frames(1, 90, 150, seed=1)[0]
    # a smooth image: PIL's and torch's bicubic filters differ most on pixel noise
    img = np.asarray(Image.fromarray(img).resize((15, 9)).resize((150, 90), Image.BILINEAR))
    ours = enc.preprocess(img[None])[0]
    theirs = blip_eval(Image.fromarray(img))
    assert ours.shape == theirs.shape == (3, size, size)
    assert (ours - theirs).abs().mean() < 0.02
    # the whole frame survives (no centre crop): the left edge is in the output
    marked = img.copy()
    marked[:, :20] = 255
    column = enc.preprocess(marked[None])[0, :, :, 0]  # the output's left column, normalised
    pixels = column * torch.tensor(std).view(3, 1) + torch.tensor(mean).view(3, 1)
    assert pixels.min() > 0.95


def test_missing_checkpoint_names_the_expected_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_eva_clip()
    message = str(err.value)
    assert "eva_vit_g.pth" in message and "LAVIS" in message
    assert str(tmp_path / "eva-clip") in message and "--random-init" in message
    with pytest.raises(WeightsError, match="not found"):
        build_eva_clip("tiny", weights=tmp_path / "nope.pth")


def test_checkpoint_of_the_wrong_size_is_a_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(lavis_state(dim=48), path)
    with pytest.raises(WeightsError, match="does not fit eva-clip:tiny"):
        build_eva_clip("tiny", weights=path)
    with pytest.raises(KeyError, match="unknown normalisation"):
        build_eva_clip("tiny", random_init=True, normalisation="laion")


@pytest.mark.slow
def test_giant_shape():
    enc = build_eva_clip("giant", random_init=True, keep_prefix_tokens=True)
    assert len(enc.model.blocks) == 39  # LAVIS's create_eva_vit_g depth
    with torch.inference_mode():
        out = enc.encode(enc.preprocess(frames(1, 240, 320)))
    assert out.shape == (1, 257, 1408) and enc.spec.grid == (16, 16)
    assert enc.item_shape == (257, 1408) and torch.isfinite(out).all()
