"""Legacy import/export: AVSD .npy folders, VisDial bottom-up .h5 files, Video-ChatGPT .pkl.

The sources are generated here in the published layouts; the round trips must give back the
same arrays with the same dtypes, and broken sources must fail per item or with a clear error.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from vdial.cache import FeatureStore
from vdial.cache.legacy_h5 import import_visdial_h5
from vdial.cache.legacy_h5_export import export_visdial_h5
from vdial.cache.legacy_npy import export_npy, import_avsd_npy
from vdial.cache.legacy_pkl import import_videochatgpt_pkl
from vdial.cache.writer import FeatureWriter

AVSD = {  # folder -> {video id: rows}; ragged T, both folders for both types
    "i3d_rgb": {"3MSZA": 5, "0A8CF": 2, "ZZ1XQ": 7},
    "i3d_rgb_testset": {"CGRUM": 4, "Y79PC": 1},
    "vggish": {"3MSZA": 3, "0A8CF": 6},
    "vggish_testset": {"CGRUM": 2},
}
DIMS = {"i3d_rgb": 16, "vggish": 4}


def make_avsd(root: Path) -> dict[str, np.ndarray]:
    """Write the AVSD folders; returns {"<folder>/<id>.npy": array}."""
    rng = np.random.default_rng(0)
    written = {}
    for folder, items in AVSD.items():
        (root / folder).mkdir(parents=True)
        for video_id, rows in items.items():
            array = rng.standard_normal((rows, DIMS[folder.removesuffix("_testset")]))
            written[f"{folder}/{video_id}.npy"] = array.astype(np.float32)
            np.save(root / folder / f"{video_id}.npy", written[f"{folder}/{video_id}.npy"])
    return written


def read_tree(root: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(root).as_posix(): np.load(p) for p in sorted(root.rglob("*.npy"))}


def make_padded_h5(path: Path, *, id_key: str = "image_id") -> dict[str, np.ndarray]:
    """An LXMERT-style padded file (K = 6): ids, features, boxes, classes, attributes, sizes."""
    rng = np.random.default_rng(1)
    n, k, d = 5, 6, 8
    num_boxes = np.array([6, 3, 0, 1, 4], dtype=np.int32)  # image 3 has no region at all
    arrays = {
        id_key: np.array([185565, 9, 3, 42, 7], dtype=np.int64),
        "features": np.zeros((n, k, d), np.float32),
        "boxes": np.zeros((n, k, 4), np.float32),
        "objects_id": np.zeros((n, k), np.int64),
        "objects_conf": np.zeros((n, k), np.float32),
        "attrs_id": np.zeros((n, k), np.int64),
        "attrs_conf": np.zeros((n, k), np.float32),
        "num_boxes": num_boxes,
        "image_h": np.array([480, 640, 500, 375, 427], np.int32),
        "image_w": np.array([640, 480, 333, 500, 640], np.int32),
    }
    for i, rows in enumerate(num_boxes):
        arrays["features"][i, :rows] = rng.standard_normal((rows, d))
        arrays["boxes"][i, :rows] = rng.random((rows, 4)) * 400
        arrays["objects_id"][i, :rows] = rng.integers(0, 1600, rows)
        arrays["objects_conf"][i, :rows] = rng.random(rows)
        arrays["attrs_id"][i, :rows] = rng.integers(0, 400, rows)
        arrays["attrs_conf"][i, :rows] = rng.random(rows)
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)
        h5.attrs["split"] = "val"
    return arrays


def make_detectron_h5(path: Path) -> dict[str, np.ndarray]:
    """visdial-challenge-starter's extract_features_detectron.py layout: `image_ids`, K always
    full, float32 classes and scores (h5py's default dtype), no num_boxes."""
    rng = np.random.default_rng(2)
    n, k, d = 4, 5, 6
    arrays = {
        "image_ids": np.array([1, 22, 333, 4444], dtype=np.int32),
        "features": rng.standard_normal((n, k, d)).astype(np.float32),
        "boxes": rng.random((n, k, 4)).astype(np.float32),
        "classes": rng.integers(1, 1600, (n, k)).astype(np.float32),
        "scores": rng.random((n, k)).astype(np.float32),
    }
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)
        h5.attrs["split"] = "test"
    return arrays


