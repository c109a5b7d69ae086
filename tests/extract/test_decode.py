"""Frame sampling and decoding: indices, backends agreeing, rotation, images, broken files."""

from __future__ import annotations

import numpy as np
import pytest

from vdial.extract.decode import (
    BACKENDS,
    DecodeError,
    read_frames,
    sample_uniform,
    uniform_indices,
)


def test_uniform_indices_are_segment_middles():
    assert uniform_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert uniform_indices(16, 16).tolist() == list(range(16))
    assert uniform_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # short videos repeat frames


@pytest.mark.parametrize("bad", [(0, 4), (10, 0)])
def test_uniform_indices_rejects_empty(bad):
    with pytest.raises(ValueError):
        uniform_indices(*bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_the_requested_indices(counter_video, backend):
    got = read_frames(counter_video, [0, 7, 39], backend)
    assert got.frames.shape == (3, 48, 64, 3) and got.frames.dtype == np.uint8
    assert got.indices.tolist() == [0, 7, 39]
    assert got.num_frames == 40 and got.fps == pytest.approx(8.0)
    # frame k was encoded as grey level 5k; H.264 at crf 10 keeps it within a few levels
    assert np.abs(got.frames.reshape(3, -1).mean(1) - [0, 35, 195]).max() < 3
    assert got.timestamps == pytest.approx([0.0, 7 / 8, 39 / 8], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_index_is_a_decode_error(counter_video, backend):
    with pytest.raises(DecodeError, match="out of range"):
        read_frames(counter_video, [40], backend)


def test_backends_agree_on_real_videos(real_data):
    for name in ("CGRUM.mp4", "v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4", "rotated_90.mov"):
        a = sample_uniform(real_data / "videos" / name, 8, "pyav")
        b = sample_uniform(real_data / "videos" / name, 8, "decord")
        assert a.frames.shape == b.frames.shape, name
        # Both wrap the same FFmpeg decoder: frames are identical, timestamps within 1 us.
        assert np.array_equal(a.frames, b.frames), name
        assert np.abs(a.timestamps - b.timestamps).max() < 1e-5, name


def test_rotation_is_applied(real_data):
    got = sample_uniform(real_data / "videos" / "rotated_90.mov", 2, "pyav")
    assert got.frames.shape[1:] == (568, 320, 3)  # stored 568x320 landscape, displayed portrait


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupted_real_video_is_a_clean_error(real_data, backend):
    path = real_data / "videos" / "corrupted.mp4"
    with pytest.raises(DecodeError) as err:
        sample_uniform(path, 16, backend)
    assert err.value.path == str(path)
    assert "corrupted.mp4" in str(err.value) and err.value.reason


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("content", [b"", b"not a video at all"])
def test_non_video_files_are_clean_errors(tmp_path, backend, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match="broken.mp4"):
        sample_uniform(path, 4, backend)


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        sample_uniform(tmp_path / "nope.mp4", 4)


def test_images_are_one_frame_videos(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    got = sample_uniform(tmp_path / "x.png", 4)
    assert got.frames.shape == (4, 20, 30, 3)
    assert all(np.array_equal(f, pixels) for f in got.frames)
    assert got.num_frames == 1 and got.indices.tolist() == [0, 0, 0, 0]
