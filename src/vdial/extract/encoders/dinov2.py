"""DINOv2 with registers through timm, tapped at the penultimate block as MERV does.

MERV feeds `vit_large_patch14_reg4_dinov2.lvd142m` 224-pixel frames and keeps the patch tokens
of the second-to-last block (prismatic's `get_intermediate_layers(n={depth - 2})`), without the
final norm. Checkpoints load from a local file in either the official DINOv2 layout
(`dinov2_vitl14_reg4_pretrain.pth`: `register_tokens`, `mask_token`, a position embedding
with a class slot at 37x37) or timm's (`model.safetensors`); timm's checkpoint filter converts
the former and resamples position embeddings to the input size.
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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14


@dataclass(frozen=True, kw_only=True)
class Dinov2Size:
    """One registered size of the family."""

    architecture: str  # timm architecture name
    input_size: int  # frame side after resize and crop
    checkpoints: tuple[str, ...]  # file names looked for under $VDIAL_WEIGHTS/dinov2/
    source: str  # where the papers' weights come from
    overrides: dict[str, Any] = field(default_factory=dict)  # timm kwargs (tiny test size)


SIZES: dict[str, Dinov2Size] = {
    "large": Dinov2Size(
        architecture="vit_large_patch14_reg4_dinov2",
        input_size=224,
        checkpoints=(
            "dinov2_vitl14_reg4_pretrain.pth",
            "vit_large_patch14_reg4_dinov2.safetensors",
        ),
        source="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"
        " or HF timm/vit_large_patch14_reg4_dinov2.lvd142m (as MERV)",
    ),
    "small": Dinov2Size(
        architecture="vit_small_patch14_reg4_dinov2",
        input_size=112,
        checkpoints=(
            "dinov2_vits14_reg4_pretrain.pth",
            "vit_small_patch14_reg4_dinov2.safetensors",
        ),
        source="https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth"
        " or HF timm/vit_small_patch14_reg4_dinov2.lvd142m (CPU-friendly: 112 px, 8x8 patches)",
    ),
    "tiny": Dinov2Size(
        architecture="vit_small_patch14_reg4_dinov2",
        input_size=56,
        checkpoints=("dinov2_tiny.pth",),
        source="none: a test size (2 blocks, dim 32); --random-init, or a file you saved",
        overrides={"embed_dim": 32, "depth": 2, "num_heads": 2},
    ),
}


class Dinov2Encoder(Encoder):
    """Patch tokens of the penultimate block (prefix tokens optionally kept)."""

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        depth = len(self.model.blocks)
        (tokens,) = self.model.forward_intermediates(
            batch,
            indices=[depth - 2],
            return_prefix_tokens=self.spec.keep_prefix_tokens,
            norm=False,
            stop_early=True,  # blocks after the tapped one are never run
            output_fmt="NLC",
            intermediates_only=True,
        )
        if self.spec.keep_prefix_tokens:
            patches, prefix = tokens
            tokens = torch.cat([prefix, patches], dim=1)
        return tokens


def find_checkpoint(size: str) -> Path:
    """Look for the size's checkpoint under $VDIAL_WEIGHTS/dinov2/, or explain what is missing."""
    cfg = SIZES[size]
    return find_weights("dinov2", size, cfg.checkpoints, cfg.source)


def build_dinov2(
    size: str = "large",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int = 16,
    keep_prefix_tokens: bool = False,
) -> Dinov2Encoder:
    if size not in SIZES:
        raise KeyError(f"unknown dinov2 size {size!r}; known: {sorted(SIZES)}")
    cfg = SIZES[size]
    kwargs = {"img_size": cfg.input_size, "num_classes": 0, **cfg.overrides}
    model, provenance = create_timm_model(
        "dinov2",
        size,
        cfg.architecture,
        kwargs,
        weights=weights,
        find_checkpoint=find_checkpoint,
        source=cfg.source,
        random_init=random_init,
        seed=seed,
    )
    grid = cfg.input_size // PATCH
    spec = EncoderSpec(
        name="dinov2",
        size=size,
        architecture=cfg.architecture,
        weights_source=cfg.source,
        input_size=cfg.input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
        frames=frames,
        sampling="uniform-segment-middle",
        layer=f"block {len(model.blocks) - 2} of {len(model.blocks)} (penultimate), no final norm",
        keep_prefix_tokens=keep_prefix_tokens,
        grid=(grid, grid),
        dim=model.embed_dim,
        prefix_tokens=model.num_prefix_tokens,
    )
    return Dinov2Encoder(spec, model, provenance)
