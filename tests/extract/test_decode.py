"""Decoding: requested frames per backend, seeking vs a full decode, VFR, broken files, timeouts."""

from __future__ import annotations

import os
import signal
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vdial.extract import decode as decode_api
from vdial.extract.decode import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendUnavailableError,
    DecodeError,
    read_frames,
    sample_uniform,
    unavailable_reason,
    uniform_indices,
)
from vdial.extract.decode import core as decode_core
from vdial.extract.decode.backend_pyav import PyAVReader
from vdial.extract.sampling import AtTimes, Clips
from vdial.extract.sampling import uniform_indices as sampling_uniform

REAL_VIDEOS = ("CGRUM.mp4", "v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4", "rotated_90.mov")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn; one whose library cannot load here is skipped with its reason."""
    reason = unavailable_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


def encode(path: Path, frames: np.ndarray, *, pts_ms=None, fmt=None, **options) -> Path:
    """Write uint8 [T, H, W, 3] frames as H.264 (10 fps, or at `pts_ms` milliseconds)."""
    import av

    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": "10", "threads": "1", **options}
        for k, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[k]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def levels(n: int) -> np.ndarray:
    """n 48x64 frames, frame k filled with grey level 4k (readable back within +-1.5)."""
    return np.stack([np.full((48, 64, 3), 4 * k, dtype=np.uint8) for k in range(n)])


def full_decode(path: Path) -> np.ndarray:
    """The reference: every frame of the file, decoded in order with plain PyAV."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> Path:
    """200 distinct noisy frames, keyframe every 12, B-frames: sparse reads must seek."""
    # a noise texture panning one pixel per frame: distinct frames that predict well
    texture = np.random.default_rng(0).integers(0, 256, (48, 264, 3), dtype=np.uint8)
    frames = np.stack([texture[:, k : k + 64] for k in range(200)])
    path = tmp_path_factory.mktemp("v") / "t.mp4"
    return encode(path, frames, g="12", bf="3", sc_threshold="0")


def test_public_names_still_import():
    assert uniform_indices is sampling_uniform and DEFAULT_BACKEND in BACKENDS
    for name in ("Backend", "Frames", "is_image", "read_frames", "sample_uniform"):
        assert hasattr(decode_api, name)


def test_frames_are_the_requested_indices(counter_video, backend):
    got = read_frames(counter_video, [0, 7, 39], backend)
    assert got.frames.shape == (3, 48, 64, 3) and got.frames.dtype == np.uint8
    assert got.indices.tolist() == [0, 7, 39]
    assert got.num_frames == 40 and got.fps == pytest.approx(8.0)
    # frame k was encoded as grey level 5k; H.264 at crf 10 keeps it within a few levels
    assert np.abs(got.frames.reshape(3, -1).mean(1) - [0, 35, 195]).max() < 3
    assert got.timestamps == pytest.approx([0.0, 7 / 8, 39 / 8], abs=1e-3)


def test_order_and_repeats_are_kept(counter_video, backend):
    got = read_frames(counter_video, [30, 2, 30, 2, 9], backend)
    assert got.indices.tolist() == [30, 2, 30, 2, 9]
    assert np.abs(got.frames.reshape(5, -1).mean(1) - [150, 10, 150, 10, 45]).max() < 3
    assert np.array_equal(got.frames[0], got.frames[2])


def test_plan_is_called_with_count_and_rate(counter_video, backend):
    calls = []

    def plan(num_frames, fps):
        calls.append((num_frames, fps))
        return [num_frames - 1]

    assert read_frames(counter_video, plan, backend).indices.tolist() == [39]
    assert calls == [(40, pytest.approx(8.0))]
    assert read_frames(counter_video, AtTimes(times=(1.0, 2.6)), backend).indices.tolist() == [
        8,
        21,
    ]


def test_sparse_reads_match_a_full_decode(textured, backend):
    reference = full_decode(textured)
    wanted = [3, 5, 40, 41, 97, 150, 151, 199]
    got = read_frames(textured, wanted, backend)
    assert got.num_frames == len(reference) == 200
    assert np.array_equal(got.frames, reference[wanted])  # same decoder maths: bit-exact
    assert got.timestamps == pytest.approx(np.array(wanted) / 10)


