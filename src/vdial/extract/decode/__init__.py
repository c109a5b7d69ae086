"""Frame decoding: one interface over the PyAV, decord and torchcodec backends.

Frames come back as uint8 [T, H, W, 3] RGB with their source indices and timestamps (from
each frame's pts), with the container's rotation applied. Index i is the i-th frame in
presentation order for every backend. Only the requested frames are kept, and the PyAV
backend seeks to the keyframe before far-apart frames instead of decoding everything, so
memory and time follow the frames asked for, not the video's length. Images are one-frame
videos, repeated to the number of frames asked for. Every failure to read a file becomes a
`DecodeError` naming the path and the reason, so the runner can record it per item; an
optional per-video time limit turns a hanging decode into one too. Which frames to take is a
plan from `vdial.extract.sampling`, or any `(num_frames, fps) -> indices` callable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vdial.extract.decode.core import (
    BACKENDS,
    DEFAULT_BACKEND,
    IMAGE_SUFFIXES,
    Backend,
    BackendUnavailableError,
    DecodeError,
    Frames,
    available_backends,
    check_backend,
    decode,
    is_image,
    resolve,
    unavailable_reason,
)
from vdial.extract.sampling import Plan, Uniform, uniform_indices

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "IMAGE_SUFFIXES",
    "Backend",
    "BackendUnavailableError",
    "DecodeError",
    "Frames",
    "available_backends",
    "is_image",
    "read_frames",
    "sample_uniform",
    "unavailable_reason",
    "uniform_indices",
]


def read_frames(
    path: str | Path,
    indices: Plan | Sequence[int] | np.ndarray,
    backend: Backend = DEFAULT_BACKEND,
    *,
    timeout_s: float | None = None,
) -> Frames:
    """Decode the frames at `indices` of a video or image.

    `indices`: an int sequence/array, or a plan called as `indices(num_frames, fps)` once the
    file is open (see `vdial.extract.sampling`). Order and repeats are kept; each distinct
    frame is decoded once. An image is a one-frame video: every index must be 0.
    `timeout_s`: decode in a worker process, killed after this many seconds with
    `DecodeError(path, "timed out after N s")`; None decodes in this process.

    Raises DecodeError for a missing, unreadable, empty, truncated or non-video file and for
    an index past the end; BackendUnavailableError when `backend` cannot load here;
    ValueError for an unknown backend or an empty or malformed plan.
    """
    path = Path(path)
    check_backend(backend)
    # Not is_file(): a named pipe or device is readable too (and may hang: see timeout_s).
    if not path.exists():
        raise DecodeError(path, "file not found")
    if path.is_dir():
        raise DecodeError(path, "is a directory, not a media file")
    if timeout_s is not None:
        from vdial.extract.decode.worker import decode_with_timeout

        return decode_with_timeout(path, indices, backend, timeout_s)
    return decode(path, backend, lambda total, fps: resolve(indices, total, fps, path))


def sample_uniform(
    path: str | Path,
    n: int,
    backend: Backend = DEFAULT_BACKEND,
    *,
    timeout_s: float | None = None,
) -> Frames:
    """Decode `n` uniformly sampled frames of a video (or an image repeated `n` times)."""
    return read_frames(path, Uniform(n=n), backend, timeout_s=timeout_s)
