"""Shared fixtures: paths to the real data beside the checkout, and small generated videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real, or skip when this checkout has no shared data beside it."""
    if not REAL.is_dir():
        pytest.skip(f"real data folder absent: {REAL}")
    return REAL


def write_video(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write uint8 [T, H, W, 3] frames as an H.264 mp4 with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def counter_video(tmp_path: Path) -> Path:
    """A 40-frame 64x48 video whose frame k is filled with grey level 5*k (index readable)."""
    frames = np.stack([np.full((48, 64, 3), 5 * k, dtype=np.uint8) for k in range(40)])
    return write_video(tmp_path / "counter.mp4", frames)


def write_damaged_video(
    path: Path,
    *,
    frames: int = 96,
    gop: int = 16,
    bframes: int = 0,
    damaged: tuple[int, int] | None = (40, 52),
) -> Path:
    """A 64x48 H.264 mp4 with moving texture whose middle is damaged but still decodes.

    The non-key packets numbered `damaged[0]` to `damaged[1] - 1` (decode order) keep their
    first half (NAL and slice headers) and have the rest zeroed, as a bad sector or a broken
    transfer leaves them: the container stays parseable and FFmpeg conceals the lost blocks.
    Keyframes every `gop` frames; `bframes` B-frames between references. `damaged=None`: the
    same video undamaged.
    """
    import av

    texture = np.random.default_rng(0).integers(0, 256, (48 + frames, 64 + frames, 3), np.uint8)
    clean = path.with_name(path.stem + "-clean.mp4")
    with av.open(str(clean), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {
            "crf": "18",
            "threads": "1",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": str(bframes),
        }
        for k in range(frames):
            rgb = np.ascontiguousarray(texture[k : k + 48, k : k + 64])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(clean)) as source, av.open(str(path), mode="w") as target:
        video = source.streams.video[0]
        out = target.add_stream_from_template(video)
        packets = (p for p in source.demux(video) if p.size)  # size 0: end-of-stream marker
        for k, packet in enumerate(packets):
            data = bytes(packet)
            if damaged and damaged[0] <= k < damaged[1] and not packet.is_keyframe:
                half = len(data) // 2
                data = data[:half] + bytes(len(data) - half)
            copy = av.Packet(data)
            copy.pts, copy.dts, copy.is_keyframe = packet.pts, packet.dts, packet.is_keyframe
            copy.time_base, copy.stream = packet.time_base, out
            target.mux(copy)
    clean.unlink()
    return path