def test_pyav_seeks_instead_of_decoding_everything(textured):
    reader = PyAVReader(textured)
    frames, _ = reader.read(np.array([5, 100, 190]))
    assert np.array_equal(frames, full_decode(textured)[[5, 100, 190]])
    # each target costs at most one GOP (12 frames) from its keyframe, not the frames between
    assert reader.frames_decoded <= 3 * 12 < 190


def test_pyav_seeking_matches_a_full_decode_on_real_videos(real_data):
    for name in ("CGRUM.mp4", "v_ZNVhz7ctTq0.mp4"):
        path = real_data / "videos" / name
        reference = full_decode(path)
        wanted = uniform_indices(len(reference), 16)
        reader = PyAVReader(path)
        frames, _ = reader.read(wanted)
        assert np.array_equal(frames, reference[wanted]), name
        assert reader.frames_decoded < len(reference), name


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_variable_frame_rate_indexes_by_decode_order(tmp_path, backend, fmt):
    # irregular gaps, and a stream whose first frame is at 1.5 s, not 0
    gaps = np.random.default_rng(1).integers(20, 150, 50)
    pts_ms = 1500 + np.concatenate([[0], np.cumsum(gaps)[:-1]])
    path = encode(tmp_path / "vfr", levels(50), pts_ms=pts_ms, fmt=fmt, g="8", bf="2")
    wanted = [0, 5, 17, 30, 31, 49]
    got = read_frames(path, wanted, backend)
    assert got.num_frames == 50
    assert np.abs(got.frames.reshape(6, -1).mean(1) - 4 * np.array(wanted)).max() < 1.5
    # seconds since the first frame, from each frame's own pts
    assert got.timestamps == pytest.approx((pts_ms[wanted] - 1500) / 1000, abs=1e-6)


def test_pyav_counts_frames_of_a_stream_without_pts(tmp_path):
    path = encode(tmp_path / "raw.h264", levels(30), fmt="h264", g="8", bf="2")
    assert PyAVReader(path)._position is None  # no index: the sequential pass does the work
    got = read_frames(path, [0, 13, 29], "pyav")
    assert np.abs(got.frames.reshape(3, -1).mean(1) - [0, 52, 116]).max() < 1.5


def test_out_of_range_index_is_a_decode_error(counter_video, backend):
    with pytest.raises(DecodeError, match="out of range"):
        read_frames(counter_video, [40], backend)


@pytest.mark.parametrize("bad", [[], [[1, 2]]])
def test_malformed_plans_are_value_errors(counter_video, bad):
    with pytest.raises(ValueError):
        read_frames(counter_video, bad)


def test_backends_agree_on_real_videos(real_data):
    usable = [b for b in BACKENDS if unavailable_reason(b) is None]
    for name in REAL_VIDEOS:
        got = {b: sample_uniform(real_data / "videos" / name, 8, b) for b in usable}
        first = got[usable[0]]
        for b in usable[1:]:
            # Every backend wraps FFmpeg's H.264 decoder and its RGB conversion: the frames are
            # bit-identical (tolerance 0), timestamps within 1 us. Average fps may differ in the
            # last digits (torchcodec derives it from the duration), so it is not compared.
            assert got[b].num_frames == first.num_frames, (name, b)
            assert np.array_equal(got[b].frames, first.frames), (name, b)
            assert np.abs(got[b].timestamps - first.timestamps).max() < 1e-5, (name, b)


def test_rotation_is_applied(real_data, backend):
    got = sample_uniform(real_data / "videos" / "rotated_90.mov", 2, backend)
    assert got.frames.shape[1:] == (568, 320, 3)  # stored 568x320 landscape, displayed portrait


def test_corrupted_real_video_is_a_clean_error(real_data, backend):
    path = real_data / "videos" / "corrupted.mp4"
    with pytest.raises(DecodeError) as err:
        sample_uniform(path, 16, backend)
    assert err.value.path == str(path)
    assert "corrupted.mp4" in str(err.value) and err.value.reason


