"""Text features: CLIP's text tower over a manifest's captions, one embedding per dialog or video.

BT-Adapter's pre-training losses compare the video with its caption's CLIP text embedding. Frozen
encoders never run at training time, so that embedding is a store feature like the vision ones:
one item per key, one row of `projection_dim` values (768 for ViT-L/14), exactly
`CLIPTextModelWithProjection`'s `text_embeds`: the final-LayerNorm'd state of the first
end-of-text token through `text_projection`, not normalised. The tokenizer is the folder's CLIP
BPE, truncated to `max_position_embeddings` (77) tokens, padded per batch (padding never changes
a text's embedding: attention is causal and the pooled token is the text's own end-of-text).

The text is one column of the manifest's dialog table, `caption` or `summary`, which every turn of
a dialog repeats. Items are keyed by `dialog_id` (AVSD: one caption per dialog) or by `media_id`
(a video-caption set, one caption per video, the video feature's key). A key without that text,
or with two different ones (two dialogs of one video captioned differently), is a recorded
failure of stage "text"; the run goes on.

Weights come from the same local openai/clip-vit-* folder as the vision encoder (the `text_model.*`
and `text_projection.*` tensors, strictly, and the tokenizer files). `random_init` builds the
tower with seeded weights and a byte-level CLIP tokenizer (every UTF-8 byte one token, CLIP's two
special tokens last), since a random tower has no vocabulary of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdial import __version__
from vdial.cache import FeatureStore
from vdial.extract.encoders import parse_ref
from vdial.extract.encoders.base import WeightsError
from vdial.extract.encoders.clip import (
    SIZES,
    TEXT_FIELDS,
    byte_level_tokenizer,
    find_checkpoint,
    load_tower,
    read_folder,
)
from vdial.manifests import Manifest

if TYPE_CHECKING:
    import torch

TEXT_COLUMNS = ("caption", "summary")  # per-dialog texts of the dialog table
KEYS = ("dialog_id", "media_id")


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """Which texts to embed, with which tower, into which feature."""

    encoder: str = "clip"  # family[:size] of the text tower; only clip has one
    weights: str | None = None  # local CLIP folder (default: $VDIAL_WEIGHTS/clip/<directory>)
    random_init: bool = False  # seeded random weights and a byte-level tokenizer (recorded)
    seed: int = 0  # seed for random_init
    column: str = "caption"  # dialog-table column embedded: caption or summary
    key: str = "dialog_id"  # item id: dialog_id, or media_id (one text per video)
    feature: str | None = None  # feature name (default: "clip-text-<column>")
    split: str | None = None  # only dialogs of this split
    batch_size: int = 64  # texts per forward pass
    device: str = "cpu"  # torch device of the forward passes
    dtype: str = "float16"  # stored dtype
    segment_items: int = 1024  # items per committed store segment
    retry_failed: bool = False  # embed again keys that failed in an earlier run


@dataclass
class TextSummary:
    """What a run did."""

    feature: str  # the feature written
    done: int = 0  # items written now
    skipped: int = 0  # items already present
    failed_before: int = 0  # keys that failed in an earlier run (skipped)
    failed: dict[str, str] = field(default_factory=dict)  # key -> message, this run


class TextTower:
    """A frozen CLIP text tower with its tokenizer: texts -> text_embeds [B, projection_dim]."""

    def __init__(self, spec: dict[str, Any], model: Any, tokenizer: Any, weights: str) -> None:
        self.spec = spec
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.weights = weights  # "sha256:<hex>" of the checkpoint, or "random:<seed>"

    def embed(self, texts: list[str]) -> torch.Tensor:
        import torch

        tokens = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.model.config.max_position_embeddings,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model(**tokens.to(device)).text_embeds

    def provenance(self) -> dict[str, Any]:
        return {**self.spec, "weights": self.weights}


def build_text_tower(
    ref: str = "clip",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> TextTower:
    """CLIP's text tower from a local openai/clip-vit-* folder (or seeded random weights)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    family, size = parse_ref(ref)
    if family != "clip":
        raise KeyError(f"encoder {family!r} has no text tower; text features use clip")
    cfg = SIZES[size]
    text = cfg.text_config
    if not random_init:
        folder, file = read_folder(size, weights or find_checkpoint(size), "text")
        text = folder["text_config"]
        directory = file.parent
        files = ("tokenizer.json",), ("vocab.json", "merges.txt")
        # from_pretrained builds an empty vocabulary, silently, when both are absent
        if not any(all((directory / n).is_file() for n in names) for names in files):
            raise WeightsError(
                f"{directory} has no CLIP tokenizer: expected tokenizer.json, or vocab.json and "
                "merges.txt (the openai/clip-vit-* folder has all three)"
            )
        try:
            tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
        # `tokenizers` reports a malformed vocab.json or merges.txt as a bare Exception
        except Exception as err:  # noqa: BLE001 - re-raised, naming the folder
            raise WeightsError(f"{directory}: unreadable CLIP tokenizer files: {err}") from err
    else:
        tokenizer = byte_level_tokenizer()
    config = CLIPTextConfig(
        **{k: text[k] for k in TEXT_FIELDS},
        hidden_act=text.get("hidden_act", "quick_gelu"),  # transformers' defaults when absent
        layer_norm_eps=text.get("layer_norm_eps", 1e-5),
        bos_token_id=text.get("bos_token_id", 0),
        eos_token_id=text.get("eos_token_id", 2),
        pad_token_id=text.get("pad_token_id", 1),
        projection_dim=cfg.projection_dim,
        attn_implementation="sdpa",
    )
    if random_init:
        torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config)
    if random_init:
        provenance = f"random:{seed}"
    else:
        prefixes = ("text_model.", "text_projection.")
        provenance = load_tower(model, file, prefixes, f"clip:{size} text tower")
    spec = {
        "name": "clip-text",
        "size": size,
        "architecture": "transformers CLIPTextModelWithProjection (OpenAI CLIP)",
        "weights_source": cfg.source,
        "tokenizer": "byte-level, no merges (random init)" if random_init else "CLIP BPE",
        "max_tokens": config.max_position_embeddings,
        "pooling": "first end-of-text token after final_layer_norm, text_projection, unnormalised",
        "dim": cfg.projection_dim,
    }
    return TextTower(spec, model, tokenizer, provenance)


