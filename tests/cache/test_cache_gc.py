"""`vdial cache gc`: removing the uncommitted segments that killed writers leave behind."""

from __future__ import annotations

import os
import time

import numpy as np
from typer.testing import CliRunner

from vdial.cache import FeatureStore
from vdial.cache.cli import app
from vdial.cache.gc import collect_garbage

runner = CliRunner(env={"COLUMNS": "200"})


def _store(path):
    store = FeatureStore.open(path, "a")
    feature = store.create_feature("f", item_shape=(4,), spec={"encoder": "toy"})
    with feature.writer() as writer:
        writer.add("kept", np.ones((2, 4)))
    for ids in (["old"], ["recent"]):  # written, never committed: what a killed task leaves
        writer = feature.writer(commit=False)
        writer.add(ids[0], np.zeros((3, 4)))
        writer.flush()
    return store


def _age(store, segment, hours):
    folder = store.path / "f" / "segments" / segment
    stamp = time.time() - hours * 3600
    for root, _, names in os.walk(folder):
        for name in names:
            os.utime(os.path.join(root, name), (stamp, stamp))


def test_only_old_uncommitted_segments_are_removed(tmp_path):
    store = _store(tmp_path / "s")
    feature = store["f"]
    old, recent = feature.uncommitted_segments
    _age(store, old, 2)
    before = feature.content_digest()
    report = collect_garbage(store, older_than_s=3600)
    by_segment = {r.segment: r for r in report}
    assert by_segment[old].removed and not by_segment[recent].removed
    assert by_segment[old].age_s > 7000 and by_segment[recent].age_s < 600
    assert by_segment[old].nbytes > 3 * 4 * 2  # its data, index and metadata files
    assert not (store.path / "f" / "segments" / old).exists()
    reopened = FeatureStore.open(tmp_path / "s")["f"]
    assert reopened.uncommitted_segments == [recent] and reopened.content_digest() == before
    assert collect_garbage(store, older_than_s=0)[0].removed  # 0: everything uncommitted
    assert FeatureStore.open(tmp_path / "s")["f"].uncommitted_segments == []


def test_gc_cli_dry_run_then_remove(tmp_path):
    store = _store(tmp_path / "s")
    old, recent = store["f"].uncommitted_segments
    _age(store, old, 5)
    dry = runner.invoke(app, ["gc", "--store", str(tmp_path / "s"), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "no (dry run)" in dry.output and "removed 0 segment(s)" in dry.output
    assert len(FeatureStore.open(tmp_path / "s")["f"].uncommitted_segments) == 2
    done = runner.invoke(app, ["gc", "--store", str(tmp_path / "s"), "--older-than", "1"])
    assert done.exit_code == 0, done.output
    assert "5.0 h" in done.output and "no (too recent)" in done.output
    assert "removed 1 segment(s)" in done.output
    assert FeatureStore.open(tmp_path / "s")["f"].uncommitted_segments == [recent]
    missing = runner.invoke(app, ["gc", "--store", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no vdial feature store" in missing.output
