"""EVA-CLIP ViT-g/14 as BLIP-2 and V2Dial run it (LAVIS `create_eva_vit_g`), built from timm's Eva.

What the papers do (source of truth: salesforce/LAVIS `lavis/models/eva_vit.py` and
`lavis/processors/blip_processors.py`; adnenabdessaied/V2Dial `models/v2dial.py`):
- LAVIS builds the EVA-CLIP-g tower (patch 14, dim 1408, 16 heads, MLP 6144, LayerNorm eps 1e-6,
  q/v biases with a fixed zero k bias) with `depth=39` where EVA-CLIP-g has 40 blocks, and loads
  `eva_vit_g.pth` with `strict=False`: the last block is never run and there is no final norm.
  The output is the second-to-last block of EVA-CLIP-g, 257 tokens x 1408 at 224 px (CLS first).
- BLIP-2's `blip_image_eval` squashes the frame to 224x224 (bicubic, no crop, aspect not kept)
  and normalises with the OpenAI-CLIP mean/std. V2Dial resizes the same way but its
  `BlipImageBaseProcessor` normalises with the ImageNet mean/std instead; `normalisation`
  selects either (default: the stats EVA-CLIP was trained with).
- V2Dial applies its own `ln_vision` LayerNorm (BLIP-2 weights, not in `eva_vit_g.pth`) and
  then drops the CLS token; we store the tower's output before `ln_vision`, CLS dropped unless
  `keep_prefix_tokens`.

The model is timm's `eva_giant_patch14_clip_224` (same geometry) pruned to the first 39 blocks
with the final norm and head removed, so the pruned model's keys are exactly LAVIS's.
`convert_state_dict` accepts `eva_vit_g.pth`, a whole BLIP-2/V2Dial checkpoint
(`visual_encoder.*`) and timm/open_clip EVA checkpoints, and drops what LAVIS does not use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdial.extract.encoders.base import (
    Encoder,
    EncoderSpec,
    WeightsError,
    file_digest,
    find_weights,
)

if TYPE_CHECKING:
    import torch

# name -> (mean, std); EVA-CLIP/BLIP-2 use OpenAI-CLIP's, V2Dial's processor ImageNet's
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "openai-clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
PATCH = 14
# upstream parts LAVIS never runs: the final norm and heads (the last block is handled by index)
_UNUSED_PREFIXES = ("norm.", "fc_norm.", "head.")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
_BLIP2_PREFIX = "visual_encoder."  # the tower inside a BLIP-2 / V2Dial model checkpoint


@dataclass(frozen=True, kw_only=True)
class EvaClipSize:
    """One registered size of the family."""

    architecture: str  # timm architecture name (the full upstream depth)
    input_size: int  # frame side after the squash resize
    checkpoints: tuple[str, ...]  # file names looked for under $VDIAL_WEIGHTS/eva-clip/
    source: str  # where the papers' weights come from
    overrides: dict[str, Any] = field(default_factory=dict)  # timm kwargs (tiny test size)


SIZES: dict[str, EvaClipSize] = {
    "giant": EvaClipSize(
        architecture="eva_giant_patch14_clip_224",
        input_size=224,
        checkpoints=("eva_vit_g.pth", "model.safetensors"),
        source="https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/"
        "eva_vit_g.pth (LAVIS/BLIP-2/V2Dial), or a timm/open_clip EVA01-CLIP-g/14 checkpoint",
    ),
    "tiny": EvaClipSize(
        architecture="eva_giant_patch14_clip_224",
        input_size=56,
        checkpoints=("eva_clip_tiny.pth",),
        source="none: a test size (3 blocks, 2 run, dim 32); --random-init, or a file you saved",
        overrides={"embed_dim": 32, "depth": 3, "num_heads": 2},
    ),
}


class EvaClipEncoder(Encoder):
    """Output of the last block LAVIS keeps (CLS optionally kept first), no final norm."""

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(batch)  # pruned: the norm is an Identity
        if self.spec.keep_prefix_tokens:
            return tokens
        return tokens[:, self.model.num_prefix_tokens :]


def convert_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """An EVA-CLIP checkpoint (LAVIS, BLIP-2, timm or open_clip layout) -> the pruned model's keys.

    LAVIS's names (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.norm1`,
    `blocks.N.attn.qkv` + `q_bias` + `v_bias`, `blocks.N.attn.proj`, `norm2`, `mlp.fc1/fc2`) are
    timm Eva's; what differs is what is left out. timm's own filter strips open_clip prefixes
    and resamples position/patch embeddings when the input size differs.
    """
    from timm.models.eva import checkpoint_filter_fn

    if any(k.startswith(_BLIP2_PREFIX) for k in state):  # a whole BLIP-2 / V2Dial model
        state = {
            k[len(_BLIP2_PREFIX) :]: v for k, v in state.items() if k.startswith(_BLIP2_PREFIX)
        }
    kept = len(model.blocks)
    out = {}
    for key, value in checkpoint_filter_fn(state, model).items():
        block = _BLOCK_KEY.match(key)
        if key.startswith(_UNUSED_PREFIXES) or (block and int(block.group(1)) >= kept):
            continue
        out[key] = value
    return out


def find_checkpoint(size: str) -> Path:
    """Look for the size's checkpoint under $VDIAL_WEIGHTS/eva-clip/, or explain what is missing."""
    cfg = SIZES[size]
    return find_weights("eva-clip", size, cfg.checkpoints, cfg.source)


