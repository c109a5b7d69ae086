"""Rendered media: real H.264 mp4 and JPEG files whose pixels show the ground truth."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from vdial.synth import SynthSummary
from vdial.synth.render import draw_frame, write_video
from vdial.synth.scenes import Scene, Shape

STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def nearest(rgb: np.ndarray, palette: dict[str, list[int]]) -> str:
    names = list(palette)
    dist = [np.abs(rgb.astype(int) - palette[n]).sum() for n in names]
    return names[int(np.argmin(dist))]


def colour_mask(frame: np.ndarray, rgb: list[int], tol: int = 60) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(rgb)).sum(-1) < tol


def test_videos_decode_with_expected_frames_size_and_rate(tiny: SynthSummary, truth: dict) -> None:
    for vid, entry in truth["avsd"].items():
        path = tiny.videos_dir / f"{vid}.mp4"
        frames = decode(path)
        scene = entry["scene"]
        assert (
            frames.shape == (scene["frames"], scene["height"], scene["width"], 3) == (16, 64, 64, 3)
        )
        with av.open(str(path)) as container:
            assert container.streams.video[0].average_rate == 8


def test_shapes_are_where_the_ground_truth_says_and_move_its_way(
    tiny: SynthSummary, truth: dict
) -> None:
    palette = truth["palette"]
    for vid, entry in truth["avsd"].items():
        frames = decode(tiny.videos_dir / f"{vid}.mp4")
        scene = entry["scene"]
        # Shapes cover under half of the frame, so the median pixel is the background.
        assert nearest(np.median(frames[0].reshape(-1, 3), 0), palette) == scene["background"]
        dx, dy = STEP[scene["direction"]]
        for shape in scene["shapes"]:
            for t, key in ((0, "start"), (scene["frames"] - 1, "end")):
                x, y = shape[key]
                patch = frames[t, y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
                assert nearest(patch, palette) == shape["colour"], (vid, shape, t)
            first, last = (colour_mask(frames[t], palette[shape["colour"]]) for t in (0, -1))
            (y0, x0), (y1, x1) = (np.argwhere(m).mean(0) for m in (first, last))
            along = (x1 - x0) * dx + (y1 - y0) * dy
            across = (x1 - x0) * dy + (y1 - y0) * dx
            assert along >= scene["width"] / 3 - 2, (vid, shape, along)
            assert abs(across) <= 2


def test_images_show_their_shapes(tiny: SynthSummary, truth: dict) -> None:
    palette = truth["palette"]
    for image_id, entry in truth["visdial"].items():
        split, scene = entry["split"], entry["scene"]
        path = tiny.images_dir / split / f"VisualDialog_{split}2018_{int(image_id):012d}.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (64, 64)
            pixels = np.asarray(im.convert("RGB"))
        assert scene["frames"] == 1 and scene["direction"] is None
        for shape in scene["shapes"]:
            x, y = shape["start"]
            patch = pixels[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
            assert nearest(patch, palette) == shape["colour"]
        covered = sum(colour_mask(pixels, palette[s["colour"]]).sum() for s in scene["shapes"])
        background = colour_mask(pixels, palette[scene["background"]]).sum()
        assert covered + background > 0.9 * pixels.shape[0] * pixels.shape[1]


def _scene(kind: str) -> Scene:
    shape = Shape(kind=kind, colour="blue", size=11, start=(10, 10), end=(20, 10))
    return Scene(
        width=32, height=32, frames=3, fps=8, background="black", direction="right", shapes=(shape,)
    )


@pytest.mark.parametrize(("kind", "area"), [("square", 121), ("circle", 97), ("triangle", 66)])
def test_draw_frame_is_exact(kind: str, area: int) -> None:
    frame = draw_frame(_scene(kind), 1)
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    blue = (frame == (30, 70, 220)).all(-1)
    assert blue[10, 15] and not blue[10, 9] and abs(int(blue.sum()) - area) <= 6
    assert set(map(tuple, frame.reshape(-1, 3))) == {(0, 0, 0), (30, 70, 220)}
    ys, xs = np.nonzero(blue)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 20, 5, 15)
    with pytest.raises(IndexError):
        draw_frame(_scene(kind), 3)


def test_write_video_refuses_a_still_scene(tmp_path) -> None:
    still = Scene(
        width=32, height=32, frames=1, fps=0, background="white", direction=None, shapes=()
    )
    with pytest.raises(ValueError, match="frame rate"):
        write_video(still, tmp_path / "x.mp4")
