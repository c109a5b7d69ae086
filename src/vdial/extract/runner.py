"""Run frozen encoders over a manifest's media into a FeatureStore: resumable, on every device.

The work is cut into tasks of `segment_items` media items. A task runs the pipeline of one
device (`vdial.extract.pipeline`: decode once for all encoders, batched forward passes, a writer
thread) and writes one segment per feature without committing it; the caller commits the
segments when the task's result arrives. Tasks run in this process (one device), on a local
dask cluster with one worker per device (several devices), or on any dask.distributed cluster
(`scheduler="tcp://..."`). Because a segment becomes visible only at its commit, a task that
dies or is retried never makes an item visible twice, and a killed run loses at most its
uncommitted tasks: re-running skips every committed item and does only the missing work.

A task's batches depend only on its own items, and tasks are cut from the sorted list of
missing ids in whole `segment_items` chunks, so a resumed run computes exactly the batches the
uninterrupted run would have: the stores end bit-identical.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdial import __version__
from vdial.cache import Feature, FeatureStore
from vdial.extract.decode import DEFAULT_BACKEND, Backend
from vdial.extract.encoders import Encoder, build_encoder
from vdial.extract.pipeline import Item, Pipeline, PipelineConfig, Result
from vdial.extract.progress import ExtractProgress
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
    decode_workers: int = 2  # decoder processes per device
    batch_frames: int = 64  # input frames per forward pass, across videos
    precision: str = "fp32"  # fp32, or fp16/bf16 autocast (recorded in the feature's spec)
    devices: tuple[str, ...] = ("cpu",)  # one pipeline per device; ("auto",): every GPU or CPU
    scheduler: str | None = None  # None: this machine; "tcp://host:port": a dask cluster
    split: str | None = None  # only media of this split
    ids: tuple[str, ...] | None = None  # only these media ids (--ids-file)
    limit: int | None = None  # at most this many media items (after the filters)
    retry_failed: bool = False  # try again items that failed in an earlier run
    segment_items: int = 64  # media items per task, i.e. per committed segment
    dtype: str = "float16"  # stored dtype of the features ("float16" or "float32")

    def pipeline(self) -> PipelineConfig:
        return PipelineConfig(
            decode_workers=self.decode_workers,
            backend=self.backend,
            decode_timeout_s=self.decode_timeout_s,
            batch_frames=self.batch_frames,
            precision=self.precision,
        )


@dataclass
class ExtractSummary:
    """What a run did, per encoder feature, with the time spent per stage."""

    done: dict[str, int] = field(default_factory=dict)  # feature -> items written now
    skipped: dict[str, int] = field(default_factory=dict)  # feature -> items already present
    failed_before: dict[str, int] = field(default_factory=dict)  # feature -> earlier failures
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> stage, message
    failed_now: dict[str, int] = field(default_factory=dict)  # feature -> failures this run
    videos: int = 0  # media items processed in this run
    frames: int = 0  # frames decoded in this run
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds (summed)
    wall_s: float = 0.0  # elapsed time of the run
    devices: tuple[str, ...] = ()  # where the tasks ran


def resolve_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    """Expand "auto" to every visible GPU (or the CPU when there is none)."""
    if tuple(devices) != ("auto",):
        if "auto" in devices:
            raise ValueError(f"'auto' cannot be combined with other devices: {devices}")
        return tuple(devices)
    import torch

    count = torch.cuda.device_count()
    return tuple(f"cuda:{k}" for k in range(count)) or ("cpu",)


def build_encoders(config: ExtractConfig, device: str) -> dict[str, Encoder]:
    """Feature name -> encoder, built on `device`."""
    encoders = {}
    for ref in config.encoders:
        family = ref.partition(":")[0]
        encoder = build_encoder(
            ref,
            weights=config.weights.get(family),
            random_init=config.random_init,
            seed=config.seed,
            frames=config.frames,
            options=config.options.get(family),
        ).to(device)
        if encoder.spec.name in encoders:
            raise ValueError(f"two encoders write feature {encoder.spec.name!r}: {config.encoders}")
        encoders[encoder.spec.name] = encoder
    return encoders


# A dask worker keeps its pipeline and open features per process: it builds its encoders,
# starts its decoder processes and reads the store's indexes once, not once per task.
_WORKER: dict[tuple[str, str, str], tuple[Pipeline, dict[str, Feature]]] = {}
_WORKER_LOCK = threading.Lock()


def _worker_state(store_path: str, config: ExtractConfig, device: str):
    key = (store_path, repr(config), device)
    with _WORKER_LOCK:
        if key not in _WORKER:
            _close_worker_state()
            pipeline = Pipeline(build_encoders(config, device), config.pipeline())
            store = FeatureStore.open(store_path, mode="a")
            _WORKER[key] = (pipeline, {name: store[name] for name in pipeline.encoders})
        return _WORKER[key]


def _close_worker_state() -> None:
    """Stop the decoder processes and drop the encoders a worker process keeps."""
    for pipeline, _ in _WORKER.values():
        pipeline.close()
    _WORKER.clear()


def run_task(
    features: dict[str, Feature],
    config: ExtractConfig,
    items: tuple[Item, ...],
    pipeline: Pipeline,
    on_item: Callable[[Item, int, bool], None] | None = None,
) -> Result:
    """Extract one task's items; returns the written, uncommitted segments."""
    writers = {
        name: features[name].writer(segment_items=config.segment_items, commit=False)
        for name in pipeline.encoders
    }
    result = pipeline.run(items, writers, on_item=on_item)
    result.segments = {name: list(w.written) for name, w in writers.items() if w.written}
    return result


