"""The extraction pipeline of one device: decode workers -> batched encoders -> store writer.

Three stages overlap. `decode_workers` worker processes decode videos ahead of the model, each
video once for every encoder that still needs it (the union of the frames they sample), and
each encoder gets exactly the frames it would get alone: where that read cannot vouch for it (a
damaged stream; decord and torchcodec, which report no decode errors), each encoder's set of
frames is decoded on its own (`decode_sets`). The thread that waits on a worker also resizes
and normalises that video's frames for each encoder (torch releases the GIL), so preprocessing
runs beside the model too. At most
`2 * decode_workers` videos are in flight. The calling thread batches units (frames or clips)
from several videos per encoder up to `batch_frames` frames and runs the forward passes under
`torch.inference_mode` (and autocast for fp16/bf16). A writer thread takes the finished items
and writes the store's segments. Memory is bounded by those queues and one segment per
feature, never by the number of videos.

Per-item failures never stop the run: a video that cannot be decoded (stage "decode"), whose
decode exceeds its time limit ("timeout"), or whose forward pass runs out of memory even on its
own ("oom") is recorded as failed in every feature that wanted it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vdial.extract.decode import Backend, DecodeError
from vdial.extract.decode.core import resolve
from vdial.extract.decode.worker import DecodePool
from vdial.extract.encoders import Encoder

PRECISIONS = ("fp32", "fp16", "bf16")
STAGES = ("decode", "preprocess", "encode", "write")


@dataclass(frozen=True)
class Item:
    """One medium to extract: its id, its file, and the features that still need it."""

    id: str
    path: str | None
    features: tuple[str, ...]


@dataclass
class Result:
    """What a pipeline run did; results of several runs add up with `merge`."""

    done: dict[str, int] = field(default_factory=dict)  # feature -> items written
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> stage, message
    failed_by_feature: dict[str, int] = field(default_factory=dict)  # feature -> failed items
    videos: int = 0  # media items processed (written or failed)
    frames: int = 0  # decoded frames
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    segments: dict[str, list[Any]] = field(default_factory=dict)  # feature -> uncommitted

    def merge(self, other: Result) -> None:
        for name, count in other.done.items():
            self.done[name] = self.done.get(name, 0) + count
        self.failed.update(other.failed)
        for name, count in other.failed_by_feature.items():
            self.failed_by_feature[name] = self.failed_by_feature.get(name, 0) + count
        self.videos += other.videos
        self.frames += other.frames
        for stage, seconds in other.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """How one device's pipeline runs."""

    decode_workers: int = 2  # decoder processes (and preprocessing threads)
    backend: Backend = "pyav"  # decoder backend
    decode_timeout_s: float | None = 300.0  # a decode taking longer fails with stage "timeout"
    batch_frames: int = 64  # input frames per forward pass, across videos
    precision: str = "fp32"  # fp32, or fp16/bf16 autocast


def is_out_of_memory(err: BaseException) -> bool:
    """A device or host allocation failure (CPU allocations fail as a plain RuntimeError)."""
    import torch

    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


