"""Views: features derived from a cached one without touching pixels, computed out of core.

`make_view(store, "dinov2", view_op("pool2d", grid=8))` writes feature "dinov2/pool8x8": the
parent's ids are split into blocks, and each block is one dask task that opens the store itself,
reads its items one by one, transforms them (see `view_ops`) and commits them as one segment
through its own writer. Memory therefore grows with block size x workers, never with the number of
items, and several workers (threads, or dask.distributed processes and machines sharing the store's
file system) fill one view at once.

Resuming only computes the ids the view lacks; the parent's failures carry over as the view's, so a
consumer knows which items are absent for a recorded reason. Every item is transformed on its own,
so the values never depend on block size, worker count or scheduler. The lineage names the parent,
its fingerprint and the transform, so views of views form a chain back to the extracted feature.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
from dask.callbacks import Callback
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from vdial.cache.feature import Feature
from vdial.cache.store import FeatureStore
from vdial.cache.view_ops import Parent, ViewOp

if TYPE_CHECKING:
    from distributed import Client

BLOCK_ITEMS = 64  # items per task and per written segment
LOCAL_SCHEDULERS = ("threads", "sync")  # dask's local schedulers; anything else is distributed
_BLOCK_KEY = "view-block-"


@dataclass(frozen=True, kw_only=True)
class _Job:
    """What every block task of one run needs; small and picklable for distributed workers."""

    path: str | Path  # the store: a local path or a URL (`FeatureStore.path`)
    storage_options: dict[str, Any]  # fsspec options of a URL store
    parent: str  # parent feature name
    view: str  # view feature name
    op: ViewOp
    layout: Parent
    run: str  # unique per make_view call: keys the per-thread store handles


# (run, thread id) -> (parent, view) handles. Opening a feature reads every segment index, so
# opening one per block would cost O(blocks^2) metadata reads over a run; each worker thread opens
# them once per run instead, and keeps its own view handle, as concurrent writers must.
_open: dict[tuple[str, int], tuple[Feature, Feature]] = {}
_open_lock = threading.Lock()


def _handles(job: _Job) -> tuple[Feature, Feature]:
    key = (job.run, threading.get_ident())
    with _open_lock:
        handles = _open.get(key)
    if handles is None:
        store = FeatureStore.open(job.path, "a", storage_options=job.storage_options or None)
        handles = (store[job.parent], store[job.view])
        with _open_lock:
            _open[key] = handles
    return handles


def _release(run: str) -> None:
    """Forget a finished run's handles (their indexes grow with the features)."""
    with _open_lock:
        for key in [k for k in _open if k[0] == run]:
            del _open[key]


def _run_block(job: _Job, ids: list[str]) -> int:
    """Transform `ids` and commit them as one segment of the view; returns the item count."""
    parent, view = _handles(job)
    with view.writer(segment_items=len(ids)) as writer:
        # Blocks follow the parent's segment order, so this reads one or two parent segments.
        for item_id, item in parent.iter_items(ids):
            data, extras = job.op(item.pop("data"), item, job.layout)
            writer.add(item_id, data, **extras)
    return len(ids)


def make_view(
    store: FeatureStore,
    parent: str,
    op: ViewOp,
    *,
    name: str | None = None,
    block_items: int = BLOCK_ITEMS,
    workers: int | None = None,
    scheduler: str | Client = "threads",
    progress: bool = True,
) -> Feature:
    """Write (or resume) feature `name`, default "<parent>/<op suffix>": `op` applied to `parent`.

    `scheduler` is "threads" (local, `workers` threads, default one per CPU), "sync" (one thread,
    for debugging) or a `dask.distributed.Client` or scheduler address, whose workers must see
    the store at the same path. Raises ValueError when the op does not apply to the parent, or
    when `name` exists with another definition.
    """
    if block_items < 1:
        raise ValueError(f"block_items must be >= 1, got {block_items}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    source = store[parent]
    layout = Parent(name=parent, spec=source.spec, item_shape=source.item_shape)
    item_shape, spec_changes = op.output(layout)
    extras = {k: (shape, dtype.name) for k, (shape, dtype) in source.extras.items()}
    lineage: dict[str, Any] = {
        "parent": parent,
        "parent_fingerprint": source.fingerprint(),
        "transform": op.transform(),
    }
    if op.extras == "drop" and extras:
        lineage["dropped_extras"] = {"names": sorted(extras), "why": f"rows are {op.rows_are}"}
        extras = {}
    view = store.create_feature(
        name or f"{parent}/{op.suffix()}",
        item_shape=item_shape,
        dtype=source.dtype.name,
        spec={**source.spec, **spec_changes},
        extras=extras,
        lineage=lineage,
        exist_ok=True,
    )
    _carry_failures(source, view)
    todo = view.missing(source.ids)
    run = uuid.uuid4().hex
    job = _Job(
        path=store.path,
        storage_options=store.storage_options,
        parent=parent,
        view=view.name,
        op=op,
        layout=layout,
        run=run,
    )
    # The job rides in a partial so that dask does not traverse the op and spec as arguments.
    task = dask.delayed(partial(_run_block, job), pure=False)
    blocks = [
        task(todo[i : i + block_items], dask_key_name=f"{_BLOCK_KEY}{run}-{i // block_items}")
        for i in range(0, len(todo), block_items)
    ]
    if blocks:
        with _progress_bar(len(todo), f"{parent} -> {view.name}", enabled=progress) as advance:
            _compute(blocks, run, scheduler=scheduler, workers=workers, on_block=advance)
    view.refresh()  # pick up the segments the worker threads committed
    return view


def _carry_failures(source: Feature, view: Feature) -> None:
    # Written by this process before the blocks run; a resumed view records each failure once.
    inherited = {
        k: v for k, v in source.failures.items() if k not in view.failures and k not in view
    }
    with view.writer() as writer:
        for item_id, failure in sorted(inherited.items()):
            writer.fail(item_id, f"parent {source.name}: {failure['stage']}", failure["message"])


def _compute(
    blocks: list[Any],
    run: str,
    *,
    scheduler: str | Client,
    workers: int | None,
    on_block: Callable[[int], None],
) -> None:
    """Run the block tasks, calling `on_block(items)` as each one finishes."""
    if isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:

        def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(key, str) and key.startswith(_BLOCK_KEY):
                on_block(result)

        threads = {"num_workers": workers} if scheduler == "threads" else {}
        try:
            with Callback(posttask=posttask):
                dask.compute(*blocks, scheduler=scheduler, **threads)
        finally:
            _release(run)
        return
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        for future in as_completed(client.compute(blocks)):
            on_block(future.result())
    finally:
        client.run(_release, run)  # on every worker process
        if client is not scheduler:
            client.close()


class _ItemsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text("-- items/s" if task.speed is None else f"{task.speed:.1f} items/s")


@contextmanager
def _progress_bar(
    total: int, description: str, *, enabled: bool
) -> Iterator[Callable[[int], None]]:
    """A rich bar over `total` items; yields the function that advances it."""
    if not enabled:
        yield lambda items: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _ItemsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(description, total=total)
        yield lambda items: bar.advance(task, items)
