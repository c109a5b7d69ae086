"""Run frozen encoders over a manifest's media into a FeatureStore, resumably.

Each video is decoded once for all requested encoders (the union of the frames they sample);
each encoder gets its own subset (chosen by its `frame_indices`), forward passes run under
`torch.inference_mode` over batches of units (frames or clips) worth `batch_frames` frames,
and rows go to the store through its segment writer. Items already in the store are skipped,
so re-running after an interruption does only the missing work. A file that cannot be decoded
is recorded as a failed item with its reason and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vdial import __version__
from vdial.cache import FeatureStore
from vdial.extract.decode import DEFAULT_BACKEND, Backend, DecodeError, read_frames
from vdial.extract.encoders import Encoder, build_encoder
from vdial.manifests import Manifest


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """What to extract and how."""

    encoders: tuple[str, ...]  # encoder refs, family[:size], e.g. ("dinov2:small",)
    weights: dict[str, str] = field(default_factory=dict)  # family -> local checkpoint path
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> builder options
    random_init: bool = False  # seeded random weights instead of a checkpoint (recorded)
    seed: int = 0  # seed for --random-init
    frames: int | None = None  # frames per video; None keeps each encoder's default
    backend: Backend = DEFAULT_BACKEND  # decoder: "pyav", "decord" or "torchcodec"
    decode_timeout_s: float | None = 300.0  # a decode taking longer fails (None: no limit)
    batch_frames: int = 64  # frames per forward pass
    device: str = "cpu"  # torch device for the encoders
    split: str | None = None  # only media of this split
    limit: int | None = None  # at most this many media items (after the split filter)
    retry_failed: bool = False  # try again items that failed in an earlier run
    segment_items: int = 64  # items per committed store segment
    dtype: str = "float16"  # stored dtype of the features ("float16" or "float32")


@dataclass
class ExtractSummary:
    """What a run did, per encoder feature."""

    done: dict[str, int] = field(default_factory=dict)  # feature -> items written now
    skipped: dict[str, int] = field(default_factory=dict)  # feature -> items already present
    failed_before: dict[str, int] = field(default_factory=dict)  # feature -> earlier failures
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> reason, this run
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "preprocess": 0.0, "encode": 0.0}
    )


class _Batcher:
    """Collects several videos' units for one encoder and runs them in one forward pass.

    One video gives only a handful of frames; batching across videos up to `batch_frames`
    input frames keeps the matrix products large enough to run at the hardware's rate.
    """

    def __init__(self, encoder: Encoder, writer, batch_frames: int, summary) -> None:
        self.encoder, self.writer, self.summary = encoder, writer, summary
        self.batch_units = max(1, batch_frames // encoder.spec.clip_len)
        self.items: list[tuple[str, object, np.ndarray, np.ndarray]] = []
        self.units = 0

    def add(self, item_id: str, frames: np.ndarray, timestamps, indices) -> None:
        t0 = time.perf_counter()
        units = self.encoder.preprocess(frames)
        self.items.append((item_id, units, timestamps, indices))
        self.summary.seconds["preprocess"] += time.perf_counter() - t0
        self.units += len(units)
        if self.units >= self.batch_units:
            self.flush()

    def flush(self) -> None:
        import torch

        if not self.items:
            return
        t0 = time.perf_counter()
        # Units are tensors (stacked into batches here) or, for encoders whose units differ in
        # size, any other objects (passed on as lists).
        flat = [unit for _, units, _, _ in self.items for unit in units]
        outputs: list = []
        with torch.inference_mode():
            for k in range(0, len(flat), self.batch_units):
                chunk = flat[k : k + self.batch_units]
                if isinstance(chunk[0], torch.Tensor):
                    chunk = torch.stack(chunk).to(self.encoder.device)
                outputs.extend(self.encoder.encode(chunk))
        start = 0
        for item_id, units, timestamps, indices in self.items:
            rows, extras = self.encoder.to_rows(
                outputs[start : start + len(units)], timestamps, indices
            )
            self.writer.add(item_id, rows, **extras)
            start += len(units)
        self.summary.done[self.encoder.spec.name] += len(self.items)
        self.summary.seconds["encode"] += time.perf_counter() - t0
        self.items, self.units = [], 0


def run_extraction(
    manifest: Manifest,
    store_path: str | Path,
    config: ExtractConfig,
    *,
    progress: bool = True,
) -> ExtractSummary:
    """Extract every configured encoder for the manifest's media into the store."""
    paths = manifest.media_paths(config.split)
    ids = sorted(paths)[: config.limit] if config.limit is not None else sorted(paths)
    encoders = [
        build_encoder(
            ref,
            weights=config.weights.get(ref.partition(":")[0]),
            random_init=config.random_init,
            seed=config.seed,
            frames=config.frames,
            options=config.options.get(ref.partition(":")[0]),
        ).to(config.device)
        for ref in config.encoders
    ]
    store = FeatureStore.open(store_path, mode="a")
    features = {}
    for enc in encoders:
        features[enc.spec.name] = store.create_feature(
            enc.spec.name,
            item_shape=enc.item_shape,
            dtype=config.dtype,
            spec={**enc.provenance(), "code_version": __version__},
            extras=enc.row_extras,
            exist_ok=True,
        )
    summary = ExtractSummary()
    todo: dict[str, set[str]] = {}
    for name, feat in features.items():
        missing = feat.missing(ids)
        failed = set() if config.retry_failed else set(feat.failures)
        todo[name] = {i for i in missing if i not in failed}
        summary.done[name] = 0
        summary.skipped[name] = len(ids) - len(missing)
        summary.failed_before[name] = len(missing) - len(todo[name])
    pending = [i for i in ids if any(i in t for t in todo.values())]
    writers = {n: f.writer(segment_items=config.segment_items) for n, f in features.items()}
    batchers = {
        enc.spec.name: _Batcher(enc, writers[enc.spec.name], config.batch_frames, summary)
        for enc in encoders
    }
    try:
        for item_id in _progress(pending, progress, summary):
            wanted = [e for e in encoders if item_id in todo[e.spec.name]]
            _extract_one(item_id, paths[item_id], wanted, writers, batchers, config, summary)
        for batcher in batchers.values():
            batcher.flush()
    finally:
        for writer in writers.values():
            writer.close()
    return summary


