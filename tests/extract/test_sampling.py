"""Sampling plans: exact values on small cases, properties over many sizes (hypothesis)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdial.extract.sampling import (
    AtFps,
    AtTimes,
    Clips,
    Indices,
    Uniform,
    clip_indices,
    fps_indices,
    linspace_indices,
    nearest_indices,
    uniform_indices,
)

counts = st.integers(1, 5000)
wanted = st.integers(1, 300)
rates = st.floats(1.0, 120.0)


def test_uniform_indices_are_segment_middles():
    assert uniform_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert uniform_indices(16, 16).tolist() == list(range(16))
    assert uniform_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # short videos repeat frames


@given(counts, wanted)
def test_uniform_index_k_lies_in_segment_k(num_frames, n):
    got = uniform_indices(num_frames, n)
    k = np.arange(n)
    assert len(got) == n
    # segment k covers [k N / n, (k + 1) N / n); integer arithmetic, no float rounding
    assert (got * n >= k * num_frames - n).all() and (got * n < (k + 1) * num_frames).all()
    assert (np.diff(got) >= 0).all() and got.min() >= 0 and got.max() < num_frames
    if num_frames >= n:
        assert (np.diff(got) > 0).all()


def test_linspace_indices_include_both_ends():
    assert linspace_indices(100, 4).tolist() == [0, 33, 66, 99]
    assert linspace_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert linspace_indices(3, 5).tolist() == [0, 1, 1, 2, 2]  # halves round up
    assert linspace_indices(50, 1).tolist() == [0]
    assert linspace_indices(1, 3).tolist() == [0, 0, 0]  # an image repeated to the count


@given(counts, st.integers(2, 300))
def test_linspace_indices_are_evenly_spaced(num_frames, n):
    got = linspace_indices(num_frames, n)
    assert len(got) == n and got[0] == 0 and got[-1] == num_frames - 1
    gaps = np.diff(got)
    assert gaps.min() >= 0 and gaps.max() - gaps.min() <= 1
    if num_frames >= n:
        assert gaps.min() > 0


def test_nearest_indices_on_the_frame_grid():
    assert nearest_indices([0.0, 0.24, 0.26, 1.0, 99.0, -3.0], 30, 4.0).tolist() == [
        0,
        1,
        1,
        4,
        29,
        0,
    ]
    assert nearest_indices([0.125], 30, 4.0).tolist() == [1]  # a tie goes to the later frame
    assert nearest_indices([5.0, 7.0], 1, 0.0).tolist() == [0, 0]  # an image


@given(counts, rates, st.lists(st.floats(-10, 200), min_size=1, max_size=20))
def test_nearest_indices_match_brute_force(num_frames, fps, times):
    got = nearest_indices(times, num_frames, fps)
    grid = np.arange(num_frames) / fps
    best = np.abs(grid[None, :] - np.asarray(times)[:, None]).min(1)
    assert np.allclose(np.abs(grid[got] - times), best, atol=1e-9)


def test_fps_indices():
    assert fps_indices(90, 30.0, 1.0).tolist() == [0, 30, 60]
    assert fps_indices(91, 30.0, 1.0).tolist() == [0, 30, 60, 90]
    assert fps_indices(10, 25.0, 25.0).tolist() == list(range(10))
    assert fps_indices(3, 2.0, 4.0).tolist() == [0, 1, 1, 2, 2, 2]  # upsampling repeats
    assert fps_indices(1, 0.0, 2.0).tolist() == [0]  # an image has one frame at any rate


@given(counts, rates, rates)
def test_fps_indices_follow_the_target_clock(num_frames, fps, target):
    got = fps_indices(num_frames, fps, target)
    duration = num_frames / fps
    times = np.arange(len(got)) / target
    # sample times cover the video: all before its end, the next one at or past it
    assert times[-1] < duration + 1e-9 and len(got) / target >= duration - 1e-9
    err = np.abs(got / fps - times)
    clipped = (got == num_frames - 1) & (err < 1 / fps + 1e-9)  # nearest would be past the end
    assert ((err <= 0.5 / fps + 1e-9) | clipped).all()
    assert (np.diff(got) >= 0).all()


def test_clip_indices():
    assert clip_indices(10, 4, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # tail dropped
    assert clip_indices(10, 4, 3).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert clip_indices(2, 4, 4).tolist() == [[0, 1, 1, 1]]  # short source: padded by repeats


@given(counts, st.integers(1, 64), st.integers(1, 64))
def test_clips_are_consecutive_and_in_range(num_frames, stack, step):
    got = clip_indices(num_frames, stack, step)
    assert got.shape[1] == stack and got.max() < num_frames
    if num_frames >= stack:
        assert got.shape[0] == (num_frames - stack) // step + 1
        assert (np.diff(got, axis=1) == 1).all() and (np.diff(got[:, 0]) == step).all()
        assert got[-1, -1] + step > num_frames - 1  # no further full clip fits
    else:
        assert got.tolist() == [list(range(num_frames)) + [num_frames - 1] * (stack - num_frames)]


@pytest.mark.parametrize(
    "call",
    [
        lambda: uniform_indices(0, 4),
        lambda: uniform_indices(10, 0),
        lambda: linspace_indices(10, 0),
        lambda: nearest_indices([], 10, 5.0),
        lambda: nearest_indices([float("nan")], 10, 5.0),
        lambda: nearest_indices([1.0], 10, 0.0),
        lambda: fps_indices(10, 0.0, 1.0),
        lambda: fps_indices(10, 25.0, -1.0),
        lambda: clip_indices(10, 0, 1),
        lambda: clip_indices(10, 4, 0),
        lambda: Indices(indices=())(10, 25.0),
    ],
)
def test_bad_requests_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_plans_are_callables_of_count_and_rate():
    assert Indices(indices=(5, 1, 5))(10, 25.0).tolist() == [5, 1, 5]
    assert Uniform(n=4)(100, 25.0).tolist() == [12, 37, 62, 87]
    assert Uniform(n=4, ends=True)(100, 25.0).tolist() == [0, 33, 66, 99]
    assert AtTimes(times=(0.0, 1.0))(100, 25.0).tolist() == [0, 25]
    assert AtFps(fps=5.0)(20, 25.0).tolist() == [0, 5, 10, 15]
    assert Clips(stack=2, step=3)(7, 25.0).tolist() == [0, 1, 3, 4]
    # clips on a 10 fps grid of a 30 fps source: grid frames 0, 3, 6, 9, 12, 15
    assert Clips(stack=3, step=3, fps=10.0)(18, 30.0).reshape(-1, 3).tolist() == [
        [0, 3, 6],
        [9, 12, 15],
    ]
    # plans are plain data: they compare, hash and serialise for provenance
    assert dataclasses.asdict(Clips(stack=16, step=8)) == {"stack": 16, "step": 8, "fps": None}
    assert Uniform(n=8) == Uniform(n=8) and len({Uniform(n=8), Uniform(n=8)}) == 1
