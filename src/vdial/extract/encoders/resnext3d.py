"""3D ResNeXt-101 (Hara et al.) over 16-frame clips, written by hand in torch.nn.

What the papers use: Hara, Kataoka and Satoh's Kinetics-400 ResNeXt-101 (CVPR 2018;
kenshohara/3D-ResNets-PyTorch `models/resnext.py`, cardinality 32, shortcut B, checkpoint
`resnext-101-kinetics.pth` = `{'arch': 'resnext-101', 'state_dict': {'module.conv1.weight', ...}}`)
run as the feature mode of kenshohara/video-classification-3d-cnn-pytorch, which is the source
of truth here: every frame at the source rate, non-overlapping 16-frame clips, each frame scaled
(PIL bilinear) to a short side of 112 with the long side floored, centre-cropped to 112 (offset
rounded), kept on the 0-255 scale minus the ActivityNet mean [114.7748, 107.7354, 99.4750] and
not divided by a std, and one 2048-d vector per clip after the global average pool (no fc).

Where vdial differs: upstream decodes through JPEG files first (we resize the decoded frames
directly, with torchvision's PIL-matching uint8 antialiased resize) and its clip loop
`range(1, n - 16 + 1, 16)` drops the last full clip when n is a multiple of 16 (so a video of
16 frames or fewer yields nothing); here every full clip is kept, at most `max_clips` of them
(spread uniformly) so memory stays bounded, and a video shorter than one clip gives one clip
padded with its last frame (vdial's clip plan, `sampling.clip_indices`). As an option the
pre-pool layer4 map is kept instead (4x4 at 112 px; its temporal size is 1).

The network is not in any library, so it is written here with Hara's module names: his state
dict loads after stripping DataParallel's `module.` prefix; the Kinetics classifier (`fc.*`)
is not built and its weights are skipped.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vdial.extract.encoders.base import (
    Encoder,
    EncoderSpec,
    WeightsError,
    file_digest,
    find_weights,
)
from vdial.extract.sampling import clip_indices, uniform_indices

if TYPE_CHECKING:
    import torch

HARA_MEAN = (114.7748, 107.7354, 99.4750)  # ActivityNet RGB mean on 0-255 pixels (mean.py)
EXPANSION = 2  # bottleneck output channels = 2 * planes (Hara's ResNeXtBottleneck.expansion)
HARA_SOURCE = (
    "kenshohara/3D-ResNets-PyTorch pretrained models (Google Drive folder "
    "1zvl89AgFAApbH0At-gMuZSeQB_LpNP-M): resnext-101-kinetics.pth "
    "(--model resnext --model_depth 101 --resnet_shortcut B --resnext_cardinality 32)"
)


@dataclass(frozen=True, kw_only=True)
class ResNeXt3dSize:
    """One registered size of the family."""

    layers: tuple[int, int, int, int]  # bottleneck blocks per stage (layer1..layer4)
    stem: int  # conv1 output channels
    planes: tuple[int, int, int, int]  # Hara's per-stage `planes` (multiples of 32)
    cardinality: int  # groups of the 3x3x3 conv; its width is cardinality * (planes // 32)
    input_size: int  # frame side after scale + centre crop (Hara's sample_size)
    clip_len: int  # frames per clip (Hara's sample_duration)
    arch: str  # the checkpoint's 'arch' field, checked when present
    checkpoints: tuple[str, ...]  # file names looked for under $VDIAL_WEIGHTS/resnext3d/
    source: str  # where the papers' weights come from

    @property
    def dim(self) -> int:
        return self.planes[-1] * EXPANSION

    @property
    def grid(self) -> int:
        # conv1, maxpool and the three strided stages each halve the side, rounding up
        return -(-self.input_size // 32)


SIZES: dict[str, ResNeXt3dSize] = {
    "101": ResNeXt3dSize(
        layers=(3, 4, 23, 3),
        stem=64,
        planes=(128, 256, 512, 1024),
        cardinality=32,
        input_size=112,
        clip_len=16,
        arch="resnext-101",
        checkpoints=("resnext-101-kinetics.pth",),
        source=HARA_SOURCE,
    ),
    "tiny": ResNeXt3dSize(
        layers=(1, 1, 1, 1),
        stem=8,
        planes=(32, 64, 128, 256),
        cardinality=4,
        input_size=64,
        clip_len=4,
        arch="resnext-tiny",
        checkpoints=("resnext-tiny.pth",),
        source="none: a test size (1 block per stage, 4 groups); --random-init or a saved file",
    ),
}


@functools.cache
def _bottleneck_class() -> type:
    """Hara's ResNeXtBottleneck; defined on first use so importing the registry skips torch."""
    from torch import nn

    class Bottleneck(nn.Module):
        """1x1x1 reduce, grouped 3x3x3 (carries the stride), 1x1x1 expand, plus the shortcut."""

        def __init__(self, inplanes: int, planes: int, cardinality: int, stride: int) -> None:
            super().__init__()
            mid = cardinality * (planes // 32)
            out = planes * EXPANSION
            self.conv1 = nn.Conv3d(inplanes, mid, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm3d(mid)
            self.conv2 = nn.Conv3d(
                mid, mid, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False
            )
            self.bn2 = nn.BatchNorm3d(mid)
            self.conv3 = nn.Conv3d(mid, out, kernel_size=1, bias=False)
            self.bn3 = nn.BatchNorm3d(out)
            self.relu = nn.ReLU(inplace=True)
            # shortcut type B: a projection only where the shape changes, identity elsewhere
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(
                    nn.Conv3d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(out),
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shortcut = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + shortcut)

    return Bottleneck


def build_network(cfg: ResNeXt3dSize) -> torch.nn.Sequential:
    """The trunk up to layer4, [B, 3, T, S, S] -> [B, dim, T', S', S'], with Hara's key names.

    Children are named as his attributes (conv1, bn1, layer1.0.conv2, layer1.0.downsample.0,
    ...), so his state dict (minus `module.` and `fc.`) loads as is. Random init follows his
    code: Kaiming normal (fan out) convolutions, unit-scale batch norms.
    """
    from collections import OrderedDict

    from torch import nn

    block = _bottleneck_class()
    children: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv3d(3, cfg.stem, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False),
        bn1=nn.BatchNorm3d(cfg.stem),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
    )
    inplanes = cfg.stem
    for stage, (blocks, planes) in enumerate(zip(cfg.layers, cfg.planes, strict=True)):
        stride = 1 if stage == 0 else 2
        stage_blocks = [block(inplanes, planes, cfg.cardinality, stride)]
        inplanes = planes * EXPANSION
        stage_blocks += [block(inplanes, planes, cfg.cardinality, 1) for _ in range(blocks - 1)]
        children[f"layer{stage + 1}"] = nn.Sequential(*stage_blocks)
    model = nn.Sequential(children)
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def load_hara_checkpoint(model: torch.nn.Module, path: Path, size: str) -> None:
    """Load `{'arch', 'state_dict': {'module.…'}}` (or a bare state dict) into `model`."""
    import torch

    cfg = SIZES[size]
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise WeightsError(f"{path} is not a readable torch checkpoint: {err}") from err
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a state dict")
    arch = ckpt.get("arch")
    if arch is not None and arch != cfg.arch:
        raise WeightsError(f"{path} holds {arch!r}, but resnext3d:{size} is {cfg.arch!r}")
    state = ckpt.get("state_dict", ckpt)
    # DataParallel's prefix goes; the Kinetics classifier is not part of the feature trunk
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # key or shape mismatch
        raise WeightsError(f"{path} does not fit resnext3d:{size}: {err}") from err


class ResNeXt3dEncoder(Encoder):
    """One row per clip: the layer4 map average-pooled (Hara's feature mode) or kept as a grid."""

    def __init__(self, spec: EncoderSpec, model, weights: str, *, max_clips: int) -> None:
        super().__init__(spec, model, weights)
        self.max_clips = max_clips

    def frame_indices(self, num_frames: int, fps: float) -> np.ndarray:
        """Consecutive non-overlapping clips at the source rate, at most `max_clips` of them."""
        del fps  # clips are taken at the source frame rate, whatever it is
        length = self.spec.clip_len
        clips = clip_indices(num_frames, length, length)  # [clips, L], every full clip
        if len(clips) > self.max_clips:
            clips = clips[uniform_indices(len(clips), self.max_clips)]
        return clips.reshape(-1)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> clips float [T // clip_len, 3, clip_len, S, S] on 0-255 - mean."""
        import torch
        from torchvision.transforms.v2 import functional as TF

        length, size = self.spec.clip_len, self.spec.input_size
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        if len(frames) == 0 or len(frames) % length:
            raise ValueError(f"expected a positive multiple of {length} frames, got {len(frames)}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        # uint8 in, uint8 out: torchvision's antialiased bilinear matches PIL's resize, and
        # its short-side rule (long side floored) and crop offset (rounded) are Hara's
        x = TF.resize(x, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        x = TF.center_crop(x, [size, size])
        x = x.float() - torch.tensor(HARA_MEAN).view(1, 3, 1, 1)
        return x.view(-1, length, 3, size, size).transpose(1, 2).contiguous()

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Clips [B, 3, L, S, S] -> [B, 1 row, tokens, dim]."""
        fmap = self.model(batch).mean(dim=2)  # T' = ceil(L / 16) = 1: Hara's pool covers it
        if self.spec.grid == (1, 1):
            tokens = fmap.mean(dim=(2, 3))[:, None]
        else:
            tokens = fmap.flatten(2).transpose(1, 2)
        return tokens[:, None]


def find_checkpoint(size: str) -> Path:
    """Look for the size's checkpoint under $VDIAL_WEIGHTS/resnext3d/, or explain what's missing."""
    cfg = SIZES[size]
    return find_weights("resnext3d", size, cfg.checkpoints, cfg.source)


def build_resnext3d(
    size: str = "101",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    max_clips: int = 32,
    frames: int | None = None,
    spatial_map: bool = False,
) -> ResNeXt3dEncoder:
    """Build the encoder; `frames` (the runner's per-video budget) sets max_clips = frames // L.

    `spatial_map` keeps layer4's (H', W') grid per clip instead of its average.
    """
    import torch

    if size not in SIZES:
        raise KeyError(f"unknown resnext3d size {size!r}; known: {sorted(SIZES)}")
    cfg = SIZES[size]
    if frames is not None:
        max_clips = frames // cfg.clip_len
    if max_clips < 1:
        raise ValueError(
            f"resnext3d:{size} needs at least one {cfg.clip_len}-frame clip per video; "
            f"got max_clips={max_clips} (frames={frames})"
        )
    if random_init:
        torch.manual_seed(seed)
        model = build_network(cfg)
        provenance = f"random:{seed}"
    else:
        path = Path(weights) if weights is not None else find_checkpoint(size)
        if not path.is_file():
            raise WeightsError(f"resnext3d:{size} checkpoint not found: {path}. {cfg.source}")
        model = build_network(cfg)
        load_hara_checkpoint(model, path, size)
        provenance = file_digest(path)
    grid = (cfg.grid, cfg.grid) if spatial_map else (1, 1)
    pooled = "kept as a grid (time averaged; T' = 1)" if spatial_map else "average-pooled"
    spec = EncoderSpec(
        name="resnext3d",
        size=size,
        architecture=f"3D {cfg.arch} (Hara et al.), cardinality {cfg.cardinality}, shortcut B",
        weights_source=cfg.source,
        input_size=cfg.input_size,
        # Hara subtracts the mean from 0-255 pixels and divides by 1: on the 0-1 scale that
        # is mean / 255 and std 1 / 255
        mean=tuple(m / 255 for m in HARA_MEAN),
        std=(1 / 255,) * 3,
        interpolation="bilinear",
        frames=max_clips * cfg.clip_len,
        sampling=(
            f"non-overlapping {cfg.clip_len}-frame clips at the source frame rate "
            f"(stack {cfg.clip_len}, step {cfg.clip_len}); at most {max_clips} clips, spread "
            "uniformly; a shorter video pads one clip with its last frame"
        ),
        layer=f"layer4 output {pooled}, before fc",
        keep_prefix_tokens=False,
        grid=grid,
        dim=cfg.dim,
        clip_len=cfg.clip_len,
        frames_per_row=cfg.clip_len,
    )
    return ResNeXt3dEncoder(spec, model, provenance, max_clips=max_clips)
