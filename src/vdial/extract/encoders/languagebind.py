"""LanguageBind video tower (`LanguageBind_Video_merge`): CLIP ViT-L/14 plus temporal attention.

What the papers do: LanguageBind's video encoder is OpenCLIP-style ViT-L/14 whose every encoder
layer first mixes each spatial token (CLS included) across the frames of a clip: a learned
temporal position embedding is added to every token of frame j, then a pre-LayerNorm temporal
self-attention with a residual, then the usual spatial CLIP block. The checkpoint is trained on
8 frames. MERV (`languagebind-video-noclass`) feeds 16 frames, keeps `hidden_states[-2]` (the
output of layer 23 of 24, the LLaVA/Video-LLaVA convention; no post-LayerNorm) and drops the
CLS token: 16 rows of 16 x 16 tokens of width 1024. Upstream groups frames for the temporal
attention by the checkpoint's `num_frames` (`'(b t) n d -> (b n) t d'` with t = 8), so MERV's
16 frames are two independent 8-frame groups; we reproduce that grouping. One unit is all the
frames of a video (`clip_len` = frames), rows are frames; the CLS token, when kept, is each row's
first token.

Frames are sampled as upstream's decord path does (`np.linspace(0, n - 1, frames)`, truncated),
scaled to 0..1, normalised with OpenAI-CLIP mean/std, short side scaled to 224 (bilinear, no
antialias, long side floored), centre cropped (offsets rounded). That is MERV's
`get_video_transform`; upstream LanguageBind uses a random crop, and both add a random
horizontal flip even at inference, which we leave out so features are deterministic.

Source of truth: PKU-YuanGroup/LanguageBind `languagebind/video/modeling_video.py` and
`processing_video.py`; MERV `merv/models/backbones/video/languagebind/`. Checkpoints load from a
local directory in the HF layout of `LanguageBind/LanguageBind_Video_merge` (`config.json` with
a `vision_config` + `pytorch_model.bin` or `model.safetensors`): only the `vision_model.*` keys
are read, the text tower and projections are ignored. The spatial blocks are transformers'
`CLIPEncoderLayer`; only the temporal part is written here.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vdial.extract.encoders.base import WEIGHTS_ENV, Encoder, EncoderSpec, WeightsError, file_digest

if TYPE_CHECKING:
    import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREFIX = "vision_model."  # upstream `LanguageBindVideo.vision_model`
# vision_config fields that fix the architecture and the token grid
ARCH_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "num_frames",
)


@dataclass(frozen=True, kw_only=True)
class LanguageBindSize:
    """One registered size of the family."""

    vision_config: dict[str, Any]  # upstream vision_config; num_frames = temporal group length
    frames: int  # default frames per video (MERV: 16, a multiple of num_frames)
    directory: str  # checkpoint directory looked for under $VDIAL_WEIGHTS/languagebind/
    source: str  # where the papers' weights come from


SIZES: dict[str, LanguageBindSize] = {
    "large": LanguageBindSize(
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "num_frames": 8,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
        },
        frames=16,
        directory="LanguageBind_Video_merge",
        source="HF LanguageBind/LanguageBind_Video_merge (config.json + pytorch_model.bin) as MERV",
    ),
    "tiny": LanguageBindSize(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 56,
            "patch_size": 14,
            "num_frames": 2,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
        },
        frames=4,
        directory="LanguageBind_Video_tiny",
        source="none: a test size (2 layers, dim 32, 2-frame groups); --random-init or a saved dir",
    ),
}


@functools.cache
def _tower_class() -> type:
    """Build the module classes on first use: torch and transformers load only when needed."""
    import torch
    from torch import nn
    from transformers.models.clip.modeling_clip import (
        CLIPAttention,
        CLIPEncoderLayer,
        CLIPVisionEmbeddings,
    )

    class TemporalCLIPEncoderLayer(CLIPEncoderLayer):
        """transformers' CLIP block preceded by LanguageBind's temporal attention (same names)."""

        def __init__(self, config, frames: int) -> None:
            super().__init__(config)
            self.t = frames
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, config.hidden_size))
            nn.init.normal_(self.temporal_embedding, std=config.hidden_size**-0.5)
            self.temporal_attn = CLIPAttention(config)
            self.temporal_layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

        def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
            t = self.t
            bt, n, d = hidden_states.shape
            x = hidden_states.reshape(bt // t, t, n, d)
            if t != 1:  # as upstream: no temporal embedding for a 1-frame config
                x = x + self.temporal_embedding[:, :t].unsqueeze(2)
            # attend over the t frames of each (group, token): [(g n), t, d]
            y = x.transpose(1, 2).reshape(-1, t, d)
            y, _ = self.temporal_attn(self.temporal_layer_norm1(y))
            x = x + y.view(bt // t, n, t, d).transpose(1, 2)
            return super().forward(x.reshape(bt, n, d), attention_mask, **kwargs)

    class LanguageBindVisionTower(nn.Module):
        """`LanguageBindVideo.vision_model` with its state-dict names, minus `vision_model.`."""

        def __init__(self, config, frames: int) -> None:
            super().__init__()
            self.config = config
            self.embeddings = CLIPVisionEmbeddings(config)
            self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            layers = [
                TemporalCLIPEncoderLayer(config, frames) for _ in range(config.num_hidden_layers)
            ]
            self.encoder = nn.ModuleDict({"layers": nn.ModuleList(layers)})
            # never run (the tap is before it) but part of the checkpoint, so loading stays strict
            self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

        def forward(self, frames: torch.Tensor, depth: int) -> torch.Tensor:
            """[B*T, 3, S, S] (groups of `t` consecutive frames) -> tokens after `depth` layers."""
            hidden = self.pre_layrnorm(self.embeddings(frames))
            for layer in self.encoder.layers[:depth]:
                hidden = layer(hidden, None)
            return hidden

    return LanguageBindVisionTower


def short_side_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[T, 3, H, W] float -> [T, 3, size, size]: pytorchvideo ShortSideScale + CenterCropVideo."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if w < h:
        new_h, new_w = int(np.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(np.floor(w / h * size))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


class LanguageBindEncoder(Encoder):
    """All frames of a video in one unit -> [B, T, (CLS +) H'*W' tokens, D] at hidden_states[-2]."""

    def frame_indices(self, num_frames: int, fps: float) -> np.ndarray:
        del fps  # upstream samples by frame count only
        if num_frames <= 0:
            raise ValueError(f"cannot sample from {num_frames} frames")
        return np.linspace(0, num_frames - 1, self.spec.frames, dtype=np.int64)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> one unit [1, T, 3, S, S] (T a multiple of the group length)."""
        import torch

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        if len(frames) != self.spec.clip_len:
            raise ValueError(f"languagebind needs {self.spec.clip_len} frames, got {len(frames)}")
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        # normalise before resizing, as upstream does (equal up to rounding: both are linear)
        x = (x - torch.tensor(self.spec.mean).view(1, 3, 1, 1)) / torch.tensor(self.spec.std).view(
            1, 3, 1, 1
        )
        return short_side_crop(x, self.spec.input_size).unsqueeze(0)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        b, t = batch.shape[:2]
        depth = len(self.model.encoder.layers) - 1  # hidden_states[-2]: the later layer never runs
        tokens = self.model(batch.flatten(0, 1), depth)
        tokens = tokens.view(b, t, *tokens.shape[1:])
        return tokens if self.spec.keep_prefix_tokens else tokens[:, :, 1:]


