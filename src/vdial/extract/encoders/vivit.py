"""ViViT-B/16x2 (Kinetics-400) through transformers' `VivitModel`, one 32-frame clip per unit.

What the papers do: MERV (`vivit-google-b-all-no-cls-16frames`) runs
`google/vivit-b-16x2-kinetics400` on 32 frames at 224 px and keeps `last_hidden_state` (the
output of the 12th and last block after the final LayerNorm: the checkpoint is a supervised
Kinetics classifier whose head reads that normed state, and there is no penultimate-layer
convention for it as there is for CLIP-style towers) without the CLS token, as
16 temporal x 14 x 14 tubelet tokens of width 768. A tubelet spans 2 frames, so one clip gives
16 stored rows, each stamped with its first frame. The CLS token summarises the whole clip; when
kept it is repeated at the front of each of the clip's rows.

Preprocessing is `VivitImageProcessor` with its defaults (which the checkpoint's
`preprocessor_config.json` repeats): PIL bilinear resize of the short side to 256 (long side
truncated), centre crop 224 (offsets floored), rescale by 1/127.5 with offset (x/127.5 - 1),
then normalise with mean = std = 0.5. The two steps compose to (x/255 - 0.75) / 0.25, which is
what the spec records as mean/std; the range is [-3, 1], not [-1, 1]. MERV's own torchvision
pipeline skips the offset (giving [-1, 1]) and by default squashes frames to 224x224 instead of
cropping; we follow the library's processor, the checkpoint's documented usage.

Source of truth: transformers `models/vivit` (modeling and image processing) and MERV's
`merv/models/backbones/video/vivit.py`. Checkpoints load from a local directory in the HF layout
(`config.json` + `model.safetensors` or `pytorch_model.bin`), including the hub file's legacy
ViT-style key names (`vivit.encoder.layer.N.attention.attention.query`), which transformers'
loader renames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vdial.extract.encoders.base import WEIGHTS_ENV, Encoder, EncoderSpec, WeightsError, file_digest

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # transformers' order of preference
# VivitImageProcessor: x * (1/127.5) - 1, then (x - 0.5) / 0.5  ==  (x/255 - 0.75) / 0.25
PROCESSOR_MEAN = (0.75, 0.75, 0.75)
PROCESSOR_STD = (0.25, 0.25, 0.25)
# config fields that fix the architecture and the token grid; a checkpoint must agree on them
ARCH_FIELDS = (
    "image_size",
    "num_frames",
    "tubelet_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


@dataclass(frozen=True, kw_only=True)
class VivitSize:
    """One registered size of the family."""

    config: dict[str, Any]  # VivitConfig fields (image_size, num_frames = clip length, ...)
    resize_short: int  # short side before the centre crop (processor's size["shortest_edge"])
    frames: int  # default frames per video (a multiple of the clip length)
    directory: str  # checkpoint directory looked for under $VDIAL_WEIGHTS/vivit/
    source: str  # where the papers' weights come from


SIZES: dict[str, VivitSize] = {
    "base": VivitSize(
        config={
            "image_size": 224,
            "num_frames": 32,
            "tubelet_size": [2, 16, 16],
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "hidden_act": "gelu_fast",
            "layer_norm_eps": 1e-6,
        },
        resize_short=256,
        frames=32,
        directory="vivit-b-16x2-kinetics400",
        source="HF google/vivit-b-16x2-kinetics400 (config.json + pytorch_model.bin), as MERV",
    ),
    "tiny": VivitSize(
        config={
            "image_size": 32,
            "num_frames": 4,
            "tubelet_size": [2, 8, 8],
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "hidden_act": "gelu_fast",
            "layer_norm_eps": 1e-6,
        },
        resize_short=36,
        frames=8,
        directory="vivit-tiny",
        source="none: a test size (2 layers, dim 32, 4-frame clips); --random-init, or a saved dir",
    ),
}


def processor_pixels(
    frames: np.ndarray,
    *,
    resize_short: int,
    crop: int,
    mean: tuple[float, ...] = PROCESSOR_MEAN,
    std: tuple[float, ...] = PROCESSOR_STD,
) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, crop, crop], as `VivitImageProcessor` computes it.

    The resize goes through PIL on uint8, as the processor's does, so the pixels match exactly.
    """
    import torch
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    if h <= w:
        new_h, new_w = resize_short, int(resize_short * w / h)
    else:
        new_h, new_w = int(resize_short * h / w), resize_short
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    resized = np.stack(
        [np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BILINEAR)) for f in frames]
    )
    x = torch.from_numpy(resized[:, top : top + crop, left : left + crop]).permute(0, 3, 1, 2)
    x = x.float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class VivitEncoder(Encoder):
    """Clips of `clip_len` frames -> [B, clip_len / 2 rows, (CLS +) H'*W' tokens, D]."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, weights: str, resize_short: int):
        super().__init__(spec, model, weights)
        self.resize_short = resize_short

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> clips [T / clip_len, clip_len, 3, S, S] (VivitModel's layout)."""
        clip = self.spec.clip_len
        if len(frames) % clip:
            raise ValueError(f"vivit needs a multiple of {clip} frames, got {len(frames)}")
        size = self.spec.input_size
        spec = self.spec
        x = processor_pixels(
            frames, resize_short=self.resize_short, crop=size, mean=spec.mean, std=spec.std
        )
        return x.reshape(-1, clip, 3, size, size)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        tokens = self.model(pixel_values=batch).last_hidden_state
        rows = self.spec.clip_len // self.spec.frames_per_row
        cls, patches = tokens[:, :1], tokens[:, 1:]
        # the tubelet conv's output is flattened (time, height, width): time is the slowest axis
        patches = patches.reshape(len(batch), rows, -1, tokens.shape[-1])
        if not self.spec.keep_prefix_tokens:
            return patches
        cls = cls.unsqueeze(1).expand(-1, rows, -1, -1)
        return torch.cat([cls, patches], dim=2)


