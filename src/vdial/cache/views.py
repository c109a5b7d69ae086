"""Derived features computed from cached ones without touching pixels, with lineage recorded.

`pool_spatial` is MERV's 2D pooling: each frame's H'xW' patch-token grid is average-pooled to
g x g, turning (T, H'*W', D) items into (T, g*g, D). It streams one item at a time, so a view of
a feature larger than memory is fine, and it resumes by skipping ids the view already holds.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from vdial.cache.feature import Feature
from vdial.cache.store import FeatureStore


def pool_tokens(tokens: np.ndarray, hw: tuple[int, int], grid: int) -> np.ndarray:
    """Adaptive-average-pool (T, H*W, D) patch tokens to (T, grid*grid, D), in float32."""
    h, w = hw
    frames, count, dim = tokens.shape
    if count != h * w:
        raise ValueError(f"tokens have {count} patches per frame, grid {h}x{w} needs {h * w}")
    x = torch.from_numpy(np.ascontiguousarray(tokens)).float()
    x = x.reshape(frames, h, w, dim).permute(0, 3, 1, 2)  # (T, D, H, W) for the 2D op
    pooled = F.adaptive_avg_pool2d(x, grid)
    return pooled.permute(0, 2, 3, 1).reshape(frames, grid * grid, dim).numpy()


def pool_spatial(
    store: FeatureStore,
    source: str,
    grid: int,
    *,
    name: str | None = None,
    progress: bool = True,
) -> Feature:
    """Write feature `name` (default "<source>/pool<g>x<g>"): `source` pooled to grid x grid.

    `source` items must be (T, H'*W', D) with `spec["grid"] == [H', W']`. Extras are copied,
    pooling runs in float32 and the result is stored in the source's dtype.
    """
    parent = store[source]
    patch_grid = parent.spec.get("grid")
    if not (
        isinstance(patch_grid, list)
        and len(patch_grid) == 2
        and all(isinstance(n, int) and n > 0 for n in patch_grid)
    ):
        raise ValueError(
            f"feature {source!r} has spec['grid'] = {patch_grid!r}; pool_spatial needs the "
            f"per-frame patch grid [H, W]"
        )
    h, w = patch_grid
    if len(parent.item_shape) != 2 or parent.item_shape[0] != h * w:
        raise ValueError(
            f"feature {source!r} has item shape {parent.item_shape}; a {h}x{w} patch grid needs "
            f"({h * w}, D)"
        )
    if not 1 <= grid <= min(h, w):
        raise ValueError(f"grid must be between 1 and {min(h, w)} for a {h}x{w} patch grid")
    view = store.create_feature(
        name or f"{source}/pool{grid}x{grid}",
        item_shape=(grid * grid, parent.item_shape[1]),
        dtype=parent.dtype.name,
        spec={**parent.spec, "grid": [grid, grid]},
        extras={k: (shape, dtype.name) for k, (shape, dtype) in parent.extras.items()},
        lineage={
            "parent": source,
            "parent_fingerprint": parent.fingerprint(),
            "transform": {"op": "adaptive_avg_pool2d", "grid": [grid, grid]},
        },
        exist_ok=True,
    )
    todo = view.missing(parent.ids)
    # The parent's failures carry over, so that a consumer of the view knows which items are
    # absent for a recorded reason rather than never computed.
    inherited = {k: v for k, v in parent.failures.items() if k not in view.failures}
    with view.writer() as writer:
        for item_id, failure in sorted(inherited.items()):
            writer.fail(item_id, f"parent {source}: {failure['stage']}", failure["message"])
        for item_id in track(
            todo, description=f"pooling {source} to {grid}x{grid}", disable=not progress
        ):
            item = parent.item(item_id)
            data = item.pop("data")
            writer.add(item_id, pool_tokens(data, (h, w), grid), **item)
    return view