def _extract_one(item_id, path, encoders, writers, batchers, config, summary) -> None:
    t0 = time.perf_counter()
    plans: dict[str, np.ndarray] = {}

    def union(total: int, fps: float = 0.0) -> np.ndarray:
        for enc in encoders:
            plans[enc.spec.name] = enc.frame_indices(total, fps)
        return np.unique(np.concatenate(list(plans.values())))

    try:
        if path is None:
            raise DecodeError(item_id, "media file not found (manifest path is empty)")
        decoded = read_frames(path, union, config.backend, timeout_s=config.decode_timeout_s)
    except DecodeError as err:
        for enc in encoders:
            writers[enc.spec.name].fail(item_id, "decode", err.reason)
        summary.failed[item_id] = f"decode: {err.reason}"
        return
    summary.seconds["decode"] += time.perf_counter() - t0
    position = {int(idx): k for k, idx in enumerate(decoded.indices)}
    for enc in encoders:
        rows = [position[int(i)] for i in plans[enc.spec.name]]
        batchers[enc.spec.name].add(
            item_id, decoded.frames[rows], decoded.timestamps[rows], decoded.indices[rows]
        )


def _progress(ids: list[str], enabled: bool, summary: ExtractSummary) -> Iterable[str]:
    if not enabled:
        yield from ids
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]extract"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    with Progress(*columns) as bar:
        task = bar.add_task("extract", total=len(ids), rate="", failed=0)
        for n, item_id in enumerate(ids, 1):
            yield item_id
            rate = n / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=1, rate=f"{rate:.1f} videos/s", failed=len(summary.failed))
