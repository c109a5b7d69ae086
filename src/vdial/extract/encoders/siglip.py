"""SigLIP ViT-B/16 through timm, tapped at the penultimate block as MERV does.

What MERV does (source of truth: princetonvisualai/merv `merv/models/backbones/video/siglip.py`
and `merv/conf/models.py`; TRI-ML/prismatic-vlms `base_vision.py`): its SigLIP encoder is
`siglip-vit-b16-224px-all-no-cls`, i.e. timm `vit_base_patch16_siglip_224` created with
`num_classes=0, img_size=224`, whose forward is prismatic's
`get_intermediate_layers(n={depth - 2})`: the patch tokens of the second-to-last block, without
the final norm. SigLIP has no CLS token; its MAP attention-pool head is never run. Frames are
squashed to 224x224 (`image_resize_strategy="resize-naive"`: timm's bicubic, no crop) and
normalised with mean = std = 0.5; MERV samples 16 frames.

Weights: MERV pulled timm's default tag, the SigLIP (v1) WebLI checkpoint; current timm's default
for the architecture is SigLIP 2 (`v2_webli`), so name the file you mean. Checkpoints load from a
local file in timm's layout (`timm/vit_base_patch16_siglip_224.webli`, `model.safetensors`) or
open_clip's (`timm/ViT-B-16-SigLIP`, `open_clip_pytorch_model.bin`: `visual.trunk.*` plus the
text tower); timm's checkpoint filter strips the open_clip prefix and the text tower. The
blocks after the tapped one, the final norm and the MAP head are pruned after loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdial.extract.encoders.base import (
    Encoder,
    EncoderSpec,
    create_timm_model,
    find_weights,
)

if TYPE_CHECKING:
    import torch

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True, kw_only=True)
class SiglipSize:
    """One registered size of the family."""

    architecture: str  # timm architecture name
    input_size: int  # frame side after the squash resize
    patch: int  # patch side in pixels
    checkpoints: tuple[str, ...]  # file names looked for under $VDIAL_WEIGHTS/siglip/
    source: str  # where the papers' weights come from
    overrides: dict[str, Any] = field(default_factory=dict)  # timm kwargs (tiny test size)


SIZES: dict[str, SiglipSize] = {
    "base": SiglipSize(
        architecture="vit_base_patch16_siglip_224",
        input_size=224,
        patch=16,
        checkpoints=("model.safetensors", "open_clip_pytorch_model.bin"),
        source="HF timm/vit_base_patch16_siglip_224.webli (model.safetensors, SigLIP v1 as MERV)"
        " or timm/ViT-B-16-SigLIP (open_clip_pytorch_model.bin)",
    ),
    "tiny": SiglipSize(
        architecture="vit_base_patch16_siglip_224",
        input_size=64,
        patch=16,
        checkpoints=("siglip_tiny.safetensors",),
        source="none: a test size (3 blocks, 2 run, dim 32); --random-init, or a file you saved",
        overrides={"embed_dim": 32, "depth": 3, "num_heads": 2},
    ),
}


class SiglipEncoder(Encoder):
    """Patch tokens of the penultimate block (SigLIP has no prefix tokens)."""

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(batch)  # pruned: ends at the tapped block, no norm


def find_checkpoint(size: str) -> Path:
    """Look for the size's checkpoint under $VDIAL_WEIGHTS/siglip/, or explain what is missing."""
    cfg = SIZES[size]
    return find_weights("siglip", size, cfg.checkpoints, cfg.source)


def build_siglip(
    size: str = "base",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int = 16,
) -> SiglipEncoder:
    if size not in SIZES:
        raise KeyError(f"unknown siglip size {size!r}; known: {sorted(SIZES)}")
    cfg = SIZES[size]
    kwargs = {"img_size": cfg.input_size, "num_classes": 0, **cfg.overrides}
    model, provenance = create_timm_model(
        "siglip",
        size,
        cfg.architecture,
        kwargs,
        weights=weights,
        find_checkpoint=find_checkpoint,
        source=cfg.source,
        random_init=random_init,
        seed=seed,
    )
    depth = len(model.blocks)
    # prismatic's get_intermediate_layers(n={depth - 2}): nothing after that block is ever run
    model.prune_intermediate_layers([depth - 2], prune_norm=True, prune_head=True)
    grid = cfg.input_size // cfg.patch
    spec = EncoderSpec(
        name="siglip",
        size=size,
        architecture=cfg.architecture,
        weights_source=cfg.source,
        input_size=cfg.input_size,
        mean=SIGLIP_MEAN,
        std=SIGLIP_STD,
        interpolation="bicubic",
        resize="squash",
        frames=frames,
        sampling="uniform-segment-middle",
        layer=f"block {depth - 2} of {depth} (0-based; penultimate), no final norm, no MAP head",
        keep_prefix_tokens=False,
        grid=(grid, grid),
        dim=model.embed_dim,
        prefix_tokens=model.num_prefix_tokens,
    )
    return SiglipEncoder(spec, model, provenance)