def assert_same_h5(source: Path, exported: Path) -> None:
    """Every dataset and attribute of `source` is in `exported` with equal values and dtype."""
    with h5py.File(source) as a, h5py.File(exported) as b:
        assert set(a) <= set(b)
        for key in a:
            assert b[key].dtype == a[key].dtype, key
            np.testing.assert_array_equal(b[key][()], a[key][()], err_msg=key)
        assert dict(b.attrs) == dict(a.attrs)


# -- AVSD .npy folders ----------------------------------------------------------------------


def test_avsd_folders_round_trip_exactly(store, tmp_path):
    written = make_avsd(tmp_path / "charades_features")
    reports = import_avsd_npy(store, tmp_path / "charades_features", progress=False)
    assert [(r.feature, r.added, r.skipped, r.failed) for r in reports] == [
        ("i3d_rgb", 5, 0, 0),
        ("vggish", 3, 0, 0),
    ]
    rgb = store["i3d_rgb"]
    assert rgb.item_shape == (16,) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb["CGRUM"], written["i3d_rgb_testset/CGRUM.npy"])
    source = rgb.spec["source"]
    assert source["format"] == "avsd-npy"
    assert source["path"] == str((tmp_path / "charades_features").resolve())
    assert source["folders"] == {"train": "i3d_rgb", "test": "i3d_rgb_testset"}
    assert source["testset_ids"] == ["CGRUM", "Y79PC"]
    assert source["files"] == 5 and source["bytes"] > 0

    out = tmp_path / "exported"
    assert export_npy(rgb, out, progress=False) == 5
    assert export_npy(store["vggish"], out, progress=False) == 3
    back = read_tree(out)
    assert back.keys() == written.keys()
    for name, array in written.items():
        assert back[name].dtype == array.dtype, name
        np.testing.assert_array_equal(back[name], array, err_msg=name)


def test_avsd_float16_option_and_single_folder_source(store, tmp_path):
    written = make_avsd(tmp_path)
    (report,) = import_avsd_npy(store, tmp_path / "vggish", prefix="audio", dtype="float16")
    feature = store["audio/vggish"]
    assert report.added == 2 and feature.dtype == np.float16
    np.testing.assert_array_equal(feature["0A8CF"], written["vggish/0A8CF.npy"].astype(np.float16))
    assert feature.spec["source"]["dtype"] == "float32"
    assert feature.spec["source"]["testset_ids"] == []


def test_broken_npy_files_are_failed_items_and_the_import_goes_on(store, tmp_path):
    make_avsd(tmp_path)
    good = (tmp_path / "i3d_rgb" / "ZZ1XQ.npy").read_bytes()
    (tmp_path / "i3d_rgb" / "TRUNC.npy").write_bytes(good[:-20])
    (tmp_path / "i3d_rgb" / "JUNK1.npy").write_bytes(b"not an array at all")
    np.save(tmp_path / "i3d_rgb" / "WIDE1.npy", np.zeros((3, 17), np.float32))
    np.save(tmp_path / "i3d_rgb" / "F64XX.npy", np.zeros((3, 16), np.float64))
    (tmp_path / "i3d_rgb" / "README.txt").write_text("features")
    (report,) = import_avsd_npy(store, tmp_path, types=["i3d_rgb"], progress=False)
    assert (report.added, report.failed) == (5, 4)
    assert any("README.txt" in note for note in report.notes)
    failures = store["i3d_rgb"].failures
    assert set(failures) == {"TRUNC", "JUNK1", "WIDE1", "F64XX"}
    assert all(f["stage"] == "import" for f in failures.values())
    assert "TRUNC.npy: cannot load .npy" in failures["TRUNC"]["message"]
    assert "JUNK1.npy" in failures["JUNK1"]["message"]
    assert "shape (3, 17), expected (rows, 16)" in failures["WIDE1"]["message"]
    assert "float64 cannot be stored as float32" in failures["F64XX"]["message"]

    # Re-extracting the broken file and re-running resumes: only the failed ids are retried.
    np.save(tmp_path / "i3d_rgb" / "TRUNC.npy", np.ones((2, 16), np.float32))
    (again,) = import_avsd_npy(store, tmp_path, types=["i3d_rgb"], progress=False)
    assert (again.added, again.skipped, again.failed) == (1, 5, 3)
    assert any("changed since the first import" in note for note in again.notes)
    np.testing.assert_array_equal(store["i3d_rgb"]["TRUNC"], np.ones((2, 16), np.float32))


