"""The training recipe: one frozen dataclass, loaded from YAML and saved into the run directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that determines a training run (saved as <run>/config.yaml)."""

    features: str  # feature store directory, e.g. cache/avsd
    feature: str  # feature inside the store, e.g. dinov2/pool4x4
    manifest: str | None = None  # manifest directory; default manifests/<store directory name>
    model: str = "visual-gpt2"  # registered model name (see vdial.train.models)
    visual: Literal["real", "zero", "shuffle"] = "real"  # ablation: zeroed or shuffled features
    train_split: str = "train"  # split to train on
    val_split: str | None = "val"  # split for validation loss (None: no validation)
    frames: int = 8  # frames of each item fed to the model (uniformly subsampled or padded)
    history_turns: int = 3  # most recent question/answer pairs of history kept
    use_caption: bool = True  # feed the caption (and summary) as context
    max_context_tokens: int = 96  # caption + history + question, truncated from the left
    max_answer_tokens: int = 20  # answer tokens (incl. end of sequence) kept for training
    d_model: int = 128  # language head width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads
    dropout: float = 0.1  # dropout in the language head
    batch_size: int = 32  # samples per optimiser step
    steps: int = 2000  # optimiser steps
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up before cosine decay
    grad_clip: float = 1.0  # max global gradient norm
    eval_every: int = 250  # steps between validation passes
    checkpoint_every: int = 250  # steps between checkpoints (and at the end)
    log_every: int = 25  # steps between TensorBoard loss points
    num_workers: int = 0  # DataLoader worker processes (each opens the store lazily)
    feature_cache_mb: int = 0  # keep items read from the store in RAM up to this size (per process)
    seed: int = 0  # seed for weights, data order and dropout
    device: str = "cpu"  # torch device
