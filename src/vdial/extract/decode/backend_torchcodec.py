"""torchcodec backend: PyTorch's FFmpeg-based decoder, used on CPU here.

`seek_mode="exact"` makes torchcodec scan the file's packets once when it opens, so index i is
frame i in presentation order even for variable frame rates (the same idea as the PyAV
backend). It applies the container's rotation itself. It needs FFmpeg's shared libraries
(libavutil.so.56..60 and friends) on the system; without them the backend is unavailable and
says why (`vdial.extract.decode.unavailable_reason("torchcodec")`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vdial.extract.decode.core import DecodeError

# torchcodec prefixes messages with "Function, /path/to/File.cpp:line, "; keep the reason.
_PREFIX = re.compile(r"^\w+, \S+:\d+, ")


class TorchcodecReader:
    """One video file read with torchcodec."""

    # It reports no decode errors, so no read is known to serve a subset of its frames: each set
    # of frames is read on its own (see `decode_sets`).
    can_share = False
    shareable = False

    def __init__(self, path: Path) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = path
        try:
            self._decoder = VideoDecoder(
                str(path), seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=0
            )
        except (RuntimeError, ValueError) as err:  # torchcodec raises either for bad input
            raise DecodeError(path, _reason(err)) from err
        meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)
        # Timestamps count from the first frame, as decord's do and sampling plans assume.
        self._start = float(meta.begin_stream_seconds or 0.0)
        if self.num_frames == 0:
            raise DecodeError(path, "video has no frames")

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            batch = self._decoder.get_frames_at(indices.tolist())
        except (RuntimeError, ValueError) as err:
            raise DecodeError(self.path, _reason(err)) from err
        return batch.data.numpy(), batch.pts_seconds.numpy().astype(np.float64) - self._start

    def close(self) -> None:
        del self._decoder


def _reason(err: Exception) -> str:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return "torchcodec: " + _PREFIX.sub("", first).strip()[:300]