@pytest.mark.parametrize("content", [b"", b"not a video at all"])
def test_non_video_files_are_clean_errors(tmp_path, backend, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match="broken.mp4"):
        sample_uniform(path, 4, backend)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_files_are_clean_errors(tmp_path, backend, faststart):
    # Without faststart the index (moov) is at the end and is cut off; with it, frame data is.
    options = {"movflags": "faststart"} if faststart else {}
    whole = tmp_path / "whole.mp4"
    import av

    with av.open(str(whole), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for rgb in np.random.default_rng(2).integers(0, 256, (60, 48, 64, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DecodeError, match="cut.mp4"):
        sample_uniform(cut, 16, backend)


def test_audio_only_file_is_a_clean_error(tmp_path, backend):
    import av

    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(DecodeError, match="audio.mp4"):
        sample_uniform(path, 4, backend)


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        sample_uniform(tmp_path / "nope.mp4", 4)


def test_unknown_and_unavailable_backends_are_setup_errors(counter_video, monkeypatch):
    with pytest.raises(ValueError, match="unknown decode backend"):
        read_frames(counter_video, [0], "opencv")
    monkeypatch.setitem(decode_core._IMPORTS, "decord", "vdial_no_such_module")
    decode_core.unavailable_reason.cache_clear()
    try:
        assert "vdial_no_such_module" in unavailable_reason("decord")
        with pytest.raises(BackendUnavailableError, match="decord cannot load"):
            read_frames(counter_video, [0], "decord")
    finally:
        monkeypatch.undo()
        decode_core.unavailable_reason.cache_clear()


def test_images_are_one_frame_videos(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    got = sample_uniform(tmp_path / "x.png", 4)
    assert got.frames.shape == (4, 20, 30, 3)
    assert all(np.array_equal(f, pixels) for f in got.frames)
    assert got.num_frames == 1 and got.indices.tolist() == [0, 0, 0, 0]
    assert read_frames(tmp_path / "x.png", Clips(stack=8, step=8)).frames.shape == (8, 20, 30, 3)
    with pytest.raises(DecodeError, match="out of range"):
        read_frames(tmp_path / "x.png", [1])


def test_timeout_gives_the_same_frames(counter_video, backend):
    calls = []

    def plan(num_frames, fps):  # side effects must land in this process, as the runner's do
        calls.append(num_frames)
        return [1, 20]

    direct = read_frames(counter_video, [1, 20], backend)
    limited = read_frames(counter_video, plan, backend, timeout_s=60)
    assert calls == [40] and np.array_equal(direct.frames, limited.frames)
    assert np.array_equal(direct.timestamps, limited.timestamps) and limited.num_frames == 40


def worker_pid() -> int | None:
    from vdial.extract.decode.worker import DEFAULT_POOL

    pids = DEFAULT_POOL.pids()
    return pids[0] if pids else None


def test_hanging_decode_is_cut_off(tmp_path, counter_video):
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: a real hang
    read_frames(counter_video, [0], "pyav", timeout_s=30)
    before = worker_pid()
    start = time.monotonic()
    with pytest.raises(DecodeError, match=r"timed out after 0\.5 s") as err:
        read_frames(fifo, [0], "pyav", timeout_s=0.5)
    assert time.monotonic() - start < 10 and err.value.path == str(fifo)
    with pytest.raises(ProcessLookupError):  # the hung worker was killed and reaped
        os.kill(before, 0)
    # the next call gets a fresh worker and works
    assert read_frames(counter_video, [3], "pyav", timeout_s=30).indices.tolist() == [3]
    assert worker_pid() not in (None, before)


def test_crashing_decoder_is_a_decode_error(tmp_path, counter_video):
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    read_frames(counter_video, [0], "pyav", timeout_s=30)  # a worker is up
    # a segfault in the decoder, while it waits on the pipe
    crash = threading.Timer(0.5, os.kill, (worker_pid(), signal.SIGSEGV))
    crash.start()
    with pytest.raises(DecodeError, match=r"decoder process died \(exit code -11\)"):
        read_frames(fifo, [0], "pyav", timeout_s=30)
    crash.join()
    assert read_frames(counter_video, [3], "pyav", timeout_s=30).indices.tolist() == [3]


def test_errors_cross_the_worker_unchanged(real_data, counter_video):
    path = real_data / "videos" / "corrupted.mp4"
    with pytest.raises(DecodeError) as direct:
        sample_uniform(path, 16)
    with pytest.raises(DecodeError) as limited:
        sample_uniform(path, 16, timeout_s=30)
    assert (limited.value.path, limited.value.reason) == (direct.value.path, direct.value.reason)
    assert "in the decode worker process" in limited.value.__notes__[0]
    with pytest.raises(ValueError, match="no frame indices"):  # the plan fails in the caller
        read_frames(counter_video, lambda n, fps: [], timeout_s=30)
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        read_frames(counter_video, [0], timeout_s=0)
