"""`decode_sets`: several plans of one video, each getting exactly the frames it gets alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_damaged_video
from vdial.extract.decode import BACKENDS, unavailable_reason
from vdial.extract.decode.backend_pyav import PyAVReader
from vdial.extract.decode.core import decode, decode_sets
from vdial.extract.sampling import clip_indices, uniform_indices

SPARSE = uniform_indices(96, 16)  # an image encoder's 16 frames
CLIPS = clip_indices(96, 4, 4)[uniform_indices(24, 8)].reshape(-1)  # a 3D CNN's clips
FEW = uniform_indices(96, 8)  # a video transformer's frames


@pytest.fixture(scope="module", params=[0, 2], ids=["no-b-frames", "b-frames"])
def videos(request, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(f"bf{request.param}")
    return {
        "clean": write_damaged_video(root / "clean.mp4", bframes=request.param, damaged=None),
        "damaged": write_damaged_video(root / "damaged.mp4", bframes=request.param),
    }


def _union(*plans: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate(plans))


def test_a_damaged_stream_gives_other_pictures_by_another_path(videos):
    """Why `decode_sets` exists: the union's decode path changes the sparse set's pictures."""
    damaged = PyAVReader(videos["damaged"])
    alone, _ = damaged.read(SPARSE)
    assert not damaged.shareable  # it met the concealed frames
    again, _ = PyAVReader(videos["damaged"]).read(SPARSE)
    assert np.array_equal(alone, again)  # deterministic although damaged (slice threads)
    union = _union(SPARSE, CLIPS, FEW)
    together, _ = damaged.read(union)
    rows = np.searchsorted(union, SPARSE)
    differ = [
        int(i) for k, i in enumerate(SPARSE) if not np.array_equal(alone[k], together[rows[k]])
    ]
    assert differ and min(differ) >= 40  # only frames at or after the damage
    clean = PyAVReader(videos["clean"])
    alone, _ = clean.read(SPARSE)
    together, _ = clean.read(union)
    assert clean.shareable and np.array_equal(alone, together[rows])


@pytest.mark.parametrize("kind", ["clean", "damaged"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_plan_gets_exactly_its_frames_alone(videos, kind, backend):
    if unavailable_reason(backend):
        pytest.skip(unavailable_reason(backend))
    path = videos[kind]
    # Clip plans repeat and reorder nothing here; the last plan does both.
    plans = [SPARSE, CLIPS, FEW, np.array([60, 3, 60, 45])]
    together = decode_sets(path, backend, lambda n, fps: plans)
    for plan, got in zip(plans, together, strict=True):
        alone = decode(path, backend, lambda n, fps, plan=plan: plan)
        assert got.indices.tolist() == plan.tolist()
        assert np.array_equal(got.frames, alone.frames), (kind, backend, plan[:4])
        assert np.array_equal(got.timestamps, alone.timestamps)
        assert (got.num_frames, got.fps) == (alone.num_frames, alone.fps) == (96, 8.0)


def _counting_reads(monkeypatch) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    read = PyAVReader.read

    def counted(self, indices):
        calls.append(tuple(indices.tolist()))
        return read(self, indices)

    monkeypatch.setattr(PyAVReader, "read", counted)
    return calls


def test_a_clean_video_is_decoded_once_for_every_plan(videos, monkeypatch):
    calls = _counting_reads(monkeypatch)
    first, second, clips = decode_sets(videos["clean"], "pyav", lambda n, fps: [FEW, FEW, CLIPS])
    assert calls == [tuple(_union(FEW, CLIPS).tolist())]
    assert first.frames is second.frames  # plans with the same frames share one array


def test_a_damaged_video_reads_each_set_alone_and_reuses_the_union(videos, monkeypatch):
    calls = _counting_reads(monkeypatch)
    union = _union(SPARSE, CLIPS)
    decode_sets(videos["damaged"], "pyav", lambda n, fps: [SPARSE, union, SPARSE])
    # The union read is the second plan's own read; the first and third share one more read.
    assert calls == [tuple(union.tolist()), tuple(SPARSE.tolist())]


def test_images_give_every_plan_its_frames(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    one, three = decode_sets(
        tmp_path / "a.png", "pyav", lambda n, fps: [np.zeros(1, int), np.zeros(3, int)]
    )
    assert one.frames.shape == (1, 6, 8, 3) and three.frames.shape == (3, 6, 8, 3)
    assert np.array_equal(three.frames[2], rgb) and one.num_frames == 1
