"""OpenAI CLIP ViT-L/14 vision tower (transformers), several layers of one forward, for BT-Adapter.

What the paper needs (source of truth: farewellthree/BT-Adapter, `clip_btadapter_hf.py` and
`llava_base/bt_adapter/model/btadapter.py`): BT-Adapter's branch of depth K = 4 runs beside the
frozen CLIP ViT-L/14 and, after each of CLIP's last K layers, reads that layer's output (all 257
tokens, CLS first); its output combination also takes CLIP's last-layer CLS through the frozen
`post_layernorm` and `visual_projection`. With those layers cached the branch trains without
CLIP's forward, so one item holds `hidden_states[21..24]` of the same forward: rows along time of
shape (L, 257, 1024), L = number of tapped layers (`layers`, hidden_states indices: 0 is the
pre-LayerNorm'd embeddings, k the output of layer k; no post-LayerNorm on any of them). With
`projection=True` each row also gets an `image_embeds` extra: `visual_projection(
post_layernorm(CLS of the last layer))`, 768-d, what `CLIPVisionModelWithProjection` returns.

Frames are sampled uniformly (segment middles, BT-Adapter's 8 by default), resized on the short
side to 224 (bicubic, antialiased) and centre cropped, normalised with OpenAI-CLIP mean/std: the
`CLIPImageProcessor` of the checkpoint folder.

Checkpoints load from a local directory in the layout of the hub's `openai/clip-vit-large-patch14`
(`config.json` of a `CLIPModel` with `vision_config`/`text_config`, `model.safetensors` or
`pytorch_model.bin`, the tokenizer files); nothing is downloaded. The vision encoder reads only the
`vision_model.*` and `visual_projection.*` tensors, strictly; the text tower (`vdial.extract.text`)
reads the rest of the same folder.
"""

from __future__ import annotations

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
# sub-config fields that fix each tower's architecture and token grid
VISION_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
)
TEXT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)


@dataclass(frozen=True, kw_only=True)
class ClipSize:
    """One registered size of the family (both towers: the text tower shares the folder)."""

    vision_config: dict[str, Any]  # upstream vision_config
    text_config: dict[str, Any]  # upstream text_config
    projection_dim: int  # width of visual_projection / text_projection
    layers: tuple[int, ...]  # default tapped hidden_states indices
    frames: int  # default frames per video
    directory: str  # checkpoint directory looked for under $VDIAL_WEIGHTS/clip/
    source: str  # where the papers' weights come from


