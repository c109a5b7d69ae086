"""What every decode backend shares: the result type, the error, backend lookup, one decode.

A backend is a reader class in its own module (`backend_<name>.py`): opening it reads the
frame count and rate, `read(indices)` returns the frames at sorted distinct indices. `decode`
turns a plan into those indices, expands repeats and handles images, so the backends stay
small and a backend's failure modes are all reported as `DecodeError`.

`decode_sets` decodes several plans of one file (one per encoder) and guarantees that each
plan's frames are bit-identical to what `decode` of that plan alone returns, whatever the other
plans are. Which frames a read decodes, where it seeks and which frames it skips depend on all
the indices it is given, and on a damaged stream the pictures depend on that path. So the
union is read once and serves every plan only when the reader vouches for it (`shareable`:
PyAV, when no decoded frame was corrupt); otherwise each distinct set of indices is read on its
own, exactly as it would be alone, and a set equal to the union reuses that read.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Backend = Literal["pyav", "decord", "torchcodec"]
BACKENDS: tuple[Backend, ...] = ("pyav", "decord", "torchcodec")
# bench/decode.py (2 CPUs): all three return bit-identical frames; pyav took the least time
# over all sampling runs (torchcodec within noise), and it needs no system libraries.
DEFAULT_BACKEND: Backend = "pyav"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# What loading each backend's library needs; torchcodec also needs FFmpeg's shared libraries
# (libavcodec.so.N and friends) installed on the system, which PyPI cannot provide.
_IMPORTS: dict[str, str] = {
    "pyav": "av",
    "decord": "decord",
    "torchcodec": "torchcodec.decoders",
}


class DecodeError(RuntimeError):
    """A media file could not be decoded; carries the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        # Rebuilt from (path, reason) when it crosses from the decode worker process.
        return (type(self), (self.path, self.reason), self.__dict__)


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot load here: a setup problem, not a per-file failure."""


@dataclass(frozen=True)
class Frames:
    """Decoded frames and where they came from."""

    frames: np.ndarray  # uint8 [T, H, W, 3], RGB, rotation applied
    indices: np.ndarray  # int64 [T], frame index in the source (presentation order)
    timestamps: np.ndarray  # float64 [T], seconds since the first frame, from each frame's pts
    num_frames: int  # frames in the source
    fps: float  # average frame rate of the source (0 for images)


class Reader(Protocol):
    """An open video: its frame count and rate, and frames by index."""

    num_frames: int
    fps: float
    can_share: bool  # whether a read can ever be `shareable` (False: no read is)
    # After a read: its frames are exactly those a read of any subset of its indices returns.
    shareable: bool

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distinct indices -> (uint8 [T, H, W, 3] RGB rotated, float64 [T] seconds)."""

    def close(self) -> None: ...


# Called with the frame count and rate of the opened file; returns the indices to decode.
Chooser = Callable[[int, float], np.ndarray]
# The same for several consumers of one decode: one index array each.
SetsChooser = Callable[[int, float], list[np.ndarray]]


@functools.cache
def unavailable_reason(backend: str) -> str | None:
    """Why `backend` cannot be used here (its import error), or None when it can."""
    if backend not in _IMPORTS:
        raise ValueError(f"unknown decode backend {backend!r}; choose from {BACKENDS}")
    try:
        importlib.import_module(_IMPORTS[backend])
    except (ImportError, OSError, RuntimeError) as err:  # torchcodec: OSError/RuntimeError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"{backend} cannot load: {first}"
    return None


def available_backends() -> tuple[Backend, ...]:
    """The backends whose libraries load on this machine."""
    return tuple(b for b in BACKENDS if unavailable_reason(b) is None)


