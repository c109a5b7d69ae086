"""Extraction killed with SIGKILL mid-run and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vdial.cache import FeatureStore
from vdial.cache.gc import collect_garbage
from vdial.cache.verify import verify_store
from vdial.extract.runner import ExtractConfig, run_extraction
from vdial.manifests import Manifest, read_folder

ENCODERS = ("dinov2:tiny", "siglip:tiny")


@pytest.fixture(scope="module")
def media(tmp_path_factory, real_data) -> Path:
    """16 synthetic clips plus the real corrupted video, as a folder manifest on disk."""
    from vdial.synth import generate

    root = tmp_path_factory.mktemp("media")
    generate(root / "synth", size="tiny", seed=0, videos=16, progress=False)
    videos = root / "synth" / "videos"
    (videos / "corrupted.mp4").symlink_to(real_data / "videos" / "corrupted.mp4")
    read_folder(videos, name="clips").write(root / "clips")
    return root / "clips"


def _cli(manifest: Path, store: Path, *extra: str) -> list[str]:
    args = [str(Path(sys.executable).with_name("vdial")), "extract", "--manifest", str(manifest)]
    args += ["--store", str(store), "--random-init", "--frames", "4", "--segment-items", "2"]
    for ref in ENCODERS:
        args += ["--encoder", ref]
    return [*args, "--no-progress", *extra]


def _committed(store: Path) -> int:
    try:
        return len(FeatureStore.open(store, mode="r")["dinov2"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(media, tmp_path):
    manifest = Manifest.read(media)
    total = len(manifest.media_paths())
    reference = tmp_path / "reference"
    config = ExtractConfig(
        encoders=ENCODERS, random_init=True, frames=4, segment_items=2, decode_workers=2
    )
    summary = run_extraction(manifest, reference, config, progress=False)
    assert summary.done == {"dinov2": total - 1, "siglip": total - 1}

    resumed = tmp_path / "resumed"
    # One decode worker here, two in the reference: the result must not depend on it.
    process = subprocess.Popen(_cli(media, resumed, "--decode-workers", "1"))
    deadline = time.monotonic() + 120
    while _committed(resumed) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the extraction ended before it could be killed"
    partial = _committed(resumed)
    assert 0 < partial < total - 1, f"killed after {partial} of {total - 1} items: not mid-run"

    again = subprocess.run(_cli(media, resumed), capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    # What the killed task had written but not committed goes; the result must still verify.
    collect_garbage(FeatureStore.open(resumed, mode="a"), older_than_s=0)
    ref_store, res_store = FeatureStore.open(reference), FeatureStore.open(resumed)
    report = verify_store(res_store, expected_ids=sorted(manifest.media_paths()))
    assert report.ok and not res_store["dinov2"].uncommitted_segments
    for name in ("dinov2", "siglip"):
        ref, res = ref_store[name], res_store[name]
        assert res.ids == ref.ids and len(res.ids) == total - 1
        assert res.failures["corrupted"]["stage"] == "decode"
        assert "Invalid data" in res.failures["corrupted"]["message"]
        assert res.superseded == 0  # nothing was written twice
        assert res.content_digest() == ref.content_digest(), name