SIZES: dict[str, ClipSize] = {
    "large": ClipSize(
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        text_config={
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": 0,
            "eos_token_id": 2,  # upstream's legacy value: pooling takes the highest id, <|eot|>
            "pad_token_id": 1,
        },
        projection_dim=768,
        layers=(21, 22, 23, 24),  # the outputs of the last K = 4 layers, BT-Adapter's branch
        frames=8,
        directory="clip-vit-large-patch14",
        source="HF openai/clip-vit-large-patch14 (config.json, model.safetensors, tokenizer files)",
    ),
    "tiny": ClipSize(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": 56,
            "patch_size": 14,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        text_config={
            "vocab_size": 514,  # the byte-level tokenizer: 2 x 256 byte tokens + 2 specials
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        projection_dim=24,
        layers=(2, 3),
        frames=4,
        directory="clip-tiny",
        source="none: a test size (3 vision layers, dim 32); --random-init or a saved folder",
    ),
}


@dataclass(frozen=True, kw_only=True)
class ClipSpec(EncoderSpec):
    """EncoderSpec plus what a reader needs to index CLIP's multi-layer rows."""

    layers: tuple[int, ...]  # hidden_states indices, stacked along axis 1 of an item (T, L, N, D)
    projection_dim: int  # width of the `image_embeds` extra per row; 0 when it is not stored


class ClipEncoder(Encoder):
    """Frames -> per frame the tapped hidden states [L, (CLS +) H'*W', D] (+ image embeds)."""

    spec: ClipSpec

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (len(self.spec.layers), self.spec.tokens_per_frame, self.spec.dim)

    @property
    def row_extras(self) -> dict[str, tuple[tuple[int, ...], str]]:
        extras = super().row_extras
        if self.spec.projection_dim:
            extras["image_embeds"] = ((self.spec.projection_dim,), "float32")
        return extras

    def encode(self, batch: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """[B, 3, S, S] -> per frame (tapped states [L, N, D], image embeds [P] or None)."""
        import torch

        tower = self.model.vision_model
        hidden = tower.pre_layrnorm(tower.embeddings(batch))
        wanted = set(self.spec.layers)
        taps = [hidden] if 0 in wanted else []
        # without the projection nothing after the deepest tapped layer is needed
        depth = len(tower.encoder.layers) if self.spec.projection_dim else max(wanted)
        for k, layer in enumerate(tower.encoder.layers[:depth], start=1):
            hidden = layer(hidden, None)
            if k in wanted:
                taps.append(hidden)
        tokens = torch.stack(taps, dim=1)
        if not self.spec.keep_prefix_tokens:
            tokens = tokens[:, :, 1:]
        if not self.spec.projection_dim:
            return [(t, None) for t in tokens]
        embeds = self.model.visual_projection(tower.post_layernorm(hidden[:, 0]))
        return list(zip(tokens, embeds, strict=True))

    def to_rows(
        self, outputs: list[Any], timestamps: np.ndarray, indices: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        import torch

        rows = torch.stack([t for t, _ in outputs]).float().cpu().numpy()
        extras = {"timestamps": timestamps, "frame_indices": indices}
        if self.spec.projection_dim:
            extras["image_embeds"] = torch.stack([e for _, e in outputs]).float().cpu().numpy()
        return rows, extras


def find_checkpoint(size: str) -> Path:
    """The size's folder under $VDIAL_WEIGHTS/clip/, or an error saying what is missing."""
    cfg = SIZES[size]
    root = os.environ.get(WEIGHTS_ENV)
    if root:
        path = Path(root) / "clip" / cfg.directory
        if (path / "config.json").is_file():
            return path
        where = str(path)
    else:
        where = f"${WEIGHTS_ENV}/clip/{cfg.directory} (unset)"
    raise WeightsError(
        f"no checkpoint for clip:{size}: expected a directory with config.json and one of "
        f"{list(WEIGHT_FILES)} at {where}. Source: {cfg.source}. "
        f"Pass --weights PATH, set {WEIGHTS_ENV}, or use --random-init."
    )


def read_folder(size: str, path: str | Path, tower: str) -> tuple[dict[str, Any], Path]:
    """(config.json of a CLIPModel folder, its weights file), checked against `size`'s `tower`.

    `tower` is "vision" or "text": only that sub-config has to match the registered size.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    if not (directory / "config.json").is_file():
        raise WeightsError(f"clip:{size} checkpoint not found: {directory}/config.json")
    config = json.loads((directory / "config.json").read_text())
    sub = config.get(f"{tower}_config")
    if config.get("model_type") != "clip" or not isinstance(sub, dict):
        raise WeightsError(
            f"{directory}/config.json is not a CLIPModel config (model_type 'clip' with a "
            f"{tower}_config): not an openai/clip-vit-* folder"
        )
    expected = getattr(SIZES[size], f"{tower}_config")
    fields = VISION_FIELDS if tower == "vision" else TEXT_FIELDS
    wrong = {k: sub.get(k) for k in fields if sub.get(k) != expected[k]}
    if config.get("projection_dim") != SIZES[size].projection_dim:
        wrong["projection_dim"] = config.get("projection_dim")
    if wrong:
        raise WeightsError(f"{directory} does not fit clip:{size}: config has {wrong}")
    file = next((directory / n for n in WEIGHT_FILES if (directory / n).is_file()), None)
    if file is None:
        raise WeightsError(f"{directory} has no {' or '.join(WEIGHT_FILES)} for clip:{size}")
    return config, file


def load_tower(model: torch.nn.Module, file: Path, prefixes: tuple[str, ...], ref: str) -> str:
    """Load the tensors of `file` under `prefixes` into `model` strictly; returns the digest.

    `*.embeddings.position_ids` is a buffer older transformers saved; it is recomputed.
    """
    import torch

    def wanted(key: str) -> bool:
        return key.startswith(prefixes) and not key.endswith("embeddings.position_ids")

    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as fh:  # reads only this tower's tensors
            state = {k: fh.get_tensor(k) for k in fh.keys() if wanted(k)}
    else:
        full = torch.load(file, map_location="cpu", weights_only=True)
        state = {k: v for k, v in full.items() if wanted(k)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing, unexpected or misshapen keys
        raise WeightsError(f"{file} does not fit {ref}: {err}") from err
    return file_digest(file)


def byte_level_tokenizer() -> Any:
    """A CLIP BPE tokenizer without merges: byte k is id k, byte k ending a word 256 + k."""
    from transformers import CLIPTokenizer

    # byte-level BPE's printable stand-in for each byte (GPT-2's table, which CLIP uses)
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    others = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(others)) for b in range(256)]
    vocab = {c: b for b, c in enumerate(chars)}
    vocab.update({f"{c}</w>": 256 + b for b, c in enumerate(chars)})
    # the end-of-text token has the highest id, which upstream's pooling (argmax) relies on
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return CLIPTokenizer(vocab=vocab, merges=[])


def _check_layers(layers: Any, depth: int) -> tuple[int, ...]:
    taps = tuple(layers)
    if (
        not taps
        or not all(isinstance(k, int) and not isinstance(k, bool) for k in taps)
        or list(taps) != sorted(set(taps))
        or taps[0] < 0
        or taps[-1] > depth
    ):
        raise ValueError(
            f"clip layers must be increasing hidden_states indices in 0..{depth}, got {layers!r}"
        )
    return taps


def build_clip(
    size: str = "large",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int | None = None,
    layers: tuple[int, ...] | None = None,
    projection: bool = False,
    keep_prefix_tokens: bool = True,
) -> ClipEncoder:
    """CLIP's vision tower from a local openai/clip-vit-* folder (or seeded random weights).

    `layers`: hidden_states indices to store (default: the size's last four); `projection`: also
    store `visual_projection(post_layernorm(CLS))` per frame as the `image_embeds` extra.
    """
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if size not in SIZES:
        raise KeyError(f"unknown clip size {size!r}; known: {sorted(SIZES)}")
    cfg = SIZES[size]
    vision = cfg.vision_config
    if not random_init:
        config, file = read_folder(size, weights or find_checkpoint(size), "vision")
        vision = config["vision_config"]
    config = CLIPVisionConfig(
        **{k: vision[k] for k in VISION_FIELDS},
        hidden_act=vision.get("hidden_act", "quick_gelu"),  # transformers' defaults when absent
        layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
        projection_dim=cfg.projection_dim,
        attn_implementation="sdpa",
    )
    taps = _check_layers(cfg.layers if layers is None else layers, config.num_hidden_layers)
    frames = cfg.frames if frames is None else frames
    if random_init:
        torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(config)
    if random_init:
        provenance = f"random:{seed}"
    else:
        prefixes = ("vision_model.", "visual_projection.")
        provenance = load_tower(model, file, prefixes, f"clip:{size}")
    grid = config.image_size // config.patch_size
    depth = config.num_hidden_layers
    spec = ClipSpec(
        name="clip",
        size=size,
        architecture="transformers CLIPVisionModelWithProjection (OpenAI CLIP ViT/14)",
        weights_source=cfg.source,
        input_size=config.image_size,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        interpolation="bicubic",
        frames=frames,
        sampling="uniform-segment-middle",
        layer=(
            f"hidden_states{list(taps)} of {depth} layers (k = output of layer k, 0 = embeddings "
            "after pre_layrnorm), no post_layernorm; stacked per row as (layers, tokens, dim)"
            + ("; image_embeds = visual_projection(post_layernorm(CLS))" if projection else "")
        ),
        keep_prefix_tokens=keep_prefix_tokens,
        grid=(grid, grid),
        dim=config.hidden_size,
        prefix_tokens=1,
        layers=taps,
        projection_dim=cfg.projection_dim if projection else 0,
    )
    return ClipEncoder(spec, model, provenance)
