"""3D ResNeXt (Hara): clip plan, preprocessing against his PIL pipeline, the network against a
functional re-computation from the state dict, his checkpoint layout, real-size key shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vdial.extract.encoders import WeightsError
from vdial.extract.encoders.resnext3d import SIZES, build_network, build_resnext3d

MEAN = np.array([114.7748, 107.7354, 99.4750], dtype=np.float32)  # Hara's mean.py


def frames(t=8, h=72, w=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def clip_range(*starts, length=4):
    return np.concatenate([np.arange(s, s + length) for s in starts])


def test_frame_plan_is_consecutive_non_overlapping_clips():
    enc = build_resnext3d("tiny", random_init=True)  # clip_len 4, at most 32 clips
    np.testing.assert_array_equal(enc.frame_indices(40, 25.0), np.arange(40))
    np.testing.assert_array_equal(enc.frame_indices(43, 30.0), np.arange(40))  # tail dropped
    np.testing.assert_array_equal(enc.frame_indices(3, 25.0), [0, 1, 2, 2])  # padded
    np.testing.assert_array_equal(enc.frame_indices(4, 25.0), [0, 1, 2, 3])
    # 25 clips, 3 kept: the middle clip of each third (clips 4, 12, 20)
    capped = build_resnext3d("tiny", random_init=True, max_clips=3)
    np.testing.assert_array_equal(capped.frame_indices(100, 25.0), clip_range(16, 48, 80))
    assert capped.spec.frames == 12
    with pytest.raises(ValueError, match="cannot sample from 0 frames"):
        enc.frame_indices(0, 25.0)


def test_frames_budget_sets_max_clips():
    enc = build_resnext3d("tiny", random_init=True, frames=10)  # 10 // 4 = 2 clips
    assert enc.max_clips == 2 and enc.spec.frames == 8
    # 100 clips, 2 kept: the middle clip of each half (clips 25 and 75)
    np.testing.assert_array_equal(enc.frame_indices(400, 25.0), clip_range(100, 300))
    with pytest.raises(ValueError, match="at least one 4-frame clip"):
        build_resnext3d("tiny", random_init=True, frames=3)


def hara_transform(frame: np.ndarray, size: int) -> np.ndarray:
    """video-classification-3d-cnn-pytorch: Scale(size), CenterCrop(size), ToTensor on 0-255,
    Normalize(mean, [1, 1, 1]), written from its spatial_transforms.py with PIL."""
    from PIL import Image

    img = Image.fromarray(frame)
    w, h = img.size
    if w < h:
        img = img.resize((size, int(size * h / w)), Image.BILINEAR)
    else:
        img = img.resize((int(size * w / h), size), Image.BILINEAR)
    w, h = img.size
    x1, y1 = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    img = img.crop((x1, y1, x1 + size, y1 + size))
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) - MEAN[:, None, None]


@pytest.mark.parametrize("shape", [(90, 161), (150, 97), (64, 64)])
def test_preprocess_matches_haras_pil_pipeline(shape):
    enc = build_resnext3d("tiny", random_init=True)
    size, length = enc.spec.input_size, enc.spec.clip_len
    rng = np.random.default_rng(1)
    # smooth frames plus noise: resampling filters differ most on pure pixel noise
    base = rng.integers(0, 256, (8, 6, 6, 3)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(
        torch.tensor(base).permute(0, 3, 1, 2), size=shape, mode="bilinear"
    )
    noisy = smooth.permute(0, 2, 3, 1).numpy() + rng.normal(0, 8, (8, *shape, 3))
    video = noisy.clip(0, 255).astype(np.uint8)
    units = enc.preprocess(video)
    assert units.shape == (2, 3, length, size, size) and units.dtype == torch.float32
    for t in range(8):  # clip u holds frames u*L .. u*L+L-1 along axis 2
        ours = units[t // length, :, t % length].numpy()
        theirs = hara_transform(video[t], size)
        assert np.abs(ours - theirs).max() <= 1.0  # PIL and torchvision round uint8 apart
        assert np.abs(ours - theirs).mean() < 0.1
    # the spec's 0-1 normalisation is the same arithmetic
    spec = enc.spec
    np.testing.assert_allclose(np.array(spec.mean) / np.array(spec.std), MEAN, rtol=1e-6)


def test_preprocess_rejects_partial_clips_and_wrong_dtype():
    enc = build_resnext3d("tiny", random_init=True)
    with pytest.raises(ValueError, match="positive multiple of 4 frames, got 6"):
        enc.preprocess(frames(6))
    with pytest.raises(ValueError, match="expected uint8 frames"):
        enc.preprocess(frames(4).astype(np.float32))


def randomised_batch_norms(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with non-trivial batch-norm affine and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith(("bias", "running_mean")):
            state[key] = 0.2 * torch.randn(value.shape, generator=gen)
    model.load_state_dict(state)
    return state


def functional_trunk(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Hara's ResNeXt forward (1 block per stage, shortcut B) with F.* on the named weights."""

    def bn(h, name):
        return F.batch_norm(
            h,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            state[f"{name}.weight"],
            state[f"{name}.bias"],
            training=False,
            eps=1e-5,
        )

    h = F.relu(bn(F.conv3d(x, state["conv1.weight"], stride=(1, 2, 2), padding=3), "bn1"))
    h = F.max_pool3d(h, kernel_size=3, stride=2, padding=1)
    for stage in range(1, 5):
        b, stride = f"layer{stage}.0", 1 if stage == 1 else 2
        y = F.relu(bn(F.conv3d(h, state[f"{b}.conv1.weight"]), f"{b}.bn1"))
        w2 = state[f"{b}.conv2.weight"]
        y = F.relu(bn(F.conv3d(y, w2, stride=stride, padding=1, groups=4), f"{b}.bn2"))
        y = bn(F.conv3d(y, state[f"{b}.conv3.weight"]), f"{b}.bn3")
        shortcut = F.conv3d(h, state[f"{b}.downsample.0.weight"], stride=stride)
        h = F.relu(y + bn(shortcut, f"{b}.downsample.1"))
    return h


