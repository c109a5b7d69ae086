"""decord backend: random access through decord's own keyframe index (FFmpeg 4 inside).

decord seeks to the keyframe before each wanted frame itself and applies the container's
rotation. It raises `DECORDError` or plain `RuntimeError` for bad input, each message prefixed
with "[time] source.cc:line: "; both become a `DecodeError` with only the reason kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vdial.extract.decode.core import DecodeError

_PREFIX = re.compile(r"\[[\d:]+\] \S+:\d+: ")


class DecordReader:
    """One video file read with decord."""

    # It reports no decode errors, so no read is known to serve a subset of its frames: each set
    # of frames is read on its own (see `decode_sets`).
    can_share = False
    shareable = False

    def __init__(self, path: Path) -> None:
        import decord

        self.path = path
        self._errors = (decord.DECORDError, RuntimeError)
        try:
            # 0: FFmpeg picks the decode thread count, as the other backends are set up.
            self._reader = decord.VideoReader(str(path), num_threads=0)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except self._errors as err:
            raise DecodeError(path, _reason(err)) from err
        if self.num_frames == 0:
            raise DecodeError(path, "video has no frames")

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = indices.tolist()
        try:
            frames = self._reader.get_batch(wanted).asnumpy()
            times = self._reader.get_frame_timestamp(wanted)[:, 0].astype(np.float64)
        except self._errors as err:
            raise DecodeError(self.path, _reason(err)) from err
        return frames, times

    def close(self) -> None:
        # decord frees its demuxer and decoder when the reader is collected.
        del self._reader


def _reason(err: Exception) -> str:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return "decord: " + _PREFIX.sub("", first).strip()[:300]