def find_checkpoint(size: str) -> Path:
    """The size's checkpoint directory under $VDIAL_WEIGHTS/vivit/, or explain what is missing."""
    cfg = SIZES[size]
    root = os.environ.get(WEIGHTS_ENV)
    if root:
        path = Path(root) / "vivit" / cfg.directory
        if (path / "config.json").is_file():
            return path
        where = str(path)
    else:
        where = f"${WEIGHTS_ENV}/vivit/{cfg.directory} (unset)"
    raise WeightsError(
        f"no checkpoint for vivit:{size}: expected a directory with config.json and one of "
        f"{list(WEIGHT_FILES)} at {where}. Source: {cfg.source}. "
        f"Pass --weights PATH, set {WEIGHTS_ENV}, or use --random-init."
    )


def weights_file(directory: Path, family: str) -> Path:
    """The single weights file of an HF checkpoint directory (safetensors preferred)."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise WeightsError(f"{directory} has no {' or '.join(WEIGHT_FILES)} for {family}")


def _load(size: str, path: Path) -> tuple[torch.nn.Module, str]:
    import torch
    from transformers import VivitConfig, VivitModel

    directory = path if path.is_dir() else path.parent
    if not (directory / "config.json").is_file():
        raise WeightsError(f"vivit:{size} checkpoint not found: {directory}/config.json")
    file = weights_file(directory, f"vivit:{size}")
    config = VivitConfig.from_pretrained(directory)
    expected = SIZES[size].config
    wrong = {
        k: getattr(config, k)
        for k in ARCH_FIELDS
        if list(np.atleast_1d(getattr(config, k))) != list(np.atleast_1d(expected[k]))
    }
    if wrong:
        raise WeightsError(f"{directory} does not fit vivit:{size}: config has {wrong}")
    try:
        model, info = VivitModel.from_pretrained(
            directory,
            config=config,
            add_pooling_layer=False,  # MERV too: the pooler is a classifier-training leftover
            dtype=torch.float32,
            local_files_only=True,
            use_safetensors=file.suffix == ".safetensors",
            output_loading_info=True,
        )
    except RuntimeError as err:  # shape mismatch
        raise WeightsError(f"{file} does not fit vivit:{size}: {err}") from err
    if info["missing_keys"] or info["mismatched_keys"]:
        missing = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
        raise WeightsError(f"{file} does not fit vivit:{size}: missing or mismatched {missing}")
    return model, file_digest(file)


def build_vivit(
    size: str = "base",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int | None = None,
    keep_prefix_tokens: bool = False,
) -> VivitEncoder:
    """ViViT-B/16x2 from a local HF checkpoint directory (or seeded random weights)."""
    import torch
    from transformers import VivitConfig, VivitModel

    if size not in SIZES:
        raise KeyError(f"unknown vivit size {size!r}; known: {sorted(SIZES)}")
    cfg = SIZES[size]
    clip_len = cfg.config["num_frames"]
    frames = cfg.frames if frames is None else frames
    if frames <= 0 or frames % clip_len:
        raise ValueError(f"vivit:{size} takes clips of {clip_len} frames; frames={frames}")
    if random_init:
        torch.manual_seed(seed)
        model = VivitModel(VivitConfig(**cfg.config), add_pooling_layer=False)
        provenance = f"random:{seed}"
    else:
        model, provenance = _load(size, Path(weights) if weights else find_checkpoint(size))
    config = model.config
    tubelet_t, patch_h, patch_w = config.tubelet_size
    spec = EncoderSpec(
        name="vivit",
        size=size,
        architecture="transformers VivitModel (ViViT-B/16x2, joint space-time attention)",
        weights_source=cfg.source,
        input_size=config.image_size,
        mean=PROCESSOR_MEAN,
        std=PROCESSOR_STD,
        interpolation="bilinear",
        frames=frames,
        sampling="uniform-segment-middle",
        layer=(
            f"last_hidden_state: block {config.num_hidden_layers} of {config.num_hidden_layers} "
            "after the final LayerNorm (MERV)"
        ),
        keep_prefix_tokens=keep_prefix_tokens,
        grid=(config.image_size // patch_h, config.image_size // patch_w),
        dim=config.hidden_size,
        prefix_tokens=1,
        clip_len=clip_len,
        frames_per_row=tubelet_t,
    )
    return VivitEncoder(spec, model, provenance, cfg.resize_short)