def texts_by_key(
    manifest: Manifest, column: str, key: str, split: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(key -> text, key -> why it has none) from the dialog table, in key order."""
    if column not in TEXT_COLUMNS:
        raise ValueError(f"text column must be one of {TEXT_COLUMNS}, got {column!r}")
    if key not in KEYS:
        raise ValueError(f"text key must be one of {KEYS}, got {key!r}")
    if split is not None and split not in manifest.splits():
        raise ValueError(f"manifest {manifest.name!r} has no split {split!r}")
    table = manifest.dialogs
    seen: dict[str, set[str]] = {}
    rows = zip(
        table[key].to_pylist(), table[column].to_pylist(), table["split"].to_pylist(), strict=True
    )
    for item_id, text, item_split in rows:
        if split is None or item_split == split:
            texts = seen.setdefault(item_id, set())
            if text is not None and text.strip():
                texts.add(text.strip())
    found, failed = {}, {}
    for item_id in sorted(seen):
        texts = sorted(seen[item_id])
        if len(texts) == 1:
            found[item_id] = texts[0]
        elif not texts:
            failed[item_id] = f"{key} {item_id!r} has no {column} in manifest {manifest.name!r}"
        else:
            failed[item_id] = (
                f"{key} {item_id!r} has {len(texts)} different {column}s in manifest "
                f"{manifest.name!r}, e.g. {texts[0][:60]!r} and {texts[1][:60]!r}"
            )
    return found, failed


def run_text_extraction(
    manifest: Manifest, store_path: str | Path, config: TextConfig
) -> TextSummary:
    """Embed the manifest's texts into the store's text feature; resumes what is missing."""
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {config.batch_size}")
    found, failures = texts_by_key(manifest, config.column, config.key, config.split)
    tower = build_text_tower(
        config.encoder, weights=config.weights, random_init=config.random_init, seed=config.seed
    )
    tower.model.to(config.device)
    name = config.feature or f"clip-text-{config.column}"
    spec = {
        **tower.provenance(),
        "column": config.column,
        "key": config.key,
        "code_version": __version__,
    }
    feature = FeatureStore.open(store_path, mode="a").create_feature(
        name, item_shape=(tower.spec["dim"],), dtype=config.dtype, spec=spec, exist_ok=True
    )
    summary = TextSummary(feature=name)
    ids = sorted({*found, *failures})
    missing = feature.missing(ids)
    earlier = set() if config.retry_failed else set(feature.failures)
    todo = [i for i in missing if i not in earlier]
    summary.skipped = len(ids) - len(missing)
    summary.failed_before = len(missing) - len(todo)
    with feature.writer(segment_items=config.segment_items) as writer:
        for item_id in todo:
            if item_id in failures:
                writer.fail(item_id, "text", failures[item_id])
                summary.failed[item_id] = failures[item_id]
        wanted = [i for i in todo if i in found]
        for start in range(0, len(wanted), config.batch_size):
            batch = wanted[start : start + config.batch_size]
            embeds = tower.embed([found[i] for i in batch]).float().cpu().numpy()
            for row, item_id in enumerate(batch):
                writer.add(item_id, embeds[row : row + 1])
            summary.done += len(batch)
    return summary
