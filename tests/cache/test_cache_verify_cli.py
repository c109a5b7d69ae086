"""`vdial cache verify` and `vdial cache info` on a store and its manifest, through CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from vdial.cache import FeatureStore
from vdial.cache.cli import app
from vdial.manifests import Manifest
from vdial.manifests.schema import DIALOG_SCHEMA, MEDIA_SCHEMA

runner = CliRunner(env={"COLUMNS": "200"})


def _manifest(ids_splits: list[tuple[str, str]]) -> Manifest:
    media = pa.Table.from_pylist(
        [{"id": i, "path": f"{i}.mp4", "kind": "video", "split": s} for i, s in ids_splits],
        schema=MEDIA_SCHEMA,
    )
    return Manifest(name="toy", media=media, dialogs=DIALOG_SCHEMA.empty_table())


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """./cache/toy with a feature and a view, and ./manifests/toy expecting a, b, c, d."""
    monkeypatch.chdir(tmp_path)
    store = FeatureStore.open("cache/toy", "a")
    feature = store.create_feature(
        "dinov2", item_shape=(4, 3), spec={"name": "dinov2", "weights": "random:0", "grid": [2, 2]}
    )
    with feature.writer() as writer:
        writer.add("a", np.ones((2, 4, 3)))
        writer.add("b", np.ones((3, 4, 3)))
        writer.fail("c", "decode", "moov atom not found")
    view = store.create_feature(
        "dinov2/mean",
        item_shape=(3,),
        spec={},
        lineage={
            "parent": "dinov2",
            "parent_fingerprint": feature.fingerprint(),
            "transform": {"op": "spatial-mean"},
        },
    )
    with view.writer() as writer:
        writer.add("a", np.ones((2, 3)))
    _manifest([("a", "train"), ("b", "train"), ("c", "test"), ("d", "test")]).write(
        tmp_path / "manifests" / "toy"
    )
    return tmp_path


def test_verify_fails_on_missing_ids_names_them_and_writes_json(toy):
    result = runner.invoke(app, ["verify", "--dataset", "toy", "--no-progress", "--json", "r.json"])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "missing" in result.output
    assert "[d]" in result.output  # the dinov2 feature lacks only d (c failed)
    report = json.loads((toy / "r.json").read_text())
    missing = {p["feature"]: p["ids"] for p in report["problems"] if p["kind"] == "missing"}
    assert missing == {"dinov2": ["d"], "dinov2/mean": ["b", "c", "d"]}
    assert report["ok"] is False and report["features"]["dinov2"]["items"] == 2


def test_verify_passes_on_a_split_the_store_holds(toy):
    result = runner.invoke(
        app, ["verify", "--dataset", "toy", "--feature", "dinov2", "--split", "train"]
    )
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_verify_exits_1_on_a_damaged_chunk_and_on_an_unknown_feature(toy):
    segment = FeatureStore.open("cache/toy")["dinov2"].location("a")[0]
    shard = toy / "cache" / "toy" / "dinov2" / "segments" / segment / "data" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    result = runner.invoke(app, ["verify", "--store", "cache/toy", "--no-progress"])
    assert result.exit_code == 1 and "fails its checksum" in result.output

    result = runner.invoke(app, ["verify", "--store", "cache/toy", "--feature", "nope"])
    assert result.exit_code == 1 and "no feature 'nope'" in result.output


def test_info_shows_counts_shapes_provenance_lineage_and_failures(toy):
    result = runner.invoke(app, ["info", "--dataset", "toy"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│ dinov2" in line}
    assert "2" in lines["dinov2"] and "(T, 4, 3)" in lines["dinov2"]
    assert "random:0" in lines["dinov2"]
    assert "dinov2 | spatial-mean()" in lines["dinov2/mean"]
    assert "dinov2: 1 failed items (1 at decode)" in result.output