def test_network_matches_functional_recomputation_pooled_and_map():
    pooled = build_resnext3d("tiny", random_init=True, seed=5)
    spatial = build_resnext3d("tiny", random_init=True, seed=5, spatial_map=True)
    state = randomised_batch_norms(pooled.model, seed=1)
    spatial.model.load_state_dict(state)
    assert state["layer2.0.conv2.weight"].shape == (8, 2, 3, 3, 3)  # 4 groups of width 2
    x = pooled.preprocess(frames(8, 80, 100))
    with torch.inference_mode():
        expected = functional_trunk(state, x)  # [2, 512, 1, 2, 2]
        assert expected.shape == (2, 512, 1, 2, 2)
        out = pooled.encode(x)
        grid = spatial.encode(x)
    assert out.shape == (2, 1, 1, 512) and grid.shape == (2, 1, 4, 512)
    torch.testing.assert_close(out[:, 0, 0], expected.mean(dim=(2, 3, 4)), rtol=1e-4, atol=1e-5)
    tokens = expected[:, :, 0].flatten(2).transpose(1, 2)  # row-major (h, w) tokens
    torch.testing.assert_close(grid[:, 0], tokens, rtol=1e-4, atol=1e-5)
    assert pooled.spec.grid == (1, 1) and spatial.spec.grid == (2, 2)
    assert spatial.item_shape == (4, 512) and spatial.spec.frames_per_row == 4


def test_rows_one_per_clip_stamped_with_its_first_frame():
    enc = build_resnext3d("tiny", random_init=True)
    indices = enc.frame_indices(13, 10.0)  # 3 clips
    units = enc.preprocess(frames(len(indices)))
    with torch.inference_mode():
        rows, extras = enc.to_rows(list(enc.encode(units)), indices / 10.0, indices)
    assert rows.shape == (3, 1, 512)
    np.testing.assert_array_equal(extras["frame_indices"], [0, 4, 8])
    np.testing.assert_allclose(extras["timestamps"], [0.0, 0.4, 0.8])


def hara_checkpoint(model: torch.nn.Module) -> dict:
    """A 2017 3D-ResNets-PyTorch checkpoint: DataParallel keys, a Kinetics fc, no
    num_batches_tracked (PyTorch 0.3 batch norms had none), optimizer state beside it."""
    state = {
        f"module.{k}": v.clone()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    state["module.fc.weight"] = torch.randn(400, 512)
    state["module.fc.bias"] = torch.randn(400)
    return {"epoch": 200, "arch": "resnext-tiny", "state_dict": state, "optimizer": {"state": {}}}


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-pickle", "zip"])
def test_weights_round_trip_in_haras_layout(tmp_path, legacy):
    ref = build_resnext3d("tiny", random_init=True, seed=7)
    randomised_batch_norms(ref.model, seed=2)
    path = tmp_path / "resnext-tiny.pth"
    torch.save(hara_checkpoint(ref.model), path, _use_new_zipfile_serialization=not legacy)
    loaded = build_resnext3d("tiny", weights=path)
    x = ref.preprocess(frames(8))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(x), ref.encode(x), rtol=0, atol=0)
    assert loaded.weights.startswith("sha256:") and len(loaded.weights) == 7 + 64
    # a bare state dict without the DataParallel prefix loads too
    bare = tmp_path / "bare.pth"
    torch.save(ref.model.state_dict(), bare)
    with torch.inference_mode():
        torch.testing.assert_close(build_resnext3d("tiny", weights=bare).encode(x), ref.encode(x))


