"""Same seed, same dataset: identical JSON bytes and identical decoded frames."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from vdial.synth import SynthSummary, generate

JSON_FILES = [
    "avsd/train.json",
    "avsd/val.json",
    "avsd/test.json",
    "avsd/test_multiref.json",
    "avsd/question_types.json",
    "visdial/visdial_1.0_train.json",
    "visdial/visdial_1.0_val.json",
    "visdial/visdial_1.0_test.json",
    "visdial/visdial_1.0_val_dense_annotations.json",
    "visdial/question_types.json",
    "synth.json",
]


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_same_seed_gives_identical_files_and_frames(tiny: SynthSummary, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", size="tiny", seed=0, progress=False)
    for name in JSON_FILES:
        assert (tiny.root / name).read_bytes() == (again.root / name).read_bytes(), name
    videos = sorted(p.name for p in tiny.videos_dir.glob("*.mp4"))
    assert videos == sorted(p.name for p in again.videos_dir.glob("*.mp4")) and len(videos) == 12
    for name in videos:
        np.testing.assert_array_equal(
            _frames(tiny.videos_dir / name), _frames(again.videos_dir / name)
        )
    images = sorted(p.relative_to(tiny.images_dir) for p in tiny.images_dir.rglob("*.jpg"))
    assert len(images) == 8
    for rel in images:
        assert (tiny.images_dir / rel).read_bytes() == (again.images_dir / rel).read_bytes()


def test_another_seed_gives_another_dataset(tiny: SynthSummary, tmp_path: Path) -> None:
    other = generate(tmp_path / "other", size="tiny", seed=1, progress=False)
    for name in JSON_FILES:
        assert (tiny.root / name).read_bytes() != (other.root / name).read_bytes(), name
    differ = [
        not np.array_equal(_frames(tiny.videos_dir / p.name), _frames(other.videos_dir / p.name))
        for p in sorted(tiny.videos_dir.glob("*.mp4"))
    ]
    assert sum(differ) >= 10