def _cluster_task(store_path: str, config: ExtractConfig, items, devices) -> Result:
    """`run_task` on a dask worker, on its own device."""
    from dask.distributed import get_worker

    worker = get_worker()
    if devices:  # our LocalCluster: worker k (named k) owns devices[k]
        device = devices[int(worker.name) % len(devices)]
    else:  # a remote worker sees its own GPU (launched with CUDA_VISIBLE_DEVICES) or none
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    # One task at a time per process, whatever the worker's thread count: the device runs one
    # batch at a time anyway, and the decoder processes are shared.
    pipeline, features = _worker_state(store_path, config, device)
    with pipeline.busy:
        return run_task(features, config, items, pipeline)


def select_ids(manifest: Manifest, config: ExtractConfig) -> tuple[list[str], dict]:
    """The media ids to extract (split, --ids-file, --limit) and their paths."""
    paths = manifest.media_paths(config.split)
    ids = sorted(paths)
    if config.ids is not None:
        unknown = sorted(set(config.ids) - set(paths))
        if unknown:
            where = f"split {config.split!r} of the manifest" if config.split else "the manifest"
            raise KeyError(f"{len(unknown)} requested id(s) are not in {where}: {unknown[:5]}")
        wanted = set(config.ids)
        ids = [i for i in ids if i in wanted]
    return (ids[: config.limit] if config.limit is not None else ids), paths


def run_extraction(
    manifest: Manifest,
    store_path: str | Path,
    config: ExtractConfig,
    *,
    progress: bool = True,
) -> ExtractSummary:
    """Extract every configured encoder for the manifest's media into the store."""
    start = time.perf_counter()
    ids, paths = select_ids(manifest, config)
    devices = resolve_devices(config.devices)
    local = config.scheduler is None and len(devices) == 1
    # The features' definitions come from encoders built here; a single local device reuses them.
    encoders = build_encoders(config, devices[0] if local else "cpu")
    store = FeatureStore.open(store_path, mode="a")
    features = {
        name: store.create_feature(
            name,
            item_shape=enc.item_shape,
            dtype=config.dtype,
            spec={**enc.provenance(), "precision": config.precision, "code_version": __version__},
            extras=enc.row_extras,
            exist_ok=True,
        )
        for name, enc in encoders.items()
    }
    summary = ExtractSummary(devices=devices)
    todo: dict[str, set[str]] = {}
    for name, feat in features.items():
        missing = feat.missing(ids)
        failed = set() if config.retry_failed else set(feat.failures)
        todo[name] = {i for i in missing if i not in failed}
        summary.done[name] = 0
        summary.skipped[name] = len(ids) - len(missing)
        summary.failed_before[name] = len(missing) - len(todo[name])
    items = [
        Item(i, None if paths[i] is None else str(paths[i]), tuple(n for n in todo if i in todo[n]))
        for i in ids
        if any(i in t for t in todo.values())
    ]
    tasks = [
        tuple(items[k : k + config.segment_items])
        for k in range(0, len(items), config.segment_items)
    ]
    total = Result()

    def commit(result: Result) -> None:
        for name, segments in result.segments.items():
            for segment in segments:
                features[name].commit(segment)
        total.merge(result)

    with ExtractProgress(len(items), enabled=progress) as bar:
        if local:
            pipeline = Pipeline(encoders, config.pipeline())
            try:
                for task in tasks:
                    commit(run_task(features, config, task, pipeline, on_item=bar.item))
            finally:
                pipeline.close()
        else:
            del encoders  # the workers build their own
            _run_on_cluster(str(store_path), config, tasks, devices, commit, bar)
    summary.failed, summary.videos, summary.frames = total.failed, total.videos, total.frames
    summary.done.update(total.done)
    summary.failed_now = total.failed_by_feature
    summary.seconds = total.seconds
    summary.wall_s = time.perf_counter() - start
    return summary


def _run_on_cluster(store_path, config, tasks, devices, commit, bar) -> None:
    """Run the tasks on dask workers and commit each task's segments as it finishes."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if config.scheduler is None:
        # One single-threaded worker process per device: one task per device at a time.
        cluster = LocalCluster(
            n_workers=len(devices),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources={"GPU": 1} if devices[0].startswith("cuda") else None,
        )
        client, pinned = Client(cluster), devices
    else:
        client, pinned = Client(config.scheduler), ()
    try:
        workers = client.scheduler_info()["workers"].values()
        # Workers that declare GPUs get one task per GPU at a time; CPU-only clusters need none.
        gpus = any(w.get("resources", {}).get("GPU") for w in workers)
        futures = [
            client.submit(
                _cluster_task,
                store_path,
                config,
                task,
                pinned,
                pure=False,
                resources={"GPU": 1} if gpus else None,
            )
            for task in tasks
        ]
        for future in as_completed(futures):
            result = future.result()
            commit(result)
            bar.task(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def summary_rows(summary: ExtractSummary) -> list[dict[str, Any]]:
    """One row per feature for the CLI's table (and tests)."""
    return [
        {
            "feature": name,
            "written": summary.done[name],
            "already there": summary.skipped[name],
            "failed earlier": summary.failed_before[name],
            "failed now": summary.failed_now.get(name, 0),
        }
        for name in summary.done
    ]
