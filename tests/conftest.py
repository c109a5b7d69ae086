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
