"""`fit`: train a registered model on cached features, resumably, into a run directory.

A run directory holds the resolved config (config.yaml), the store fingerprint it trained on
(store.json), the tokenizer, checkpoints (model, optimiser, scheduler, step and RNG states,
written atomically), and TensorBoard logs under tb/ (train/loss, val/loss, lr). Batches are a
pure function of (seed, step), so a killed run resumed from its last checkpoint continues
exactly where it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vdial.cache import FeatureReader, FeatureStore
from vdial.config import ConfigError, load_config, save_config, to_dict
from vdial.manifests import Manifest
from vdial.train.config import TrainConfig
from vdial.train.data import DialogDataset, collate, dialog_turns
from vdial.train.models import MODELS
from vdial.train.tokenizer import Tokenizer


@dataclass
class FitResult:
    run_dir: Path
    steps: int  # steps done in total
    resumed_from: int  # step the run resumed at (0 for a fresh run)
    train_loss: float  # mean loss of the last logging window
    val_loss: float | None  # last validation loss


def manifest_dir(config: TrainConfig) -> Path:
    return (
        Path(config.manifest) if config.manifest else Path("manifests") / Path(config.features).name
    )


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The sample indices of `step`: epochs are seeded permutations, cut into batches."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size : (k + 1) * batch_size].tolist()


def build_model(config: TrainConfig, feature, tokenizer: Tokenizer) -> torch.nn.Module:
    tokens_per_frame, dim = (
        feature.item_shape[-2:] if len(feature.item_shape) > 1 else (1, feature.item_shape[0])
    )
    torch.manual_seed(config.seed)
    return MODELS.get(config.model)(
        visual_dim=dim,
        visual_tokens=config.frames * tokens_per_frame,
        vocab_size=tokenizer.vocab_size,
        config=config,
        special={"pad": tokenizer.pad_id, "bos": tokenizer.bos_id, "eos": tokenizer.eos_id},
    )


def _lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    saved = run_dir / "config.yaml"
    if saved.exists():
        previous = load_config(TrainConfig, saved)
        if to_dict(previous) != to_dict(config):
            raise ConfigError(
                f"{run_dir} holds a run with a different config; resume it with the same config "
                f"or choose another --out (diff: "
                f"{ {k: v for k, v in to_dict(config).items() if to_dict(previous).get(k) != v} })"
            )


def _dialogs_fingerprint(turns) -> str:
    """sha256 over the training and validation turns (ids and text) the run learns from."""
    digest = hashlib.sha256()
    for t in turns:
        digest.update(json.dumps([t.media_id, t.context, t.answer]).encode() + b"\n")
    return digest.hexdigest()


def _check_same_data(run_dir: Path, fingerprint: str, dialogs: str) -> None:
    """A run resumes only on the features and dialogs it started with."""
    saved = run_dir / "store.json"
    if not saved.exists():
        return
    before = json.loads(saved.read_text())
    changed = [
        what
        for what, key, now in (
            ("feature store", "fingerprint", fingerprint),
            ("dialogs", "dialogs_fingerprint", dialogs),
        )
        if before.get(key) != now
    ]
    if changed:
        raise ConfigError(
            f"{run_dir} was trained on different {' and '.join(changed)} than now (re-extracted "
            "or regenerated since); choose another --out, or delete the run to start over"
        )


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a kill never leaves a half-written checkpoint


def _evaluate_loss(model, dataset, config: TrainConfig, pad_id: int) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), config.batch_size):
            batch = collate(
                [dataset[i] for i in range(start, min(len(dataset), start + config.batch_size))],
                pad_id,
            )
            loss = model(
                batch["visual"].to(config.device),
                batch["input_ids"].to(config.device),
                batch["attention_mask"].to(config.device),
                batch["labels"].to(config.device),
            )
            n = int((batch["labels"] != -100).sum())
            total, count = total + float(loss) * n, count + n
    model.train()
    return total / max(count, 1)


def fit(config: TrainConfig, run_dir: str | Path, *, progress: bool = True) -> FitResult:
    """Train (or resume) the run in `run_dir`."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    _check_run_dir(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    manifest = Manifest.read(manifest_dir(config))
    feature = FeatureStore.open(config.features, mode="r")[config.feature]
    train_turns = dialog_turns(manifest.dialogs, config.train_split, config, scored=False)
    val_turns = (
        dialog_turns(manifest.dialogs, config.val_split, config, scored=False)
        if config.val_split
        else []
    )
    manifest_turns = train_turns + val_turns
    if not train_turns:
        raise ValueError(
            f"no answered turns in split {config.train_split!r} of {manifest_dir(config)}"
        )
    # Videos whose extraction failed are recorded in the store: their turns are left out (and
    # listed in store.json); videos that were never extracted are an error.
    failed = set(feature.failures)
    train_turns = [t for t in train_turns if t.media_id not in failed]
    val_turns = [t for t in val_turns if t.media_id not in failed]
    excluded = sorted(failed & {t.media_id for t in manifest_turns})
    missing = feature.missing(sorted({t.media_id for t in train_turns + val_turns}))
    if missing:
        raise ValueError(
            f"{len(missing)} videos of the dialogs have no {config.feature!r} features in "
            f"{config.features} (e.g. {missing[:5]}); extract them or fix the manifest"
        )
    fingerprint = feature.fingerprint()
    dialogs = _dialogs_fingerprint(train_turns + val_turns)
    _check_same_data(run_dir, fingerprint, dialogs)
    save_config(config, run_dir / "config.yaml")
    (run_dir / "store.json").write_text(
        json.dumps(
            {
                "path": str(config.features),
                "feature": config.feature,
                "items": len(feature),
                "fingerprint": fingerprint,
                "dialogs_fingerprint": dialogs,
                "spec": feature.spec,
                "lineage": feature.lineage,
                "excluded_failed_items": excluded,
            },
            indent=2,
            default=str,
        )
    )
    tok_path = run_dir / "tokenizer.json"
    if tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
    else:
        tokenizer = Tokenizer.train(t.context + " " + (t.answer or "") for t in train_turns)
        tokenizer.save(tok_path)

    reader = FeatureReader(config.features, config.feature)
    train_set = DialogDataset(train_turns, reader, tokenizer, config)
    val_set = DialogDataset(val_turns, reader, tokenizer, config) if val_turns else None
    model = build_model(config, feature, tokenizer).to(config.device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    start = 0
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():
        state = torch.load(last, map_location=config.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
    else:
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)

    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=[
            batch_indices(len(train_set), config.batch_size, config.seed, s)
            for s in range(start, config.steps)
        ],
        collate_fn=functools.partial(collate, pad_id=tokenizer.pad_id),
        num_workers=config.num_workers,
        # its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run's dropout stream would be shifted by one draw
        generator=torch.Generator().manual_seed(config.seed),
    )
    writer = SummaryWriter(run_dir / "tb", purge_step=start)
    window: list[float] = []
    train_loss, val_loss = float("nan"), None
    model.train()
    bar = _Progress(progress, start, config.steps)
    try:
        for step, batch in enumerate(loader, start=start + 1):
            loss = model(
                batch["visual"].to(config.device),
                batch["input_ids"].to(config.device),
                batch["attention_mask"].to(config.device),
                batch["labels"].to(config.device),
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            window.append(loss.item())
            if step % config.log_every == 0 or step == config.steps:
                train_loss = float(np.mean(window))
                window.clear()
                writer.add_scalar("train/loss", train_loss, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            if val_set is not None and (step % config.eval_every == 0 or step == config.steps):
                val_loss = _evaluate_loss(model, val_set, config, tokenizer.pad_id)
                writer.add_scalar("val/loss", val_loss, step)
            if step % config.checkpoint_every == 0 or step == config.steps:
                writer.flush()
                _save_checkpoint(last, model, optimizer, scheduler, step)
            bar.update(step, train_loss, val_loss)
    finally:
        bar.close()
        writer.close()
    return FitResult(run_dir, config.steps, start, train_loss, val_loss)


class _Progress:
    """A rich bar with loss, steps/s and ETA (silent when disabled)."""

    def __init__(self, enabled: bool, start: int, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
        self.t0, self.start = time.perf_counter(), start

    def update(self, step: int, loss: float, val: float | None) -> None:
        if self.bar is not None:
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            info = (
                f"loss {loss:.3f}"
                + (f" val {val:.3f}" if val is not None else "")
                + f" {rate:.1f} steps/s"
            )
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
