"""Frame decoding and sampling: one interface over the PyAV and decord backends.

Frames come back as uint8 [T, H, W, 3] RGB with their source indices and timestamps, with the
container's rotation applied. PyAV decodes sequentially and keeps only the requested frames, so
memory is bounded by the frames kept, not by the video's length. Images are one-frame videos,
repeated to the number of frames asked for. Every failure to read a file becomes a
`DecodeError` that names the path and the reason, so the runner can record it per item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Backend = Literal["pyav", "decord"]
BACKENDS: tuple[Backend, ...] = ("pyav", "decord")
_DECORD_PREFIX = re.compile(r"\[[\d:]+\] \S+:\d+: ")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class DecodeError(RuntimeError):
    """A media file could not be decoded; carries the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Frames:
    """Decoded frames and where they came from."""

    frames: np.ndarray  # uint8 [T, H, W, 3], RGB, rotation applied
    indices: np.ndarray  # int64 [T], frame index in the source
    timestamps: np.ndarray  # float64 [T], presentation time in seconds
    num_frames: int  # frames in the source
    fps: float  # average frame rate of the source (0 for images)


def uniform_indices(num_frames: int, n: int) -> np.ndarray:
    """The middle frame of each of `n` equal segments (TSN/MERV-style uniform sampling).

    With fewer source frames than `n`, frames repeat so that exactly `n` indices come back.
    """
    if num_frames <= 0:
        raise ValueError(f"cannot sample from {num_frames} frames")
    if n <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {n}")
    edges = np.linspace(0, num_frames, n + 1)
    return np.minimum(((edges[:-1] + edges[1:]) / 2).astype(np.int64), num_frames - 1)


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sample_uniform(path: str | Path, n: int, backend: Backend = "pyav") -> Frames:
    """Decode `n` uniformly sampled frames of a video (or an image repeated `n` times)."""
    return read_frames(path, lambda total: uniform_indices(total, n), backend)


def read_frames(path: str | Path, indices, backend: Backend = "pyav") -> Frames:
    """Decode the frames at `indices` (an array, or a function of the frame count).

    An image is a one-frame video: every index must be 0 and the frame repeats.
    """
    path = Path(path)
    if not path.is_file():
        raise DecodeError(path, "file not found")
    if is_image(path):
        return _read_image(path, _resolve(indices, 1, path))
    if backend == "pyav":
        return _read_pyav(path, indices)
    if backend == "decord":
        return _read_decord(path, indices)
    raise ValueError(f"unknown decode backend {backend!r}; choose from {BACKENDS}")


def _resolve(indices, total: int, path: Path) -> np.ndarray:
    wanted = np.asarray(indices(total) if callable(indices) else indices, dtype=np.int64)
    if wanted.size == 0:
        raise ValueError("no frame indices requested")
    if wanted.min() < 0 or wanted.max() >= total:
        raise DecodeError(path, f"frame index out of range 0..{total - 1}: {wanted.tolist()}")
    return wanted


def _read_image(path: Path, wanted: np.ndarray) -> Frames:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise DecodeError(path, f"unreadable image: {err}") from err
    return Frames(
        frames=np.repeat(rgb[None], len(wanted), axis=0),
        indices=wanted,
        timestamps=np.zeros(len(wanted), dtype=np.float64),
        num_frames=1,
        fps=0.0,
    )


def _read_pyav(path: Path, indices) -> Frames:
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise DecodeError(path, f"cannot open: {err}") from err
    with container:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # The container's frame count can be missing (0); counting packets is cheap (no decode).
        total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        if total == 0:
            raise DecodeError(path, "video has no frames")
        if not stream.frames:
            container.seek(0)
        wanted = _resolve(indices, total, path)
        keep: dict[int, tuple[np.ndarray, float]] = {}
        targets = set(wanted.tolist())
        last = int(wanted.max())
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i in targets:
                    rgb = frame.to_ndarray(format="rgb24")
                    if frame.rotation:
                        # The display matrix turns the stored picture; rot90's k counts
                        # counter-clockwise quarter turns, the same sign as FFmpeg's angle.
                        rgb = np.ascontiguousarray(np.rot90(rgb, k=frame.rotation // 90))
                    keep[i] = (rgb, float(frame.time or 0.0))
                if i >= last:
                    break
        except av.FFmpegError as err:
            raise DecodeError(path, f"decoding failed after {len(keep)} frames: {err}") from err
        fps = float(stream.average_rate or 0.0)
    missing = sorted(targets - keep.keys())
    if missing:
        raise DecodeError(path, f"stream ended before frames {missing} (truncated?)")
    return Frames(
        frames=np.stack([keep[i][0] for i in wanted.tolist()]),
        indices=wanted,
        timestamps=np.array([keep[i][1] for i in wanted.tolist()], dtype=np.float64),
        num_frames=int(total),
        fps=fps,
    )


def _read_decord(path: Path, indices) -> Frames:
    import decord

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        total = len(reader)
        if total == 0:
            raise DecodeError(path, "video has no frames")
        wanted = _resolve(indices, total, path)
        frames = reader.get_batch(wanted.tolist()).asnumpy()
        timestamps = reader.get_frame_timestamp(wanted.tolist())[:, 0].astype(np.float64)
        fps = float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as err:  # decord raises either
        # decord prefixes each message with "[time] source.cc:line: "; keep only the reason.
        reason = _DECORD_PREFIX.sub("", str(err).splitlines()[0]).strip()
        raise DecodeError(path, f"decord: {reason[:300]}") from err
    return Frames(frames=frames, indices=wanted, timestamps=timestamps, num_frames=total, fps=fps)
