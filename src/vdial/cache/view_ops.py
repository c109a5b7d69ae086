"""View ops: the per-item transforms behind `vdial cache pool`, one frozen dataclass per op.

An op checks that it applies to a parent feature (spec and item shape, with a clear error), says
what the view's item shape and spec become, transforms one item (NumPy in, NumPy out, computed in
float32 torch; the writer stores the parent's dtype), and says what happens to the per-row extras:
kept while rows stay frames, subsampled with the frames, or dropped (noted in the lineage) once
rows stop being frames. Ops are pure functions of one item, so a view's values never depend on how
items are batched into blocks or spread over workers.

What each op matches (sources read, no code copied):
- pool2d, pool3d: MERV (princetonvisualai/merv, merv/util/nn_utils.py). `AveragePoolingProjector`
  pools each frame's patch grid with `AdaptiveAvgPool2d((n, n))`; `AveragePooling3DProjector`
  pools (C, F, H, W) with `AdaptiveAvgPool3d((F // factor, n, n))`, the factor 2 ("time halved")
  coming from the `frame2` arch specifier (merv/models/vidlms/merv.py). For odd F the adaptive
  windows overlap by one frame; F = 1 would give 0 steps there, here it keeps its one frame.
- temporal-mean, spatial-mean: the temporal-only and spatial-only visual features of VGD-GPT2's
  ablations (Le & Hoi, ACL 2020; no released code): the mean over frames keeps the spatial tokens,
  the mean over tokens keeps one token per frame.
- st-pool: Video-ChatGPT (mbzuai-oryx/Video-ChatGPT, `get_spatio_temporal_features`), also used by
  BT-Adapter's LLaVA stage: T per-frame means over tokens first, then N per-token means over
  frames. Video-ChatGPT zero-pads the T part to 100; a ragged store does not need that.
- concat2x2: V2Dial's token pooling (adnenabdessaied/V2Dial, models/v2dial.py `encode_vis`)
  concatenates 4 tokens along channels, in raster order. Its released code does
  `view(bs, pn / 4, 4 * hs)`, which on its 16x16 grid groups a 1x4 run of one row; this op groups
  the 2x2 neighbourhood the paper describes, channels ordered top-left, top-right, bottom-left,
  bottom-right (raster order within the window). Odd grids are zero-padded at the bottom/right.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vdial.registry import Registry

VIEW_OPS: Registry[type[ViewOp]] = Registry("view op")


@dataclass(frozen=True, kw_only=True)
class Parent:
    """What an op may know of its parent feature: picklable, no store handle."""

    name: str  # feature name, for error messages
    spec: dict[str, Any]  # the parent's spec (grid, prefix tokens, frames, ...)
    item_shape: tuple[int, ...]  # per-row shape; axis 0 of each item (frames) is ragged


class ViewOp(ABC):
    """Base of the ops: subclasses are frozen dataclasses whose fields are the op's parameters."""

    name: ClassVar[str]  # registry name, used by `--op` and in default view names
    # What happens to per-row extras: "keep" (rows are still the same frames), "select" (rows
    # are a subset of the frames: the op selects the extras' rows too), "drop" (rows stop being
    # frames).
    extras: ClassVar[Literal["keep", "select", "drop"]] = "keep"
    rows_are: ClassVar[str] = "frames"  # what a view row is, recorded when extras are dropped

    def suffix(self) -> str:
        """The last part of the default view name, "<parent>/<suffix>"."""
        return self.name

    def transform(self) -> dict[str, Any]:
        """The lineage's "transform": the op and its parameters."""
        return {"op": self.name, **asdict(self)}

    @abstractmethod
    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        """(view item_shape, spec keys that change); ValueError if the op does not apply."""

    @abstractmethod
    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        """One item's rows, float32 (rows, *item_shape) -> (view rows, *view item_shape)."""

    def __call__(
        self, data: np.ndarray, extras: dict[str, np.ndarray], parent: Parent
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Transform one item and its extras; the result is float32, cast by the writer."""
        # A float32 copy: store reads may be read-only or shared, and float16 math loses digits.
        out = self.apply(torch.from_numpy(np.array(data, dtype=np.float32)), parent).numpy()
        return out, (extras if self.extras == "keep" else {})


def _register(cls: type[ViewOp]) -> type[ViewOp]:
    return VIEW_OPS.register(cls.name)(cls)


def view_op(name: str, **params: Any) -> ViewOp:
    """The op registered as `name` with `params`, e.g. view_op("pool2d", grid=4)."""
    cls = VIEW_OPS.get(name)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        takes = ", ".join(known) or "no parameters"
        raise ValueError(f"op {name!r} does not take {', '.join(unknown)} (it takes: {takes})")
    return cls(**params)


# -- checks on the parent ----------------------------------------------------------------------


def _shape(item_shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["T", *map(str, item_shape)]) + ")"


def _positive(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def _prefix_tokens(parent: Parent) -> int:
    """The CLS/register tokens each row starts with (0 unless the spec keeps them)."""
    if not parent.spec.get("keep_prefix_tokens"):
        return 0
    count = parent.spec.get("prefix_tokens")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(
            f"feature {parent.name!r} keeps prefix tokens but has spec['prefix_tokens'] = "
            f"{count!r}, not a count"
        )
    return count


def _tokens(parent: Parent, op: str) -> tuple[int, int]:
    """(tokens per row, dim) of (T, N, D) items holding patch tokens only."""
    if len(parent.item_shape) != 2:
        raise ValueError(
            f"{op} needs (T, N, D) token items; feature {parent.name!r} has "
            f"{_shape(parent.item_shape)}"
        )
    prefix = _prefix_tokens(parent)
    if prefix:
        raise ValueError(
            f"feature {parent.name!r} keeps {prefix} prefix (CLS/register) tokens before its "
            f"patch tokens; {op} needs patch tokens only: make a drop-prefix view of it first"
        )
    return parent.item_shape[0], parent.item_shape[1]


def _patch_grid(parent: Parent, op: str) -> tuple[int, int, int]:
    """(H, W, D) of (T, H*W, D) items whose spec names the per-frame patch grid [H, W]."""
    grid = parent.spec.get("grid")
    if not (
        isinstance(grid, list)
        and len(grid) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid)
    ):
        raise ValueError(
            f"feature {parent.name!r} has spec['grid'] = {grid!r}; {op} needs the per-frame "
            f"patch grid [H, W]"
        )
    h, w = grid
    tokens, dim = _tokens(parent, op)
    if tokens != h * w:
        raise ValueError(
            f"feature {parent.name!r} has item shape {parent.item_shape}; a {h}x{w} patch grid "
            f"needs ({h * w}, D)"
        )
    return h, w, dim


def _check_grid(grid: int, h: int, w: int) -> None:
    if grid > min(h, w):
        raise ValueError(f"grid must be between 1 and {min(h, w)} for a {h}x{w} patch grid")


def _frames(spec: dict[str, Any], kept: Callable[[int], int]) -> dict[str, Any]:
    """{"frames": kept(frames)} when the parent's spec records a frame count, else nothing."""
    frames = spec.get("frames")
    if isinstance(frames, bool) or not isinstance(frames, int):
        return {}
    return {"frames": kept(frames)}


# -- the ops -----------------------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class Pool2d(ViewOp):
    """MERV's 2D pooling: each frame's HxW patch grid adaptive-average-pooled to grid x grid."""

    name: ClassVar[str] = "pool2d"
    grid: int = 8  # output side n: n*n tokens per frame (MERV's 64 by default)

    def __post_init__(self) -> None:
        _positive(self.grid, "grid")

    def suffix(self) -> str:
        return f"pool{self.grid}x{self.grid}"

    def transform(self) -> dict[str, Any]:
        # As recorded before there were several ops, so that those views still resume.
        return {"op": "adaptive_avg_pool2d", "grid": [self.grid, self.grid]}

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        h, w, dim = _patch_grid(parent, self.name)
        _check_grid(self.grid, h, w)
        return (self.grid * self.grid, dim), {"grid": [self.grid, self.grid]}

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        h, w = parent.spec["grid"]
        t, _, dim = x.shape
        pooled = F.adaptive_avg_pool2d(x.reshape(t, h, w, dim).permute(0, 3, 1, 2), self.grid)
        return pooled.permute(0, 2, 3, 1).reshape(t, -1, dim)


@_register
@dataclass(frozen=True, kw_only=True)
class Pool3d(ViewOp):
    """MERV's 3D pooling: (T, H, W) adaptive-average-pooled to (max(1, T // 2), grid, grid)."""

    name: ClassVar[str] = "pool3d"
    extras: ClassVar[Literal["keep", "select", "drop"]] = "drop"
    rows_are: ClassVar[str] = "time steps pooled over about 2 frames each"
    grid: int = 8  # output side n: n*n tokens per time step

    def __post_init__(self) -> None:
        _positive(self.grid, "grid")

    def suffix(self) -> str:
        return f"pool3d-{self.grid}x{self.grid}"

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        h, w, dim = _patch_grid(parent, self.name)
        _check_grid(self.grid, h, w)
        frames = _frames(parent.spec, lambda n: max(1, n // 2))
        return (self.grid * self.grid, dim), {"grid": [self.grid, self.grid], **frames}

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        h, w = parent.spec["grid"]
        t, _, dim = x.shape
        volume = x.reshape(t, h, w, dim).permute(3, 0, 1, 2)  # (C=D, T, H, W), unbatched
        pooled = F.adaptive_avg_pool3d(volume, (max(1, t // 2), self.grid, self.grid))
        return pooled.permute(1, 2, 3, 0).reshape(pooled.shape[1], -1, dim)


@_register
@dataclass(frozen=True, kw_only=True)
class TemporalMean(ViewOp):
    """The mean over frames: one row holding the N spatial tokens (VGD-GPT2's spatial-only)."""

    name: ClassVar[str] = "temporal-mean"
    extras: ClassVar[Literal["keep", "select", "drop"]] = "drop"
    rows_are: ClassVar[str] = "the mean over all frames (one row)"

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        if len(parent.item_shape) != 2:
            raise ValueError(
                f"{self.name} needs (T, N, D) token items; feature {parent.name!r} has "
                f"{_shape(parent.item_shape)}"
            )
        return parent.item_shape, _frames(parent.spec, lambda n: 1)

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        return x.mean(dim=0, keepdim=True)


@_register
@dataclass(frozen=True, kw_only=True)
class SpatialMean(ViewOp):
    """The mean over each frame's patch tokens: one token per frame (VGD-GPT2's temporal-only)."""

    name: ClassVar[str] = "spatial-mean"

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        _, dim = _tokens(parent, self.name)
        return (dim,), {"grid": None}

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        return x.mean(dim=1)


@_register
@dataclass(frozen=True, kw_only=True)
class SpatioTemporalPool(ViewOp):
    """Video-ChatGPT's pooling: T per-frame token means, then N per-token frame means."""

    name: ClassVar[str] = "st-pool"
    extras: ClassVar[Literal["keep", "select", "drop"]] = "drop"
    rows_are: ClassVar[str] = "T per-frame means over tokens, then N per-token means over frames"

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        _, dim = _tokens(parent, self.name)
        return (dim,), {"grid": None}

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        return torch.cat([x.mean(dim=1), x.mean(dim=0)])


@_register
@dataclass(frozen=True, kw_only=True)
class Concat2x2(ViewOp):
    """V2Dial-style token pooling: each 2x2 patch neighbourhood concatenated into one 4D token."""

    name: ClassVar[str] = "concat2x2"

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        h, w, dim = _patch_grid(parent, self.name)
        grid = [math.ceil(h / 2), math.ceil(w / 2)]
        dims = {"dim": 4 * dim} if "dim" in parent.spec else {}
        return (grid[0] * grid[1], 4 * dim), {"grid": grid, **dims}

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        h, w = parent.spec["grid"]
        t, _, dim = x.shape
        # Zero-pad an odd grid at the bottom/right: F.pad takes (last dim first) before/after.
        frames = F.pad(x.reshape(t, h, w, dim), (0, 0, 0, w % 2, 0, h % 2))
        rows, cols = frames.shape[1] // 2, frames.shape[2] // 2
        windows = frames.reshape(t, rows, 2, cols, 2, dim).permute(0, 1, 3, 2, 4, 5)
        return windows.reshape(t, rows * cols, 4 * dim)


@_register
@dataclass(frozen=True, kw_only=True)
class DropPrefix(ViewOp):
    """Drop the CLS/register tokens that rows start with when the spec keeps them."""

    name: ClassVar[str] = "drop-prefix"

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        prefix = _prefix_tokens(parent)
        if not prefix:
            raise ValueError(
                f"feature {parent.name!r} has no prefix tokens to drop (spec keep_prefix_tokens "
                f"= {parent.spec.get('keep_prefix_tokens')!r}, prefix_tokens = "
                f"{parent.spec.get('prefix_tokens')!r})"
            )
        if len(parent.item_shape) != 2 or parent.item_shape[0] <= prefix:
            raise ValueError(
                f"feature {parent.name!r} has item shape {parent.item_shape}; {prefix} prefix "
                f"tokens need (N + {prefix}, D) rows with N > 0"
            )
        return (parent.item_shape[0] - prefix, parent.item_shape[1]), {"keep_prefix_tokens": False}

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        return x[:, _prefix_tokens(parent) :]


@_register
@dataclass(frozen=True, kw_only=True)
class Subsample(ViewOp):
    """Frame subsampling: every k-th frame, or n frames evenly spaced with both ends kept."""

    name: ClassVar[str] = "subsample"
    extras: ClassVar[Literal["keep", "select", "drop"]] = "select"
    every: int | None = None  # keep frames 0, k, 2k, ...
    frames: int | None = None  # keep n frames at round(linspace(0, T - 1, n)); all when T <= n

    def __post_init__(self) -> None:
        if (self.every is None) == (self.frames is None):
            raise ValueError("subsample takes exactly one of every (k) or frames (n)")
        if self.every is not None:
            _positive(self.every, "every")
        else:
            _positive(self.frames, "frames")

    def suffix(self) -> str:
        return f"subsample-every{self.every}" if self.every else f"subsample-frames{self.frames}"

    def transform(self) -> dict[str, Any]:
        return {"op": self.name, **{k: v for k, v in asdict(self).items() if v is not None}}

    def output(self, parent: Parent) -> tuple[tuple[int, ...], dict[str, Any]]:
        if self.every:
            return parent.item_shape, _frames(parent.spec, lambda n: math.ceil(n / self.every))
        return parent.item_shape, _frames(parent.spec, lambda n: min(n, self.frames))

    def rows(self, count: int) -> np.ndarray:
        if self.every:
            return np.arange(0, count, self.every)
        if count <= self.frames:
            return np.arange(count)
        return np.linspace(0, count - 1, self.frames).round().astype(np.int64)

    def apply(self, x: torch.Tensor, parent: Parent) -> torch.Tensor:
        return x[torch.from_numpy(self.rows(len(x)))]

    def __call__(
        self, data: np.ndarray, extras: dict[str, np.ndarray], parent: Parent
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out, _ = super().__call__(data, {}, parent)
        keep = self.rows(len(data))
        return out, {k: v[keep] for k, v in extras.items()}