def find_checkpoint(size: str) -> Path:
    """The size's checkpoint directory under $VDIAL_WEIGHTS/languagebind/, or what is missing."""
    cfg = SIZES[size]
    root = os.environ.get(WEIGHTS_ENV)
    if root:
        path = Path(root) / "languagebind" / cfg.directory
        if (path / "config.json").is_file():
            return path
        where = str(path)
    else:
        where = f"${WEIGHTS_ENV}/languagebind/{cfg.directory} (unset)"
    raise WeightsError(
        f"no checkpoint for languagebind:{size}: expected a directory with config.json and one "
        f"of {list(WEIGHT_FILES)} at {where}. Source: {cfg.source}. "
        f"Pass --weights PATH, set {WEIGHTS_ENV}, or use --random-init."
    )


def vision_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Upstream `LanguageBindVideo` keys -> tower keys: keep `vision_model.*`, drop the prefix.

    `embeddings.position_ids` is a buffer older transformers saved; it is recomputed.
    """
    out = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    out.pop("embeddings.position_ids", None)
    return out


def _read_checkpoint(size: str, path: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(vision_config, tower state dict, weights file) of a checkpoint directory."""
    import torch

    directory = path if path.is_dir() else path.parent
    if not (directory / "config.json").is_file():
        raise WeightsError(f"languagebind:{size} checkpoint not found: {directory}/config.json")
    vision = json.loads((directory / "config.json").read_text()).get("vision_config")
    if not vision or not vision.get("add_time_attn"):
        raise WeightsError(
            f"{directory}/config.json has no vision_config with add_time_attn: not a LanguageBind "
            "video checkpoint"
        )
    expected = SIZES[size].vision_config
    wrong = {k: vision.get(k) for k in ARCH_FIELDS if vision.get(k) != expected[k]}
    if wrong:
        raise WeightsError(f"{directory} does not fit languagebind:{size}: config has {wrong}")
    file = next((directory / n for n in WEIGHT_FILES if (directory / n).is_file()), None)
    if file is None:
        raise WeightsError(f"{directory} has no {' or '.join(WEIGHT_FILES)} for languagebind")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(file)
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    return vision, vision_state_dict(state), file


