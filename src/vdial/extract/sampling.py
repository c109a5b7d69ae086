"""Frame sampling plans: which source frames to decode, as pure functions of the frame count.

An index is a frame's position in presentation order (the order a decoder outputs frames), so a
plan means the same frames for every backend and for variable-frame-rate videos; the decoder
reports each frame's real timestamp beside it. A plan is any callable
`(num_frames, fps) -> int64 indices`, the form `read_frames` accepts; the frozen dataclasses at
the end wrap the functions so that an encoder spec can name its sampling and store it in
provenance (`dataclasses.asdict`). Indices may repeat (a short video sampled to more frames
than it has, overlapping clips); the decoder decodes each distinct frame once.

Time-based plans (`nearest_indices`, `fps_indices`) place frame i at i / fps, the stream's
nominal grid. On a constant-rate video that is each frame's timestamp; on a variable-rate one
it is an approximation, visible in the timestamps the decoder returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Plan = Callable[[int, float], np.ndarray]


def _check_count(num_frames: int) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample from {num_frames} frames")


def _positive(name: str, value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be positive, got {value}")


def _nearest(positions: np.ndarray, num_frames: int) -> np.ndarray:
    # floor(x + 0.5) rounds halves up; np.round rounds them to even, which would make the
    # nearest frame of evenly spaced times alternate direction.
    return np.clip(np.floor(positions + 0.5), 0, num_frames - 1).astype(np.int64)


def uniform_indices(num_frames: int, n: int) -> np.ndarray:
    """The middle frame of each of `n` equal segments (TSN/MERV-style uniform sampling).

    With fewer source frames than `n`, frames repeat so that exactly `n` indices come back.
    """
    _check_count(num_frames)
    if n <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {n}")
    edges = np.linspace(0, num_frames, n + 1)
    return np.minimum(((edges[:-1] + edges[1:]) / 2).astype(np.int64), num_frames - 1)


def linspace_indices(num_frames: int, n: int) -> np.ndarray:
    """`n` evenly spaced frames including the first and the last (one frame: the first)."""
    _check_count(num_frames)
    if n <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {n}")
    return _nearest(np.linspace(0, num_frames - 1, n), num_frames)


def nearest_indices(times: Sequence[float] | np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """The frame nearest each time in seconds (before the start: the first; after: the last).

    A one-frame source (an image) has no rate and every time maps to its frame.
    """
    _check_count(num_frames)
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("no times given")
    if not np.isfinite(t).all():
        raise ValueError(f"times must be finite, got {t.tolist()}")
    if num_frames == 1:
        return np.zeros(t.size, dtype=np.int64)
    _positive("source frame rate", fps)
    return _nearest(t * fps, num_frames)


def fps_indices(num_frames: int, fps: float, target_fps: float) -> np.ndarray:
    """One frame every 1 / `target_fps` seconds from 0 to the end, each the nearest source frame.

    A rate above the source's repeats frames, as resampling with FFmpeg's fps filter would.
    An image (one frame, rate 0) gives its one frame.
    """
    _check_count(num_frames)
    _positive("target frame rate", target_fps)
    if num_frames == 1 and not fps > 0:  # an image: one frame, no clock
        return np.zeros(1, dtype=np.int64)
    _positive("source frame rate", fps)
    # Sample times k / target_fps strictly before the end, num_frames / fps; the epsilon keeps a
    # time that lands on the end (exact in real numbers, not in floats) out.
    count = int(np.ceil(num_frames * target_fps / fps - 1e-9))
    return _nearest(np.arange(max(count, 1)) * (fps / target_fps), num_frames)


def clip_indices(num_frames: int, stack: int, step: int) -> np.ndarray:
    """Sliding clips for 3D CNNs: int64 [clips, stack], clip c starting at frame c * step.

    Frames after the last full clip are left out (as video_features does); a source shorter
    than one clip gives one clip padded with its last frame.
    """
    _check_count(num_frames)
    if stack <= 0 or step <= 0:
        raise ValueError(f"clip stack and step must be positive, got {stack} and {step}")
    starts = np.arange(0, max(num_frames - stack, 0) + 1, step, dtype=np.int64)
    return np.minimum(starts[:, None] + np.arange(stack, dtype=np.int64), num_frames - 1)


@dataclass(frozen=True, kw_only=True)
class Indices:
    """Exactly these frames; `read_frames` reports an index past the end as a DecodeError."""

    indices: tuple[int, ...]  # source frame indices, in the order wanted

    def __call__(self, num_frames: int, fps: float = 0.0) -> np.ndarray:
        if not self.indices:
            raise ValueError("no frame indices given")
        return np.asarray(self.indices, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class Uniform:
    """`n` frames spread over the whole video."""

    n: int  # frames to sample
    ends: bool = False  # True: evenly spaced incl. first and last; False: segment middles

    def __call__(self, num_frames: int, fps: float = 0.0) -> np.ndarray:
        if self.ends:
            return linspace_indices(num_frames, self.n)
        return uniform_indices(num_frames, self.n)


@dataclass(frozen=True, kw_only=True)
class AtTimes:
    """The frame nearest each of these times."""

    times: tuple[float, ...]  # seconds from the start of the stream

    def __call__(self, num_frames: int, fps: float = 0.0) -> np.ndarray:
        return nearest_indices(self.times, num_frames, fps)


@dataclass(frozen=True, kw_only=True)
class AtFps:
    """Frames at a fixed rate over the whole video."""

    fps: float  # frames per second to sample

    def __call__(self, num_frames: int, fps: float = 0.0) -> np.ndarray:
        return fps_indices(num_frames, fps, self.fps)


@dataclass(frozen=True, kw_only=True)
class Clips:
    """Sliding clips of `stack` frames, flattened clip after clip (reshape to [-1, stack])."""

    stack: int  # frames per clip
    step: int  # frames between clip starts (== stack: back to back; < stack: overlapping)
    fps: float | None = None  # resample to this rate first (as I3D/R(2+1)D expect); None: all

    def __call__(self, num_frames: int, fps: float = 0.0) -> np.ndarray:
        if self.fps is None:
            return clip_indices(num_frames, self.stack, self.step).reshape(-1)
        grid = fps_indices(num_frames, fps, self.fps)
        return grid[clip_indices(len(grid), self.stack, self.step)].reshape(-1)
