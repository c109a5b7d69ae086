"""`vdial cache info` and `vdial cache pool` through typer's CliRunner."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from vdial.cache import FeatureStore
from vdial.cache.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """A store at ./cache/toy (relative to a temporary working folder) with one feature."""
    monkeypatch.chdir(tmp_path)
    store = FeatureStore.open("cache/toy", "a")
    feature = store.create_feature(
        "dinov2",
        item_shape=(16, 3),
        spec={"encoder": "dinov2_vits14", "weights_digest": "random:7", "grid": [4, 4]},
        extras={"timestamps": ((), "float32")},
    )
    rng = np.random.default_rng(0)
    with feature.writer() as writer:
        for item_id, frames in [("a", 2), ("b", 3)]:
            writer.add(item_id, rng.standard_normal((frames, 16, 3)), timestamps=np.zeros(frames))
        writer.fail("c", "decode", "truncated file")
    return tmp_path / "cache" / "toy"


def test_pool_then_info_by_dataset_name(filled):
    result = runner.invoke(app, ["pool", "--dataset", "toy", "--feature", "dinov2", "--grid", "2"])
    assert result.exit_code == 0, result.output
    assert "dinov2/pool2x2: 2 items, item shape (T, 4, 3)" in result.output

    store = FeatureStore.open(filled)
    view, source = store["dinov2/pool2x2"], store["dinov2"]
    frames = torch.from_numpy(source["b"].astype(np.float32)).reshape(3, 4, 4, 3)
    pooled = F.adaptive_avg_pool2d(frames.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(view["b"], pooled.reshape(3, 4, 3).numpy().astype(np.float16))
    assert view.lineage["parent"] == "dinov2" and view.failures["c"]["message"] == "truncated file"

    result = runner.invoke(app, ["info", "--dataset", "toy"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│ dinov2" in line}
    assert set(lines) == {"dinov2", "dinov2/pool2x2"}
    for text in ["│ 2 │", "│ 1 │", "(T, 16, 3)", "float16", "dinov2_vits14", "random:7"]:
        assert text.replace(" ", "") in lines["dinov2"].replace(" ", ""), lines["dinov2"]
    assert "(T,4,3)" in lines["dinov2/pool2x2"].replace(" ", "")
    assert lines["dinov2/pool2x2"].split("│")[-2].strip().startswith("dinov2")  # its parent


def test_pool_with_store_path_and_custom_name(filled, tmp_path):
    result = runner.invoke(
        app,
        ["pool", "--store", str(filled), "--feature", "dinov2", "--grid", "1", "--name", "g1"],
    )
    assert result.exit_code == 0, result.output
    assert FeatureStore.open(filled)["g1"].item_shape == (1, 3)


def test_pool_ops_blocks_and_workers(filled):
    every = ["--op", "subsample", "--every", "2", "--block-items", "1", "--workers", "1"]
    result = runner.invoke(app, ["pool", "--dataset", "toy", "--feature", "dinov2", *every])
    assert result.exit_code == 0, result.output
    assert "dinov2/subsample-every2: 2 items, item shape (T, 16, 3)" in result.output
    store = FeatureStore.open(filled)
    view = store["dinov2/subsample-every2"]
    assert len(view.segments) == 3  # one per block of one item, plus the carried failure
    np.testing.assert_array_equal(view["b"], store["dinov2"]["b"][[0, 2]])

    args = ["pool", "--store", str(filled), "--feature", "dinov2", "--no-progress"]
    result = runner.invoke(app, [*args, "--op", "pool3d", "--grid", "1"])
    assert result.exit_code == 0, result.output
    assert "dinov2/pool3d-1x1: 2 items, item shape (T, 1, 3)" in result.output
    result = runner.invoke(app, [*args, "--op", "st-pool", "--name", "st"])
    assert result.exit_code == 0 and "st: 2 items, item shape (T, 3)" in result.output
    assert store["st"]["b"].shape == (3 + 16, 3)  # 3 frame means, then 16 token means

    for extra, message in [
        (["--op", "temporal-mean", "--grid", "2"], "'temporal-mean' does not take grid"),
        (["--op", "subsample"], "exactly one of every"),
        (["--op", "nope"], "unknown view op 'nope'"),
        (["--op", "drop-prefix"], "'dinov2' has no prefix tokens to drop"),
    ]:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 1 and message in result.output, result.output


def test_bad_invocations_fail_cleanly(filled, tmp_path):
    both = runner.invoke(app, ["info", "--dataset", "toy", "--store", str(filled)])
    assert both.exit_code == 2 and "exactly one of --dataset or --store" in both.output
    neither = runner.invoke(app, ["info"])
    assert neither.exit_code == 2

    missing = runner.invoke(app, ["pool", "--dataset", "nope", "--feature", "x", "--grid", "2"])
    assert missing.exit_code == 1 and "no vdial feature store at cache/nope" in missing.output
    assert not (tmp_path / "cache" / "nope").exists()  # pooling never creates a store

    unknown = runner.invoke(app, ["pool", "--dataset", "toy", "--feature", "x", "--grid", "2"])
    assert unknown.exit_code == 1 and "no feature 'x'" in unknown.output
    too_big = runner.invoke(app, ["pool", "--dataset", "toy", "--feature", "dinov2", "--grid", "9"])
    assert too_big.exit_code == 1 and "grid must be between 1 and 4" in too_big.output


def test_cli_module_imports_no_heavy_libraries():
    code = (
        "import sys, vdial.cache.cli; print(sorted({'zarr', 'numpy', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