def build_languagebind(
    size: str = "large",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int | None = None,
    keep_prefix_tokens: bool = False,
) -> LanguageBindEncoder:
    """The LanguageBind video tower from a local HF checkpoint directory (or seeded random)."""
    import torch
    from transformers import CLIPVisionConfig

    if size not in SIZES:
        raise KeyError(f"unknown languagebind size {size!r}; known: {sorted(SIZES)}")
    cfg = SIZES[size]
    vision = cfg.vision_config
    if not random_init:
        path = Path(weights) if weights else find_checkpoint(size)
        vision, state, file = _read_checkpoint(size, path)
    group = vision["num_frames"]
    frames = cfg.frames if frames is None else frames
    if frames <= 0 or frames % group:
        raise ValueError(f"languagebind:{size} attends over groups of {group} frames; {frames=}")
    config = CLIPVisionConfig(
        **{k: vision[k] for k in ARCH_FIELDS if k != "num_frames"},
        hidden_act=vision.get("hidden_act", "quick_gelu"),  # upstream's defaults when absent
        layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
        attn_implementation="sdpa",
    )
    if random_init:
        torch.manual_seed(seed)
    model = _tower_class()(config, group)
    if random_init:
        provenance = f"random:{seed}"
    else:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:  # missing, unexpected or misshapen keys
            raise WeightsError(f"{file} does not fit languagebind:{size}: {err}") from err
        provenance = file_digest(file)
    grid = config.image_size // config.patch_size
    spec = EncoderSpec(
        name="languagebind",
        size=size,
        architecture="LanguageBindVideo vision tower: CLIP ViT/14 + per-layer temporal attention",
        weights_source=cfg.source,
        input_size=config.image_size,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        interpolation="bilinear",
        frames=frames,
        sampling="linspace-inclusive (np.linspace(0, n-1, frames), truncated; upstream decord)",
        layer=(
            f"hidden_states[-2]: output of layer {config.num_hidden_layers - 1} of "
            f"{config.num_hidden_layers}, no post-LayerNorm; temporal groups of {group} frames"
        ),
        keep_prefix_tokens=keep_prefix_tokens,
        grid=(grid, grid),
        dim=config.hidden_size,
        prefix_tokens=1,
        clip_len=frames,
    )
    return LanguageBindEncoder(spec, model, provenance)
