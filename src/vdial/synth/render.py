"""Drawing scenes into pixels: RGB frames, H.264 mp4 videos (PyAV) and JPEG images (Pillow).

Shapes are drawn without anti-aliasing so a frame is an exact function of the scene. The
encoder runs libx264 on one thread with fixed options: the same scene always gives the
same bytes, hence the same decoded frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vdial.synth.scenes import RGB, Scene, Shape

# Near-lossless but real H.264; one thread is what makes x264's output reproducible.
X264_OPTIONS = {"crf": "18", "preset": "medium", "threads": "1"}
JPEG_QUALITY = 95


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, centre: tuple[int, int]) -> None:
    half = shape.size // 2
    x0, y0 = centre[0] - half, centre[1] - half
    x1, y1 = x0 + shape.size - 1, y0 + shape.size - 1  # PIL boxes are inclusive
    fill = RGB[shape.colour]
    if shape.kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape.kind == "triangle":
        draw.polygon(((centre[0], y0), (x0, y1), (x1, y1)), fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}")


def draw_frame(scene: Scene, t: int) -> np.ndarray:
    """Frame `t` of the scene as uint8 [H, W, 3] RGB."""
    if not 0 <= t < scene.frames:
        raise IndexError(f"frame {t} out of range for a scene of {scene.frames} frames")
    image = Image.new("RGB", (scene.width, scene.height), RGB[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, shape.centre(t, scene.frames))
    return np.asarray(image, dtype=np.uint8)


def draw_frames(scene: Scene) -> np.ndarray:
    """All frames as uint8 [T, H, W, 3] RGB."""
    return np.stack([draw_frame(scene, t) for t in range(scene.frames)])


def write_video(scene: Scene, path: Path) -> None:
    """Encode the scene's frames to an H.264 (yuv420p) mp4 at the scene's frame rate."""
    import av

    if scene.fps <= 0:
        raise ValueError("a video scene needs a positive frame rate")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=scene.fps, options=X264_OPTIONS)
        stream.width, stream.height = scene.width, scene.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for t in range(scene.frames):
            frame = av.VideoFrame.from_ndarray(draw_frame(scene, t), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_image(scene: Scene, path: Path) -> None:
    """Save the scene's (only) frame as a JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_frame(scene, 0)).save(path, format="JPEG", quality=JPEG_QUALITY)