def test_checkpoint_from_env_dir(tmp_path, monkeypatch):
    ref = build_resnext3d("tiny", random_init=True, seed=3)
    (tmp_path / "resnext3d").mkdir()
    torch.save(hara_checkpoint(ref.model), tmp_path / "resnext3d" / "resnext-tiny.pth")
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    enc = build_resnext3d("tiny")
    assert enc.weights.startswith("sha256:")


def test_mismatching_checkpoints_are_weights_errors(tmp_path):
    model = build_resnext3d("tiny", random_init=True).model
    wrong_arch = hara_checkpoint(model) | {"arch": "resnet-101"}
    torch.save(wrong_arch, tmp_path / "arch.pth")
    with pytest.raises(WeightsError, match="holds 'resnet-101', but resnext3d:tiny is"):
        build_resnext3d("tiny", weights=tmp_path / "arch.pth")
    no_block = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4.")}
    torch.save({"state_dict": no_block}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"(?s)does not fit resnext3d:tiny.*layer4\.0\.conv1"):
        build_resnext3d("tiny", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        build_resnext3d("tiny", weights=tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="checkpoint not found"):
        build_resnext3d("tiny", weights=tmp_path / "absent.pth")


def test_missing_checkpoint_names_haras_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_resnext3d()
    message = str(err.value)
    assert str(tmp_path / "resnext3d" / "resnext-101-kinetics.pth") in message
    assert "kenshohara/3D-ResNets-PyTorch" in message and "--random-init" in message


def test_resnext101_has_haras_state_dict_keys_and_shapes():
    """Key names and shapes of Hara's resnext.py (resnet101: [3, 4, 23, 3], cardinality 32)."""
    with torch.device("meta"):
        model = build_network(SIZES["101"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7, 7)
    assert shapes["layer1.0.conv1.weight"] == (128, 64, 1, 1, 1)
    assert shapes["layer1.0.conv2.weight"] == (128, 4, 3, 3, 3)  # 32 groups of 4
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1, 1)
    assert shapes["layer3.22.conv2.weight"] == (512, 16, 3, 3, 3)
    assert shapes["layer4.2.conv3.weight"] == (2048, 1024, 1, 1, 1)
    assert shapes["layer4.0.downsample.1.running_var"] == (2048,)
    assert "layer3.23.conv1.weight" not in shapes and "layer2.1.downsample.0.weight" not in shapes
    # stem 6 + 33 blocks x (3 convs + 3 batch norms x 5) + 4 projections x 6
    assert len(shapes) == 6 + 33 * 18 + 4 * 6


def test_real_video_clips(real_data):
    from vdial.extract.decode import read_frames

    enc = build_resnext3d("tiny", random_init=True, max_clips=6)
    decoded = read_frames(real_data / "videos" / "CGRUM.mp4", enc.frame_indices)
    assert decoded.num_frames // 4 > 6  # more clips than kept: they are spread
    units = enc.preprocess(decoded.frames)
    with torch.inference_mode():
        rows, extras = enc.to_rows(list(enc.encode(units)), decoded.timestamps, decoded.indices)
    assert rows.shape == (6, 1, 512) and np.isfinite(rows).all()
    starts = extras["frame_indices"]
    assert (starts % 4 == 0).all() and (np.diff(starts) > 4).all()
    np.testing.assert_allclose(extras["timestamps"], starts / decoded.fps, atol=0.05)


@pytest.mark.slow
def test_resnext101_random_clip():
    enc = build_resnext3d("101", random_init=True, spatial_map=True)
    assert enc.spec.clip_len == 16 and enc.spec.input_size == 112 and enc.spec.grid == (4, 4)
    units = enc.preprocess(frames(16, 120, 160))
    assert units.shape == (1, 3, 16, 112, 112)
    with torch.inference_mode():
        out = enc.encode(units)
    assert out.shape == (1, 1, 16, 2048) and torch.isfinite(out).all()