def check_backend(backend: str) -> None:
    reason = unavailable_reason(backend)
    if reason is not None:
        raise BackendUnavailableError(reason)


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def resolve(indices, num_frames: int, fps: float, path: Path) -> np.ndarray:
    """A plan (array or `(num_frames, fps)` callable) -> checked int64 indices."""
    raw = indices(num_frames, fps) if callable(indices) else indices
    wanted = np.asarray(raw, dtype=np.int64)
    if wanted.ndim != 1:
        raise ValueError(f"frame indices must be one-dimensional, got shape {wanted.shape}")
    if wanted.size == 0:
        raise ValueError("no frame indices requested")
    if wanted.min() < 0 or wanted.max() >= num_frames:
        shown = wanted.tolist() if wanted.size <= 20 else f"{wanted.size} indices"
        raise DecodeError(path, f"frame index out of range 0..{num_frames - 1}: {shown}")
    return wanted


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Turn a stored picture by the container's display rotation (counter-clockwise degrees)."""
    if not degrees:
        return rgb
    # rot90's k counts counter-clockwise quarter turns, the same sign as FFmpeg's angle.
    return np.ascontiguousarray(np.rot90(rgb, k=round(degrees / 90)))


def open_reader(path: Path, backend: Backend) -> Reader:
    if backend == "pyav":
        from vdial.extract.decode.backend_pyav import PyAVReader

        return PyAVReader(path)
    if backend == "decord":
        from vdial.extract.decode.backend_decord import DecordReader

        return DecordReader(path)
    if backend == "torchcodec":
        from vdial.extract.decode.backend_torchcodec import TorchcodecReader

        return TorchcodecReader(path)
    raise ValueError(f"unknown decode backend {backend!r}; choose from {BACKENDS}")


def decode(path: Path, backend: Backend, choose: Chooser) -> Frames:
    """Open `path`, ask `choose` for indices given its frame count and rate, decode them."""
    return decode_sets(path, backend, lambda num_frames, fps: [choose(num_frames, fps)])[0]


def decode_sets(path: Path, backend: Backend, choose: SetsChooser) -> list[Frames]:
    """Like `decode`, for several index plans of one file at once (one `Frames` per plan).

    Each plan gets exactly the frames `decode` of it alone would return: the union of the plans
    is read once and shared only when the reader says that read is `shareable`, else each
    distinct set of indices is read on its own. Plans with the same set share one array.
    """
    if is_image(path):
        rgb = _load_image(path)
        return [
            Frames(
                frames=np.repeat(rgb[None], len(wanted), axis=0),
                indices=wanted,
                timestamps=np.zeros(len(wanted), dtype=np.float64),
                num_frames=1,
                fps=0.0,
            )
            for wanted in choose(1, 0.0)
        ]
    reader = open_reader(path, backend)
    try:
        plans = choose(reader.num_frames, reader.fps)
        sets = {s.tobytes(): s for s in (np.unique(wanted) for wanted in plans)}
        read: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        if len(sets) == 1 or reader.can_share:
            union = np.unique(np.concatenate(list(sets.values())))
            frames, times = reader.read(union)
            read[union.tobytes()] = (frames, times)
            if reader.shareable:
                for key, distinct in sets.items():
                    if key not in read:
                        rows = np.searchsorted(union, distinct)
                        read[key] = (frames[rows], times[rows])
        for key, distinct in sets.items():
            if key not in read:  # read alone: the union's decode path may give other pictures
                read[key] = reader.read(distinct)
    finally:
        reader.close()
    out = []
    for wanted in plans:
        distinct = np.unique(wanted)
        frames, timestamps = read[distinct.tobytes()]
        if len(distinct) != len(wanted) or not np.array_equal(distinct, wanted):
            # Repeats and custom orders are expanded here, after decoding each frame once.
            inverse = np.searchsorted(distinct, wanted)
            frames, timestamps = frames[inverse], timestamps[inverse]
        out.append(
            Frames(
                frames=frames,
                indices=wanted,
                timestamps=np.asarray(timestamps, dtype=np.float64),
                num_frames=int(reader.num_frames),
                fps=float(reader.fps),
            )
        )
    return out


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise DecodeError(path, f"unreadable image: {err}") from err