def test_avsd_errors_name_the_problem(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="no AVSD feature folder"):
        import_avsd_npy(store, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .npy files"):
        import_avsd_npy(store, tmp_path / "empty")
    make_avsd(tmp_path / "feats")
    np.save(tmp_path / "feats" / "vggish" / "CGRUM.npy", np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match=r"in both .*vggish and .*vggish_testset .*'CGRUM'"):
        import_avsd_npy(store, tmp_path / "feats", types=["vggish"])
    with pytest.raises(ValueError, match=r"no folders for type\(s\) \['c3d'\]"):
        import_avsd_npy(store, tmp_path / "feats", types=["c3d"])


# -- VisDial / bottom-up .h5 ----------------------------------------------------------------


@pytest.mark.parametrize("block_bytes", [64 << 20, 200])  # one block, and one image per block
def test_padded_h5_round_trips_exactly(store, tmp_path, block_bytes):
    arrays = make_padded_h5(tmp_path / "val_feats.h5")
    report = import_visdial_h5(
        store, tmp_path / "val_feats.h5", progress=False, block_bytes=block_bytes
    )
    assert (report.feature, report.added, report.failed, report.notes) == ("val_feats", 5, 0, ())
    feature = store["val_feats"]
    assert feature.ids == ["185565", "9", "3", "42", "7"]
    assert feature.dtype == np.float32 and feature.item_shape == (8,)
    item = feature.item("9")  # 3 real boxes of 6
    np.testing.assert_array_equal(item["data"], arrays["features"][1, :3])
    np.testing.assert_array_equal(item["boxes"], arrays["boxes"][1, :3])
    np.testing.assert_array_equal(item["attrs_conf"], arrays["attrs_conf"][1, :3])
    np.testing.assert_array_equal(item["image_h"], [640, 640, 640])  # per image, on every row
    assert item["objects_id"].dtype == np.int64 and item["image_w"].dtype == np.int32
    assert len(feature["3"]) == 0
    source = feature.spec["source"]
    assert source["rowless"] == {"3": {"image_h": 500, "image_w": 333}}
    assert source["format"] == "visdial-h5" and source["layout"] == "padded"
    assert source["id_key"] == "image_id" and source["attrs"] == {"split": "val"}
    assert source["size"] == (tmp_path / "val_feats.h5").stat().st_size
    assert set(source["datasets"]) == set(arrays)

    assert export_visdial_h5(feature, tmp_path / "out.h5", progress=False) == 5
    assert_same_h5(tmp_path / "val_feats.h5", tmp_path / "out.h5")


def test_detectron_image_ids_layout_round_trips(store, tmp_path):
    arrays = make_detectron_h5(tmp_path / "test.h5")
    import_visdial_h5(store, tmp_path / "test.h5", name="frcnn", progress=False)
    feature = store["frcnn"]
    assert feature.ids == ["1", "22", "333", "4444"]
    np.testing.assert_array_equal(feature["22"], arrays["features"][1])  # all K rows are real
    assert feature.extras["classes"] == ((), np.dtype("float32"))
    export_visdial_h5(feature, tmp_path / "out.h5", progress=False)
    assert_same_h5(tmp_path / "test.h5", tmp_path / "out.h5")
    with h5py.File(tmp_path / "out.h5") as h5:
        np.testing.assert_array_equal(h5["num_boxes"][()], [5, 5, 5, 5])


def test_flat_layout_with_id_map_exports_padded(store, tmp_path):
    rng = np.random.default_rng(3)
    counts, d = [3, 1, 4], 6
    regions = rng.standard_normal((sum(counts), d)).astype(np.float32)
    bb = rng.random((sum(counts), 4)).astype(np.float32)
    ends = np.cumsum(counts)
    with h5py.File(tmp_path / "val.hdf5", "w") as h5:
        h5["image_features"], h5["image_bb"] = regions, bb
        h5["pos_boxes"] = np.stack([ends - counts, ends], axis=1).astype(np.int32)
    with open(tmp_path / "val_imgid2idx.pkl", "wb") as f:
        pickle.dump({40: 2, 10: 0, 30: 1}, f)
    report = import_visdial_h5(
        store, tmp_path / "val.hdf5", id_map=tmp_path / "val_imgid2idx.pkl", progress=False
    )
    feature = store["val"]
    assert report.added == 3 and feature.ids == ["10", "30", "40"]
    np.testing.assert_array_equal(feature["40"], regions[4:8])
    np.testing.assert_array_equal(feature.item("30")["image_bb"], bb[3:4])
    export_visdial_h5(feature, tmp_path / "out.h5", progress=False)
    with h5py.File(tmp_path / "out.h5") as h5:
        np.testing.assert_array_equal(h5["image_id"][()], [10, 30, 40])
        assert h5["image_features"].shape == (3, 4, d)
        np.testing.assert_array_equal(h5["image_features"][2], regions[4:8])
        np.testing.assert_array_equal(h5["image_features"][1, 1:], np.zeros((3, d)))
        np.testing.assert_array_equal(h5["num_boxes"][()], counts)


def write_h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as h5:
        for key, value in datasets.items():
            h5[key] = value
    return path


def test_malformed_h5_files_raise_errors_naming_file_and_problem(store, tmp_path):
    feats = np.zeros((2, 3, 4), np.float32)
    ids = np.array([1, 2])
    cases = {
        "nofeat.h5": (dict(image_id=ids, boxes=np.zeros((2, 3, 4))), "no 'features'"),
        "noid.h5": (dict(features=feats), "no 'image_id' or 'image_ids' dataset"),
        "shortid.h5": (dict(image_id=ids[:1], features=feats), r"'image_id' has shape \(1,\)"),
        "boxes.h5": (
            dict(image_id=ids, features=feats, boxes=np.zeros((3, 3, 4))),
            r"dataset 'boxes' has shape \(3, 3, 4\)",
        ),
        "dupes.h5": (dict(image_id=np.array([5, 5]), features=feats), "duplicated image id"),
    }
    for file_name, (datasets, message) in cases.items():
        path = write_h5(tmp_path / file_name, **datasets)
        with pytest.raises(ValueError, match=message) as err:
            import_visdial_h5(store, path, progress=False)
        assert file_name in str(err.value)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="text.h5: not a readable HDF5 file"):
        import_visdial_h5(store, tmp_path / "text.h5", progress=False)
    with pytest.raises(FileNotFoundError):
        import_visdial_h5(store, tmp_path / "absent.h5", progress=False)
    assert store.features == []


