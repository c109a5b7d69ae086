"""PyAV backend: frame-accurate sparse decoding with keyframe seeks, memory bounded by frames kept.

Opening the file demuxes every packet of the video stream without decoding it (cheap: reads the
file once) and records each frame's presentation timestamp (pts) and which frames are
keyframes. Frame i is the i-th pts in sorted order, the order the decoder outputs frames, so
indices count frames in decode output order and stay right for variable frame rates.

Reading walks the wanted indices in order. When the keyframe before the next wanted frame lies
ahead of the decoder's position, it seeks there instead of decoding the frames between; each
decoded frame is identified by its pts, never by counting after a seek. Only the wanted frames
are converted to RGB and kept. If decoded pts ever disagree with the packet index (no pts,
duplicates, a frame that never appears) the reader falls back to one sequential pass that
counts frames, the approach that needs no index.

Damaged streams. FFmpeg conceals what it cannot decode and flags those frames as corrupt; with
frame threads that concealment races (the same damaged file read twice can give different
pictures), so a read that meets a corrupt frame is done again with slice threads only, which is
deterministic. Every frame the decoder produced is checked, also those still in flight when a
read stops or seeks (drained, not thrown away: a B-frame's forward reference comes out after
it). A read records whether it was `shareable`: it met no corrupt frame and went by the packet
index. Only then do its frames not depend on where it started decoding (H.264 and HEVC output is
bit-exact for an undamaged stream decoded from a keyframe), so a read of the union of several
frame sets can serve each of them (`vdial.extract.decode.core.decode_sets`).
"""

from __future__ import annotations

import bisect
import itertools
from pathlib import Path

import numpy as np

from vdial.extract.decode.core import DecodeError, rotate

# Decoders whose skip_frame="NONREF" drops exactly the frames no other frame refers to.
_SKIPS_NONREF = frozenset({"h264", "hevc"})


class _LostTrack(Exception):
    """Decoded pts do not match the packet index: switch to counting frames sequentially."""


