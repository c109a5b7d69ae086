"""`vdial cache import` and `vdial cache export` through typer's CliRunner."""

from __future__ import annotations

import h5py
import numpy as np
from typer.testing import CliRunner

from tests.cache.test_cache_legacy import assert_same_h5, make_avsd, make_padded_h5, read_tree
from vdial.cache import FeatureStore
from vdial.cache.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_avsd_import_then_npy_export_recreates_the_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = make_avsd(tmp_path / "charades_features")
    result = runner.invoke(
        app, ["import", "avsd-npy", "charades_features", "--dataset", "avsd", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row}
    assert rows["i3d_rgb"] == ["5", "0", "0"] and rows["vggish"] == ["3", "0", "0"]
    assert FeatureStore.open("cache/avsd").features == ["i3d_rgb", "vggish"]

    for feature in ("i3d_rgb", "vggish"):
        result = runner.invoke(
            app, ["export", "npy", "out", "--feature", feature, "--dataset", "avsd"]
        )
        assert result.exit_code == 0, result.output
    assert "vggish: exported 3 items to out" in result.output
    back = read_tree(tmp_path / "out")
    assert back.keys() == written.keys()
    for name, array in written.items():
        np.testing.assert_array_equal(back[name], array)


def test_visdial_h5_import_float16_and_export(tmp_path):
    make_padded_h5(tmp_path / "val.h5")
    store = tmp_path / "store"
    result = runner.invoke(
        app,
        ["import", "visdial-h5", str(tmp_path / "val.h5"), "--store", str(store)]
        + ["--feature", "bottomup", "--dtype", "float16", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert FeatureStore.open(store)["bottomup"].dtype == np.float16

    # keep (the default) round-trips exactly
    result = runner.invoke(
        app, ["import", "visdial-h5", str(tmp_path / "val.h5"), "--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.h5"
    result = runner.invoke(
        app, ["export", "visdial-h5", str(out), "--feature", "val"] + ["--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert_same_h5(tmp_path / "val.h5", out)
    with h5py.File(out) as h5:
        assert h5["features"].dtype == np.float32


def test_import_errors_exit_1_with_the_reason(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["image_id"] = np.arange(3)
    store = str(tmp_path / "store")
    result = runner.invoke(
        app, ["import", "visdial-h5", str(tmp_path / "bad.h5"), "--store", store]
    )
    assert result.exit_code == 1
    assert "bad.h5: no 'features' (or 'image_features') dataset" in result.output

    result = runner.invoke(app, ["import", "tsv", str(tmp_path), "--store", store])
    assert result.exit_code == 2
    result = runner.invoke(
        app, ["import", "avsd-npy", str(tmp_path), "--store", store, "--id-map", "x.pkl"]
    )
    assert result.exit_code == 2 and "--id-map applies to visdial-h5 only" in result.output

    result = runner.invoke(
        app, ["export", "npy", str(tmp_path / "o"), "--feature", "nope"] + ["--store", store]
    )
    assert result.exit_code == 1 and "no feature 'nope'" in result.output
