"""The per-device pipeline: decode workers, timeouts, out-of-memory, precision, id selection."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.conftest import write_damaged_video, write_video
from vdial.cache import FeatureStore
from vdial.extract.decode.backend_pyav import PyAVReader
from vdial.extract.pipeline import Item, Pipeline, PipelineConfig
from vdial.extract.runner import (
    ExtractConfig,
    build_encoders,
    resolve_devices,
    run_extraction,
    select_ids,
)
from vdial.manifests import read_folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for k in range(5):
        write_video(root / f"clip{k}.mp4", rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8))
    return root


def _store(path, encoders):
    store = FeatureStore.open(path, mode="a")
    for name, enc in encoders.items():
        store.create_feature(
            name,
            item_shape=enc.item_shape,
            spec=enc.provenance(),
            extras=enc.row_extras,
        )
    return store


def _run(tmp_path, clips, encoders, config, name="s"):
    store = _store(tmp_path / name, encoders)
    items = [Item(p.stem, str(p), tuple(encoders)) for p in sorted(clips.glob("*.mp4"))]
    writers = {n: store[n].writer(segment_items=100) for n in encoders}
    pipeline = Pipeline(encoders, config)
    try:
        result = pipeline.run(items, writers)
    finally:
        pipeline.close()
    return result, FeatureStore.open(tmp_path / name)


def test_out_of_memory_retries_items_alone_and_fails_only_those_too_big(tmp_path, clips):
    config = ExtractConfig(encoders=("dinov2:tiny",), random_init=True, frames=2)
    encoders = build_encoders(config, "cpu")
    reference, ref_store = _run(tmp_path, clips, encoders, PipelineConfig(batch_frames=1), "ref")
    real_encode = encoders["dinov2"].encode
    seen = []

    def limited(batch):  # a device that holds 2 frames: bigger batches run out of memory
        seen.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_encode(batch)

    encoders["dinov2"].encode = limited
    result, store = _run(tmp_path, clips, encoders, PipelineConfig(batch_frames=64), "retried")
    assert seen[0] == 10 and set(seen[1:]) == {2}  # one batch of 5 videos, then each alone
    assert result.done == {"dinov2": 5} and not result.failed
    for item_id in ref_store["dinov2"].ids:
        np.testing.assert_array_equal(store["dinov2"][item_id], ref_store["dinov2"][item_id])

    def exhausted(batch):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 9663676416 bytes"
        )

    encoders["dinov2"].encode = exhausted
    result, store = _run(tmp_path, clips, encoders, PipelineConfig(batch_frames=64), "failed")
    assert result.done == {} and len(result.failed) == 5
    failure = store["dinov2"].failures["clip3"]
    assert failure["stage"] == "oom" and "can't allocate memory" in failure["message"]

    def broken(batch):  # a programming error is not an out-of-memory: it stops the run
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    encoders["dinov2"].encode = broken
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        _run(tmp_path, clips, encoders, PipelineConfig(), "broken")
    assert reference.done == {"dinov2": 5}


def test_a_hanging_decode_fails_with_stage_timeout_and_the_run_goes_on(tmp_path, clips):
    folder = tmp_path / "media"
    folder.mkdir()
    for clip in sorted(clips.glob("*.mp4"))[:2]:
        (folder / clip.name).symlink_to(clip)
    os.mkfifo(folder / "stalled.mp4")  # opening it blocks forever: a real hang
    manifest = read_folder(folder, name="m")
    config = ExtractConfig(
        encoders=("dinov2:tiny",), random_init=True, frames=2, decode_timeout_s=1.0
    )
    summary = run_extraction(manifest, tmp_path / "s", config, progress=False)
    assert summary.done == {"dinov2": 2} and summary.failed_now == {"dinov2": 1}
    failure = FeatureStore.open(tmp_path / "s")["dinov2"].failures["stalled"]
    assert failure == {"stage": "timeout", "message": "timed out after 1 s"}


def test_bf16_autocast_is_close_to_fp32_and_recorded(tmp_path, clips):
    manifest = read_folder(clips, name="m")
    base = dict(encoders=("dinov2:tiny",), random_init=True, frames=2)
    run_extraction(manifest, tmp_path / "fp32", ExtractConfig(**base), progress=False)
    run_extraction(
        manifest, tmp_path / "bf16", ExtractConfig(**base, precision="bf16"), progress=False
    )
    fp32, bf16 = (
        FeatureStore.open(tmp_path / "fp32")["dinov2"],
        FeatureStore.open(tmp_path / "bf16")["dinov2"],
    )
    assert fp32.spec["precision"] == "fp32" and bf16.spec["precision"] == "bf16"
    for item_id in fp32.ids:
        a, b = np.asarray(fp32[item_id], np.float32), np.asarray(bf16[item_id], np.float32)
        assert not np.array_equal(a, b)  # autocast really ran in bfloat16
        np.testing.assert_allclose(a, b, atol=0.1, rtol=0.05)
    with pytest.raises(ValueError, match="precision"):  # never mixed into one feature
        run_extraction(
            manifest, tmp_path / "fp32", ExtractConfig(**base, precision="bf16"), progress=False
        )


def test_ids_file_limit_and_devices_select_the_work(clips):
    manifest = read_folder(clips, name="m")
    base = dict(encoders=("dinov2:tiny",))
    ids, _ = select_ids(manifest, ExtractConfig(**base, ids=("clip3", "clip1")))
    assert ids == ["clip1", "clip3"]
    ids, _ = select_ids(manifest, ExtractConfig(**base, ids=("clip3", "clip1"), limit=1))
    assert ids == ["clip1"]
    with pytest.raises(KeyError, match=r"1 requested id\(s\) are not in the manifest: \['nope'\]"):
        select_ids(manifest, ExtractConfig(**base, ids=("clip1", "nope")))
    expected = tuple(f"cuda:{k}" for k in range(torch.cuda.device_count())) or ("cpu",)
    assert resolve_devices(("auto",)) == expected
    assert resolve_devices(("cuda:0", "cuda:1")) == ("cuda:0", "cuda:1")
    with pytest.raises(ValueError, match="'auto' cannot be combined"):
        resolve_devices(("auto", "cpu"))


def test_an_encoders_rows_do_not_depend_on_the_other_encoders_requested(tmp_path):
    """dinov2 alone and beside resnext3d and vivit: the same rows, damaged stream or not."""
    torch.set_num_threads(1)
    folder = tmp_path / "media"
    folder.mkdir()
    write_damaged_video(folder / "clean.mp4", damaged=None)
    write_damaged_video(folder / "damaged.mp4")
    manifest = read_folder(folder, name="m")
    runs = {"alone": ("dinov2:tiny",), "with": ("dinov2:tiny", "resnext3d:tiny", "vivit:tiny")}
    features = {}
    for run, refs in runs.items():
        config = ExtractConfig(encoders=refs, random_init=True, decode_workers=1)
        summary = run_extraction(manifest, tmp_path / run, config, progress=False)
        assert not summary.failed and summary.done["dinov2"] == 2
        features[run] = FeatureStore.open(tmp_path / run)["dinov2"]
    for item_id in ("clean", "damaged"):
        alone, beside = features["alone"].item(item_id), features["with"].item(item_id)
        assert alone["frame_indices"].tolist() == beside["frame_indices"].tolist()
        np.testing.assert_array_equal(alone["data"], beside["data"])  # bit-identical rows
    # The damaged video does exercise the case: decoding the union the three encoders sample
    # lands on other pictures for some of dinov2's frames than decoding dinov2's alone.
    encoders = build_encoders(ExtractConfig(encoders=runs["with"], random_init=True), "cpu")
    mine = encoders["dinov2"].frame_indices(96, 8.0)
    union = np.unique(np.concatenate([e.frame_indices(96, 8.0) for e in encoders.values()]))
    reader = PyAVReader(folder / "damaged.mp4")
    together = reader.read(union)[0][np.searchsorted(union, mine)]
    assert not np.array_equal(reader.read(mine)[0], together)