class _Sink:
    """Runs store writes on a background thread, in order; re-raises its errors here."""

    def __init__(self, writers: dict[str, Any], result: Result, maxsize: int = 64) -> None:
        self.writers, self.result = writers, result
        self.queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="vdial-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (op := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure so producers never block
            t0 = time.perf_counter()
            try:
                op()
            except BaseException as err:  # noqa: BLE001 - re-raised in the producer thread
                self.error = err
            self.result.seconds["write"] += time.perf_counter() - t0

    def put(self, op: Callable[[], None]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(op)

    def add(self, feature: str, item_id: str, rows: np.ndarray, extras: dict) -> None:
        self.put(lambda: self.writers[feature].add(item_id, rows, **extras))

    def fail(self, feature: str, item_id: str, stage: str, message: str) -> None:
        self.result.failed[item_id] = {"stage": stage, "message": message}
        counts = self.result.failed_by_feature
        counts[feature] = counts.get(feature, 0) + 1
        self.put(lambda: self.writers[feature].fail(item_id, stage, message))

    def close(self) -> None:
        """Finish queued writes and flush every writer (its last, partial segment)."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        t0 = time.perf_counter()
        for writer in self.writers.values():
            writer.flush()
        self.result.seconds["write"] += time.perf_counter() - t0


class _Batcher:
    """Collects several videos' units for one encoder and runs them in one forward pass."""

    def __init__(self, name: str, encoder: Encoder, sink: _Sink, config: PipelineConfig, result):
        self.name, self.encoder, self.sink, self.result = name, encoder, sink, result
        self.batch_units = max(1, config.batch_frames // encoder.spec.clip_len)
        self.precision = config.precision
        self.items: list[tuple[str, Sequence[Any], np.ndarray, np.ndarray]] = []
        self.units = 0

    def add(self, item_id: str, units: Sequence[Any], timestamps, indices) -> None:
        self.items.append((item_id, units, timestamps, indices))
        self.units += len(units)
        if self.units >= self.batch_units:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        t0 = time.perf_counter()
        items, self.items, self.units = self.items, [], 0
        self._run(items)
        self.result.seconds["encode"] += time.perf_counter() - t0

    def _run(self, items) -> None:
        try:
            outputs = self._forward([unit for _, units, _, _ in items for unit in units])
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            _release_cached_memory()
            if len(items) > 1:  # retry the items one by one: only those too big on their own fail
                for item in items:
                    self._run([item])
                return
            self.sink.fail(self.name, items[0][0], "oom", f"out of memory: {err}".splitlines()[0])
            return
        start = 0
        for item_id, units, timestamps, indices in items:
            rows, extras = self.encoder.to_rows(
                outputs[start : start + len(units)], timestamps, indices
            )
            self.sink.add(self.name, item_id, rows, extras)
            start += len(units)
        self.result.done[self.name] = self.result.done.get(self.name, 0) + len(items)

    def _forward(self, flat: list[Any]) -> list[Any]:
        import torch

        device = self.encoder.device
        outputs: list[Any] = []
        with torch.inference_mode(), _autocast(device, self.precision):
            # Units are tensors (stacked into batches here) or, for encoders whose units
            # differ in size, any other objects (passed on as lists).
            for k in range(0, len(flat), self.batch_units):
                chunk = flat[k : k + self.batch_units]
                if isinstance(chunk[0], torch.Tensor):
                    chunk = torch.stack(chunk).to(device, non_blocking=True)
                outputs.extend(self.encoder.encode(chunk))
        return outputs


def _autocast(device, precision: str):
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _release_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Pipeline:
    """Decode, encode and write items for a fixed set of encoders on one device."""

    def __init__(self, encoders: dict[str, Encoder], config: PipelineConfig) -> None:
        self.encoders, self.config = encoders, config
        self.pool = DecodePool(config.decode_workers)
        # Twice the decoders: while one thread preprocesses a video, another keeps its decoder
        # busy (the pool lets at most `decode_workers` of them decode at once).
        self.threads = ThreadPoolExecutor(
            2 * config.decode_workers, thread_name_prefix="vdial-decode"
        )
        self._lock = threading.Lock()
        self.busy = threading.Lock()  # held by whoever runs it: one run at a time

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        self.pool.close()

    def run(
        self,
        items: Sequence[Item],
        writers: dict[str, Any],
        *,
        on_item: Callable[[Item, int, bool], None] | None = None,
    ) -> Result:
        """Extract `items` into `writers` (feature name -> FeatureWriter); flushes them.

        `on_item(item, frames, failed)` is called as each item leaves the decoder.
        """
        result = Result()
        sink = _Sink(writers, result)
        batchers = {
            name: _Batcher(name, enc, sink, self.config, result)
            for name, enc in self.encoders.items()
        }
        inflight: deque[tuple[Item, Future]] = deque()
        pending = iter(items)
        try:
            while True:
                while len(inflight) < 2 * self.config.decode_workers:
                    item = next(pending, None)
                    if item is None:
                        break
                    inflight.append((item, self.threads.submit(self._prepare, item, result)))
                if not inflight:
                    break
                item, future = inflight.popleft()
                prepared = future.result()
                result.videos += 1
                if isinstance(prepared, DecodeError):
                    stage = "timeout" if prepared.reason.startswith("timed out") else "decode"
                    for name in item.features:
                        sink.fail(name, item.id, stage, prepared.reason)
                    frames = 0
                else:
                    frames, per_encoder = prepared
                    result.frames += frames
                    for name, (units, timestamps, indices) in per_encoder.items():
                        batchers[name].add(item.id, units, timestamps, indices)
                if on_item is not None:
                    on_item(item, frames, isinstance(prepared, DecodeError))
            for batcher in batchers.values():
                batcher.flush()
        finally:
            for _, future in inflight:
                future.cancel()
            sink.close()
        return result

    def _prepare(self, item: Item, result: Result):
        """Decode one item (in a worker process) and preprocess it for each wanted encoder."""
        wanted = {name: self.encoders[name] for name in item.features}

        def plans(total: int, fps: float = 0.0) -> list[np.ndarray]:
            path = Path(item.path)
            return [resolve(enc.frame_indices, total, fps, path) for enc in wanted.values()]

        t0 = time.perf_counter()
        try:
            if item.path is None:
                raise DecodeError(item.id, "media file not found (manifest path is empty)")
            if not Path(item.path).exists():
                raise DecodeError(item.path, "file not found")
            # Each encoder gets exactly the frames it would get decoded on its own (decode_sets).
            decoded = self.pool.decode_sets(
                Path(item.path), plans, self.config.backend, self.config.decode_timeout_s
            )
        except DecodeError as err:
            return err
        t1 = time.perf_counter()
        per_encoder = {}
        for (name, enc), frames in zip(wanted.items(), decoded, strict=True):
            units = enc.preprocess(frames.frames)
            per_encoder[name] = (units, frames.timestamps, frames.indices)
        t2 = time.perf_counter()
        with self._lock:
            result.seconds["decode"] += t1 - t0
            result.seconds["preprocess"] += t2 - t1
        return len(np.unique(np.concatenate([f.indices for f in decoded]))), per_encoder