def build_eva_clip(
    size: str = "giant",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int = 16,
    keep_prefix_tokens: bool = False,
    normalisation: str = "openai-clip",
) -> EvaClipEncoder:
    import timm
    import torch
    from timm.models import load_state_dict

    if size not in SIZES:
        raise KeyError(f"unknown eva-clip size {size!r}; known: {sorted(SIZES)}")
    if normalisation not in NORMALISATIONS:
        raise KeyError(f"unknown normalisation {normalisation!r}; known: {sorted(NORMALISATIONS)}")
    cfg = SIZES[size]
    path = None
    if not random_init:  # fail on a missing file before spending time building the model
        path = Path(weights) if weights is not None else find_checkpoint(size)
        if not path.is_file():
            raise WeightsError(
                f"eva-clip:{size} checkpoint not found: {path}. Source: {cfg.source}"
            )
    torch.manual_seed(seed)
    model = timm.create_model(
        cfg.architecture, pretrained=False, img_size=cfg.input_size, num_classes=0, **cfg.overrides
    )
    depth = len(model.blocks)
    # LAVIS's depth=39 model: keep blocks [0, depth-2], drop the final norm and the heads
    model.prune_intermediate_layers([depth - 2], prune_norm=True, prune_head=True)
    if path is None:
        provenance = f"random:{seed}"
    else:
        try:
            model.load_state_dict(convert_state_dict(load_state_dict(str(path)), model))
        except RuntimeError as err:  # key or shape mismatch
            raise WeightsError(f"{path} does not fit eva-clip:{size}: {err}") from err
        provenance = file_digest(path)
    mean, std = NORMALISATIONS[normalisation]
    grid = cfg.input_size // PATCH
    spec = EncoderSpec(
        name="eva-clip",
        size=size,
        architecture=cfg.architecture,
        weights_source=cfg.source,
        input_size=cfg.input_size,
        mean=mean,
        std=std,
        interpolation="bicubic",
        resize="squash",
        frames=frames,
        sampling="uniform-segment-middle",
        layer=f"block {depth - 2} of {depth} (0-based; the last LAVIS keeps), no final norm, "
        "before BLIP-2's ln_vision",
        keep_prefix_tokens=keep_prefix_tokens,
        grid=(grid, grid),
        dim=model.embed_dim,
        prefix_tokens=model.num_prefix_tokens,
    )
    return EvaClipEncoder(spec, model, provenance)
