"""Scenes of the synthetic "shapes" dataset: what is in a clip or a picture, and where.

A scene is 1-3 flat shapes of distinct kinds and distinct colours on a plain background.
In a video every shape moves the same way at the same speed, by half the frame or
more over the clip, so the direction is obvious even after pooling to a coarse patch grid.
Shapes sit in separate lanes across the motion axis, so they never overlap and the colour
at a shape's centre is always that shape's colour (the tests rely on this).

Everything is drawn from a `random.Random` the caller seeds, so a scene is a pure function
of its seed string.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

KINDS = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
BACKGROUNDS = ("black", "white", "gray")
DIRECTIONS = ("left", "right", "up", "down")
QUESTION_TYPES = ("colour", "shape", "count", "direction")

# Saturated, well-separated colours: after H.264 4:2:0 coding the nearest palette entry of a
# decoded pixel is still the drawn one. Backgrounds are achromatic so they never collide.
RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}

# Unit motion per direction in image coordinates (y grows downwards).
VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

# Shape side as a fraction of the frame side: 28-40 px at 128 px, 14-20 px at 64 px, big
# enough to cover a whole cell of an 8x8 patch grid.
SIZE_FRACTION = (0.22, 0.31)
# Displacement over the clip as a fraction of the frame side: half the frame or more, so that
# even four sampled frames show the shapes crossing two cells of a 4x4 pooled grid.
TRAVEL_FRACTION = (0.5, 0.65)
LANES = 3


@dataclass(frozen=True, kw_only=True)
class Shape:
    """One shape: its kind, colour, size and its centre in the first and the last frame."""

    kind: str  # one of KINDS
    colour: str  # one of COLOURS
    size: int  # side of the bounding box in pixels
    start: tuple[int, int]  # (x, y) centre of the bounding box in the first frame
    end: tuple[int, int]  # (x, y) centre in the last frame (== start for still images)

    def centre(self, t: int, frames: int) -> tuple[int, int]:
        """Centre in frame `t` of `frames`: linear motion, rounded to whole pixels."""
        if frames <= 1:
            return self.start
        frac = t / (frames - 1)
        return (
            self.start[0] + round((self.end[0] - self.start[0]) * frac),
            self.start[1] + round((self.end[1] - self.start[1]) * frac),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "colour": self.colour,
            "size": self.size,
            "start": list(self.start),
            "end": list(self.end),
        }


@dataclass(frozen=True, kw_only=True)
class Scene:
    """Ground truth of one video (moving shapes) or one image (still shapes)."""

    width: int  # frame width in pixels
    height: int  # frame height in pixels
    frames: int  # number of frames (1 for an image)
    fps: int  # frames per second (0 for an image)
    background: str  # one of BACKGROUNDS
    direction: str | None  # one of DIRECTIONS for a video, None for an image
    shapes: tuple[Shape, ...]  # 1-3 shapes, distinct kinds and colours

    @property
    def count(self) -> int:
        return len(self.shapes)

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    def colour_of(self, kind: str) -> str | None:
        return next((s.colour for s in self.shapes if s.kind == kind), None)

    def kind_of(self, colour: str) -> str | None:
        return next((s.kind for s in self.shapes if s.colour == colour), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "fps": self.fps,
            "duration": self.duration,
            "background": self.background,
            "direction": self.direction,
            "count": self.count,
            "shapes": [s.to_dict() for s in self.shapes],
        }


def sample_scene(
    rng: random.Random, *, width: int, height: int, frames: int, fps: int, moving: bool
) -> Scene:
    """Draw a scene: 1-3 shapes in separate lanes, all moving one way when `moving`."""
    if width != height:
        raise ValueError(f"frames must be square, got {width}x{height}")
    side = width
    n = rng.randint(1, 3)
    kinds = rng.sample(KINDS, n)
    colours = rng.sample(COLOURS, n)
    background = rng.choice(BACKGROUNDS)
    direction = rng.choice(DIRECTIONS) if moving else None
    # Lanes run along the motion axis; a still image picks an axis just to lay its lanes out.
    horizontal = direction in ("left", "right") if moving else rng.random() < 0.5
    lane = side / LANES
    lanes = rng.sample(range(LANES), n)
    lo = math.ceil(SIZE_FRACTION[0] * side)
    hi = min(math.floor(SIZE_FRACTION[1] * side), math.floor(lane) - 2)
    travel = (
        rng.randint(math.ceil(TRAVEL_FRACTION[0] * side), math.floor(TRAVEL_FRACTION[1] * side))
        if moving
        else 0
    )
    sign = sum(VECTORS[direction]) if moving else 0
    shapes = []
    for kind, colour, lane_index in zip(kinds, colours, lanes, strict=True):
        size = rng.randint(lo, hi)
        half = size // 2
        # Across the motion axis: anywhere inside the lane with the whole shape in it.
        across_lo = math.ceil(lane * lane_index) + half
        across_hi = math.floor(lane * (lane_index + 1)) - (size - half)
        across = rng.randint(across_lo, max(across_lo, across_hi))
        # Along the motion axis: leave room for the whole travel inside the frame.
        along_lo, along_hi = half, side - (size - half)
        if sign > 0:
            along = rng.randint(along_lo, along_hi - travel)
        else:
            along = rng.randint(along_lo + travel, along_hi)
        end_along = along + sign * travel
        if horizontal:
            start, end = (along, across), (end_along, across)
        else:
            start, end = (across, along), (across, end_along)
        shapes.append(Shape(kind=kind, colour=colour, size=size, start=start, end=end))
    return Scene(
        width=width,
        height=height,
        frames=frames if moving else 1,
        fps=fps if moving else 0,
        background=background,
        direction=direction,
        shapes=tuple(shapes),
    )
