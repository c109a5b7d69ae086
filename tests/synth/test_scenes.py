"""Scene sampling: layout invariants the renderer and the dialogs rely on."""

from __future__ import annotations

import random

import pytest

from vdial.synth.scenes import COLOURS, DIRECTIONS, KINDS, Shape, sample_scene


def _box(shape: Shape, centre: tuple[int, int]) -> tuple[int, int, int, int]:
    half = shape.size // 2
    x0, y0 = centre[0] - half, centre[1] - half
    return x0, y0, x0 + shape.size, y0 + shape.size  # half-open


@pytest.mark.parametrize("side", [64, 128])
def test_moving_scenes_stay_in_frame_apart_and_move_far(side: int) -> None:
    directions = set()
    for seed in range(300):
        frames = 16 + seed % 9
        scene = sample_scene(
            random.Random(seed), width=side, height=side, frames=frames, fps=8, moving=True
        )
        assert 1 <= scene.count <= 3
        assert len({s.kind for s in scene.shapes}) == scene.count
        assert len({s.colour for s in scene.shapes}) == scene.count
        assert {s.kind for s in scene.shapes} <= set(KINDS)
        assert {s.colour for s in scene.shapes} <= set(COLOURS)
        assert scene.direction in DIRECTIONS
        directions.add(scene.direction)
        dx = {"left": -1, "right": 1}.get(scene.direction, 0)
        dy = {"up": -1, "down": 1}.get(scene.direction, 0)
        for shape in scene.shapes:
            assert 0.22 * side <= shape.size <= 0.31 * side + 1
            move = (shape.end[0] - shape.start[0], shape.end[1] - shape.start[1])
            # Moves the stated way, by half the frame or more, and only that way.
            assert move[0] * dx + move[1] * dy >= side / 2
            assert move[0] * dy == 0 and move[1] * dx == 0
        for t in range(frames):
            boxes = [_box(s, s.centre(t, frames)) for s in scene.shapes]
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 and 0 <= y0 and x1 <= side and y1 <= side
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    overlap = min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(
                        a[1], b[1]
                    )
                    assert not overlap, (seed, t, boxes)
    assert directions == set(DIRECTIONS)


def test_shape_sizes_at_128_are_28_to_40_pixels() -> None:
    sizes = {
        s.size
        for seed in range(200)
        for s in sample_scene(
            random.Random(seed), width=128, height=128, frames=16, fps=8, moving=True
        ).shapes
    }
    assert min(sizes) >= 28 and max(sizes) <= 40


def test_still_scene_has_no_motion_and_one_frame() -> None:
    scene = sample_scene(random.Random(3), width=64, height=64, frames=16, fps=8, moving=False)
    assert scene.direction is None and scene.frames == 1 and scene.fps == 0
    assert all(s.start == s.end for s in scene.shapes)
    assert scene.to_dict()["shapes"][0]["start"] == list(scene.shapes[0].start)


def test_centre_interpolates_linearly() -> None:
    shape = Shape(kind="circle", colour="red", size=30, start=(20, 50), end=(80, 50))
    assert shape.centre(0, 7) == (20, 50)
    assert shape.centre(3, 7) == (50, 50)
    assert shape.centre(6, 7) == (80, 50)


def test_same_rng_seed_gives_same_scene_and_non_square_frames_are_refused() -> None:
    a = sample_scene(random.Random("x"), width=64, height=64, frames=16, fps=8, moving=True)
    b = sample_scene(random.Random("x"), width=64, height=64, frames=16, fps=8, moving=True)
    assert a == b
    with pytest.raises(ValueError, match="square"):
        sample_scene(random.Random(0), width=64, height=48, frames=16, fps=8, moving=True)