def test_bad_num_boxes_fails_that_image_and_dirty_padding_is_reported(store, tmp_path):
    feats = np.ones((3, 2, 4), np.float32)  # image 0's padding row is not zero
    num_boxes = np.array([1, 9, 2], np.int64)  # image 1 claims more boxes than stored
    path = write_h5(tmp_path / "f.h5", image_id=np.array([1, 2, 3]), features=feats)
    with h5py.File(path, "a") as h5:
        h5["num_boxes"] = num_boxes
    report = import_visdial_h5(store, path, progress=False)
    assert (report.added, report.failed) == (2, 1)
    assert "1 image(s) had non-zero values in padding rows" in report.notes[0]
    message = store["f"].failures["2"]["message"]
    assert "f.h5: image 2: num_boxes gives rows [0, 9), outside the 2 stored" in message


def test_interrupted_h5_import_resumes_where_it_stopped(store, tmp_path, monkeypatch):
    arrays = make_padded_h5(tmp_path / "v.h5")
    real_add, calls = FeatureWriter.add, []

    def crash_on_third(self, item_id, data, **extras):
        calls.append(item_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_add(self, item_id, data, **extras)

    monkeypatch.setattr(FeatureWriter, "add", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        import_visdial_h5(store, tmp_path / "v.h5", progress=False, block_bytes=200)
    monkeypatch.setattr(FeatureWriter, "add", real_add)
    assert FeatureStore.open(store.path)["v"].ids == ["185565", "9"]

    report = import_visdial_h5(store, tmp_path / "v.h5", progress=False)
    assert (report.added, report.skipped) == (3, 2)
    export_visdial_h5(store["v"], tmp_path / "out.h5", progress=False)
    with h5py.File(tmp_path / "out.h5") as h5:
        np.testing.assert_array_equal(h5["features"][()], arrays["features"])


def test_float16_h5_import_keeps_extras_exact(store, tmp_path):
    arrays = make_padded_h5(tmp_path / "v.h5")
    import_visdial_h5(store, tmp_path / "v.h5", dtype="float16", progress=False)
    item = store["v"].item("185565")
    assert item["data"].dtype == np.float16 and item["boxes"].dtype == np.float32
    np.testing.assert_array_equal(item["data"], arrays["features"][0].astype(np.float16))


# -- Video-ChatGPT / BT-Adapter .pkl --------------------------------------------------------


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_videochatgpt_pickles_import_and_export(store, tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "clip_features"
    folder.mkdir()
    arrays = {f"v_{i}": rng.standard_normal((356, 16)).astype(np.float16) for i in range(3)}
    for video_id, array in arrays.items():
        with open(folder / f"{video_id}.pkl", "wb") as f:
            pickle.dump(array, f)
    with open(folder / "v_dict.pkl", "wb") as f:
        pickle.dump({"features": arrays["v_0"]}, f)
    with open(folder / "v_evil.pkl", "wb") as f:
        pickle.dump(_Exploit(), f)
    (folder / "v_trunc.pkl").write_bytes(pickle.dumps(arrays["v_1"])[:50])

    report = import_videochatgpt_pkl(store, folder, progress=False)
    feature = store["clip_features"]
    assert (report.added, report.failed) == (3, 3)
    assert feature.dtype == np.float16 and feature.item_shape == (16,)
    assert feature.spec["layout"].startswith("video-chatgpt: rows 0-99")
    assert feature.spec["source"]["format"] == "videochatgpt-pkl"
    failures = feature.failures
    assert "holds a dict with keys ['features']" in failures["v_dict"]["message"]
    assert "refusing to load posix.system" in failures["v_evil"]["message"]
    assert "v_trunc.pkl: cannot unpickle" in failures["v_trunc"]["message"]

    export_npy(feature, tmp_path / "npy", progress=False)
    back = read_tree(tmp_path / "npy")
    assert back.keys() == {f"{k}.npy" for k in arrays}
    for video_id, array in arrays.items():
        assert back[f"{video_id}.npy"].dtype == np.float16
        np.testing.assert_array_equal(back[f"{video_id}.npy"], array)


def test_bt_adapter_frame_tokens_keep_their_shape(store, tmp_path):
    array = np.random.default_rng(5).standard_normal((4, 257, 8)).astype(np.float16)
    (tmp_path / "bt").mkdir()
    (tmp_path / "bt" / "v_x.pkl").write_bytes(pickle.dumps(array, protocol=2))
    import_videochatgpt_pkl(store, tmp_path / "bt", name="bt_adapter", progress=False)
    feature = store["bt_adapter"]
    assert feature.item_shape == (257, 8) and feature.spec["layout"].startswith("bt-adapter")
    np.testing.assert_array_equal(feature["v_x"], array)