class PyAVReader:
    """One video file read with PyAV (FFmpeg)."""

    can_share = True  # reads say whether they are `shareable`

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shareable = False  # the last read met no corrupt frame and went by the packet index
        # False once a read of this file met a corrupt frame: later reads then use slice threads
        # at once (the same frames as frame threads where nothing is corrupt, so as if alone).
        self._frame_threads = True
        self._corrupt = False  # the current pass met a frame FFmpeg flagged as corrupt
        pts, keys = self._scan()
        self.num_frames = len(pts)
        self.frames_decoded = 0  # by the reads so far: what seeking saves shows up here
        order = sorted(p for p in pts if p is not None)
        # pts -> frame index; None when pts are missing or repeat, where only counting works.
        self._position: dict[int, int] | None = None
        self._key_index: list[int] = []  # frame index of each keyframe, ascending
        self._key_pts: list[int] = []  # and its pts, the timestamp to seek to
        self._order = order  # pts of frame i
        # Timestamps count from the first frame, as decord's do and sampling plans assume.
        self._start = float(order[0] * self._time_base) if order and self._time_base else 0.0
        if len(order) == len(pts) and len(set(order)) == len(order):
            self._position = {p: i for i, p in enumerate(order)}
            self._key_pts = sorted(p for p, key in zip(pts, keys, strict=True) if key)
            self._key_index = [self._position[p] for p in self._key_pts]

    def _open(self):
        import av

        try:
            container = av.open(str(self.path))
        except av.FFmpegError as err:
            raise DecodeError(self.path, f"cannot open: {err}") from err
        if not container.streams.video:
            container.close()
            raise DecodeError(self.path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if self._frame_threads else "SLICE"
        return container, stream

    def _scan(self) -> tuple[list, list]:
        import av

        container, stream = self._open()
        pts, keys = [], []
        with container:
            self.fps = float(stream.average_rate or 0.0)
            self._time_base = stream.time_base
            try:
                for packet in container.demux(stream):
                    # Size 0: the demuxer's end-of-stream marker. Discard: a sample an edit
                    # list cuts, which the decoder drops, so it is not a frame.
                    if packet.size == 0 or packet.is_discard:
                        continue
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
            except av.FFmpegError as err:
                raise DecodeError(self.path, f"cannot read packets: {err}") from err
        if not pts:
            raise DecodeError(self.path, "video has no frames")
        return pts, keys

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames, times, by_index = self._read_once(indices)
        clean = not self._corrupt
        if not clean and self._frame_threads:
            # Frame-threaded concealment is not deterministic; slice threads are.
            self._frame_threads = False
            frames, times, _ = self._read_once(indices)
        self.shareable = clean and by_index
        return frames, times

    def _read_once(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(frames, times, whether they were found by the packet index); sets `_corrupt`."""
        self._corrupt = False
        if self._position is not None:
            try:
                return *self._read_by_pts(indices), True
            except _LostTrack:
                pass  # the index cannot be trusted for this file: count frames instead
        return *self._read_in_order(indices), False

    def close(self) -> None:
        """Nothing stays open between calls: each read opens and closes its container."""

    def _read_by_pts(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import av

        sink = _Sink(self.path, len(indices), self.fps, self._start)
        wanted_pts = {self._order[i] for i in indices.tolist()}
        container, stream = self._open()
        with container:
            frames = self._decoded(container, stream, wanted_pts)
            position = -1  # frame index of the last frame decoded
            try:
                for target in indices.tolist():
                    k = bisect.bisect_right(self._key_index, target) - 1
                    if k >= 0 and self._key_index[k] > position + 1:
                        # Seeking skips decoding the frames between here and that keyframe.
                        self._drain(stream)
                        frames = self._seek(container, stream, k, target, wanted_pts)
                        position = -1
                    for frame in frames:
                        self.frames_decoded += 1
                        index = self._position.get(frame.pts)
                        if index is None:
                            raise _LostTrack
                        position = max(position, index)
                        if index == target:
                            sink.add(frame, index)
                            break
                        if index > target:
                            raise _LostTrack
                    else:
                        raise _LostTrack  # stream ended early; the sequential pass says why
                self._drain(stream)
            except av.FFmpegError as err:
                reason = f"decoding failed near frame {position}: {err}"
                raise DecodeError(self.path, reason) from err
        return sink.result()

    def _drain(self, stream) -> None:
        """Take the frames still in the decoder and note whether any is corrupt.

        Frame threads finish them anyway before a seek's flush or the close returns, so this
        costs no decoding; a forward reference of a wanted B-frame is among them.
        """
        import av

        try:
            frames = stream.codec_context.decode(None)
        except av.EOFError:  # the stream's end already drained it
            return
        self._corrupt |= any(frame.is_corrupt for frame in frames)

    def _decoded(self, container, stream, wanted_pts: set[int]):
        """Frames decoded from the container's position, minus unwanted non-reference frames.

        A non-reference frame (most B-frames) is never used to decode another, so H.264 and
        HEVC can drop it unread when it is not wanted: the packet's pts says which frame it is
        before decoding. Frame-threaded decoders copy `skip_frame` with each packet.
        """
        context = stream.codec_context
        skippable = context.name in _SKIPS_NONREF
        for packet in container.demux(stream):
            if skippable:
                context.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
            frames = context.decode(packet)
            # Checked as they leave the decoder, so frames a caller never takes count too.
            self._corrupt |= any(frame.is_corrupt for frame in frames)
            yield from frames

    def _seek(self, container, stream, k: int, target: int, wanted_pts: set[int]):
        """Decoded frames from keyframe `k`, or an earlier one if the demuxer lands past target.

        A demuxer's seek index need not be by pts (MP4's is by a shifted dts), so a seek to a
        keyframe's pts can land on another keyframe: an earlier one only costs decoding, a later
        one would skip the target, so step back one keyframe at a time until at or before it.
        """
        import av

        for key in range(k, -1, -1):
            try:
                container.seek(self._key_pts[key], stream=stream, backward=True)
            except av.FFmpegError as err:  # not seekable: decode through instead
                raise _LostTrack from err
            frames = self._decoded(container, stream, wanted_pts)
            first = next(frames, None)
            if first is None:
                raise _LostTrack
            index = self._position.get(first.pts)
            if index is None:
                raise _LostTrack
            if index <= target:
                return itertools.chain([first], frames)  # counted when the caller takes it
            self.frames_decoded += 1
        raise _LostTrack

    def _read_in_order(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import av

        sink = _Sink(self.path, len(indices), self.fps, self._start)
        wanted = indices.tolist()
        container, stream = self._open()
        count = 0
        with container:
            try:
                for frame in container.decode(stream):
                    self.frames_decoded += 1
                    self._corrupt |= frame.is_corrupt
                    if count == wanted[sink.filled]:
                        sink.add(frame, count)
                        if sink.filled == len(wanted):
                            break
                    count += 1
                self._drain(stream)
            except av.FFmpegError as err:
                reason = f"decoding failed after {count} frames: {err}"
                raise DecodeError(self.path, reason) from err
        if sink.filled < len(wanted):
            raise DecodeError(
                self.path,
                f"stream ended after {count} of {self.num_frames} frames, "
                f"before frame {wanted[sink.filled]} (truncated?)",
            )
        return sink.result()


class _Sink:
    """Converts kept frames straight into one preallocated array (no list, no final stack)."""

    def __init__(self, path: Path, n: int, fps: float, start: float) -> None:
        self.path, self.n, self.fps, self.start, self.filled = path, n, fps, start, 0
        self.frames: np.ndarray | None = None
        self.times = np.zeros(n, dtype=np.float64)

    def add(self, frame, index: int) -> None:
        rgb = rotate(frame.to_ndarray(format="rgb24"), frame.rotation)
        if self.frames is None:
            self.frames = np.empty((self.n, *rgb.shape), dtype=np.uint8)
        elif rgb.shape != self.frames.shape[1:]:
            raise DecodeError(
                self.path, f"frame size changed mid-stream: {self.frames.shape[1:]} -> {rgb.shape}"
            )
        self.frames[self.filled] = rgb
        # Raw streams (.h264) carry no pts; their frames get times on the nominal grid.
        if frame.time is None:
            self.times[self.filled] = index / self.fps if self.fps else 0.0
        else:
            self.times[self.filled] = frame.time - self.start
        self.filled += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.frames, self.times
