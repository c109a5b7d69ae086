"""The encoder registry: one file per family, one registration line each.

An encoder is named `family[:size]` on the command line (`dinov2`, `dinov2:tiny`); the size
defaults to the one the papers used. `build_encoder` is the only entry point the runner and the
tests use, so a new family is picked up everywhere once it is registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vdial.extract.encoders import (
    clip,
    dinov2,
    eva_clip,
    faster_rcnn,
    languagebind,
    resnext3d,
    siglip,
    vivit,
)
from vdial.extract.encoders.base import Encoder, EncoderSpec, WeightsError
from vdial.registry import Registry

__all__ = ["ENCODERS", "Encoder", "EncoderSpec", "WeightsError", "build_encoder", "parse_ref"]


@dataclass(frozen=True, kw_only=True)
class EncoderFamily:
    """A registered family: its builder, sizes and the size the papers used."""

    build: Callable[..., Encoder]  # build(size, *, weights, random_init, seed, frames)
    sizes: tuple[str, ...]  # registered sizes
    default_size: str  # the size of the papers' checkpoint
    summary: str  # one line for `vdial encoders`


ENCODERS: Registry[EncoderFamily] = Registry("encoder")
ENCODERS.register("dinov2")(
    EncoderFamily(
        build=dinov2.build_dinov2,
        sizes=tuple(dinov2.SIZES),
        default_size="large",
        summary="DINOv2 ViT/14 + 4 registers (timm), penultimate block patch tokens (MERV)",
    )
)
ENCODERS.register("eva-clip")(
    EncoderFamily(
        build=eva_clip.build_eva_clip,
        sizes=tuple(eva_clip.SIZES),
        default_size="giant",
        summary="EVA-CLIP ViT-g/14 (timm Eva), LAVIS's first 39 of 40 blocks (BLIP-2, V2Dial)",
    )
)
ENCODERS.register("siglip")(
    EncoderFamily(
        build=siglip.build_siglip,
        sizes=tuple(siglip.SIZES),
        default_size="base",
        summary="SigLIP ViT-B/16 224 px (timm), penultimate block patch tokens (MERV)",
    )
)
ENCODERS.register("vivit")(
    EncoderFamily(
        build=vivit.build_vivit,
        sizes=tuple(vivit.SIZES),
        default_size="base",
        summary="ViViT-B/16x2 Kinetics-400 (transformers), 32-frame clips -> 16x14x14 tokens",
    )
)
ENCODERS.register("languagebind")(
    EncoderFamily(
        build=languagebind.build_languagebind,
        sizes=tuple(languagebind.SIZES),
        default_size="large",
        summary="LanguageBind_Video_merge ViT-L/14 + temporal attention, hidden_states[-2] (MERV)",
    )
)
ENCODERS.register("resnext3d")(
    EncoderFamily(
        build=resnext3d.build_resnext3d,
        sizes=tuple(resnext3d.SIZES),
        default_size="101",
        summary="3D ResNeXt-101 (Hara et al., Kinetics), 16-frame clips, pooled 2048-d (VGD-GPT2)",
    )
)
ENCODERS.register("faster-rcnn")(
    EncoderFamily(
        build=faster_rcnn.build_faster_rcnn,
        sizes=tuple(faster_rcnn.SIZES),
        default_size="r101",
        summary="Bottom-up-attention Faster R-CNN R101 (Visual Genome), 10-100 regions x 2048",
    )
)

ENCODERS.register("clip")(
    EncoderFamily(
        build=clip.build_clip,
        sizes=tuple(clip.SIZES),
        default_size="large",
        summary="OpenAI CLIP ViT-L/14 (transformers), hidden_states 21-24 in one item (BT-Adapter)",
    )
)


def parse_ref(ref: str) -> tuple[str, str]:
    """'dinov2:tiny' -> ('dinov2', 'tiny'); 'dinov2' -> ('dinov2', <default size>)."""
    name, _, size = ref.partition(":")
    family = ENCODERS.get(name)
    size = size or family.default_size
    if size not in family.sizes:
        raise KeyError(f"unknown size {size!r} for encoder {name!r}; known: {list(family.sizes)}")
    return name, size


COMMON_ARGS = frozenset({"size", "weights", "random_init", "seed", "frames"})


def builder_options(name: str) -> dict[str, object]:
    """A family's own builder options (beyond weights/seed/frames) and their defaults."""
    import inspect

    params = inspect.signature(ENCODERS.get(name).build).parameters
    return {k: p.default for k, p in params.items() if k not in COMMON_ARGS}


def build_encoder(
    ref: str,
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int | None = None,
    options: dict[str, object] | None = None,
) -> Encoder:
    """Build a frozen encoder from `family[:size]` with a local checkpoint or seeded random init.

    `options` are the family's own builder arguments (`builder_options`), e.g. `regions=36` for
    faster-rcnn or `keep_prefix_tokens=True` for the ViTs.
    """
    name, size = parse_ref(ref)
    known = builder_options(name)
    unknown = sorted(set(options or {}) - known.keys())
    if unknown:
        raise KeyError(
            f"encoder {name!r} has no option {unknown[0]!r}; its options: "
            + (", ".join(f"{k} (default {v!r})" for k, v in known.items()) or "none")
        )
    kwargs = {"weights": weights, "random_init": random_init, "seed": seed, **(options or {})}
    if frames is not None:
        kwargs["frames"] = frames
    return ENCODERS.get(name).build(size, **kwargs)
