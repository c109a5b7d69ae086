"""`vdial cache failures`: every failed id with its stage, reason and time, and an ids file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_video
from vdial.cache import FeatureStore
from vdial.cache.cli import app
from vdial.cli import app as vdial_app
from vdial.extract.runner import ExtractConfig, run_extraction
from vdial.manifests import read_folder

runner = CliRunner(env={"COLUMNS": "250"})
ENCODERS = ("dinov2:tiny", "siglip:tiny")
# The real file breaks mid-stream, the truncated one has lost its index.
REASONS = {"corrupted": "decoding failed near frame 26: ", "truncated": "cannot open: "}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, real_data):
    """A store extracted from one good clip, the real corrupted.mp4 and a truncated mp4."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("failures")
    media = root / "media"
    media.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (12, 48, 64, 3), np.uint8)
    write_video(media / "good.mp4", frames)
    whole = write_video(root / "whole.mp4", frames).read_bytes()
    (media / "truncated.mp4").write_bytes(whole[: len(whole) // 3])  # the index (moov) is gone
    (media / "corrupted.mp4").symlink_to(real_data / "videos" / "corrupted.mp4")
    manifest_dir = root / "manifest"
    read_folder(media, name="m").write(manifest_dir)
    config = ExtractConfig(encoders=ENCODERS, random_init=True, frames=4, decode_workers=1)
    run_extraction(read_folder(media, name="m"), root / "store", config, progress=False)
    return root


def _invoke(*args: str) -> str:
    result = runner.invoke(app, ["failures", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_lists_every_failed_id_with_its_reason_as_json_and_table(extracted):
    store = str(extracted / "store")
    reference = FeatureStore.open(store)
    rows = json.loads(_invoke("--store", store, "--json"))
    assert [(r["feature"], r["id"]) for r in rows] == [
        (feature, item_id)
        for feature in ("dinov2", "siglip")
        for item_id in ("corrupted", "truncated")
    ]
    for row in rows:
        failure = reference[row["feature"]].failures[row["id"]]
        assert (row["stage"], row["message"]) == (failure["stage"], failure["message"])
        assert row["stage"] == "decode" and row["message"].startswith(REASONS[row["id"]])
        segment = reference[row["feature"]].failure_segments[row["id"]]
        assert row["segment"] == segment.name
        when = datetime.fromisoformat(row["recorded_at"])
        assert when.tzinfo == UTC
        assert abs(when.timestamp() - segment.committed_at / 1e9) < 1
    assert all("Invalid data found" in row["message"] for row in rows)  # FFmpeg's reason

    table = _invoke("--store", store, "--feature", "siglip")
    lines = [line for line in table.splitlines() if "│ siglip" in line]
    assert [line.split("│")[2].strip() for line in lines] == ["corrupted", "truncated"]
    for line, row in zip(lines, rows[2:], strict=True):
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        assert cells[2] == "decode" and cells[3] == row["message"][: len(cells[3])]
        assert cells[4] == row["recorded_at"][:19].replace("T", " ")
    assert "2 failed item(s)" in table

    assert json.loads(_invoke("--store", store, "--json", "--stage", "timeout")) == []
    assert len(json.loads(_invoke("--store", store, "--json", "--stage", "decode"))) == 4


def test_ids_only_feeds_extract_ids_file(extracted, tmp_path):
    store = extracted / "store"
    ids = _invoke("--store", str(store), "--ids-only")
    assert ids == "corrupted\ntruncated\n"  # each id once, whatever the number of features
    before = FeatureStore.open(store)["dinov2"]
    good_segment = before.location("good")[0]
    ids_file = tmp_path / "failed.txt"
    ids_file.write_text(ids)
    args = ["extract", "--manifest", str(extracted / "manifest"), "--store", str(store)]
    args += ["--ids-file", str(ids_file), "--retry-failed", "--random-init", "--frames", "4"]
    args += ["-e", "dinov2:tiny", "--no-progress"]
    result = runner.invoke(vdial_app, args)
    assert result.exit_code == 0, result.output
    after = FeatureStore.open(store)["dinov2"]
    retried = {i: s.name for i, s in after.failure_segments.items()}
    assert sorted(retried) == ["corrupted", "truncated"]
    assert all(retried[i] != before.failure_segments[i].name for i in retried)  # tried again
    assert after.location("good")[0] == good_segment  # not in the ids file: left alone


def test_latest_failure_wins_and_a_later_success_clears_it(store):
    feature = store.create_feature("f", item_shape=(2,), spec={"encoder": "x"})
    with feature.writer() as writer:
        writer.fail("a", "decode", "first")
        writer.fail("b", "decode", "broken")
    with feature.writer() as writer:
        writer.fail("a", "timeout", "timed out after 5 s")
        writer.add("b", np.zeros((1, 2)))
    rows = json.loads(_invoke("--store", str(store.path), "--json"))
    assert [(r["id"], r["stage"], r["message"]) for r in rows] == [
        ("a", "timeout", "timed out after 5 s")
    ]
    assert rows[0]["segment"] == store["f"].segments[-1]


def test_ids_that_an_ids_file_cannot_carry_and_bad_options_are_one_line_errors(store):
    feature = store.create_feature("f", item_shape=(2,), spec={"encoder": "x"})
    with feature.writer() as writer:
        writer.fail("clip#2", "decode", "[h264 @ 0x1] no frame!")
    table = _invoke("--store", str(store.path))
    assert "[h264 @ 0x1] no frame!" in table  # brackets are text, not rich markup
    result = runner.invoke(app, ["failures", "--store", str(store.path), "--ids-only"])
    assert result.exit_code == 1 and "id 'clip#2' cannot be written to an ids file" in result.output
    result = runner.invoke(app, ["failures", "--store", str(store.path), "--feature", "nope"])
    assert result.exit_code == 1 and "nope" in result.output
    result = runner.invoke(app, ["failures", "--store", str(store.path), "--json", "--ids-only"])
    assert result.exit_code == 2 and "at most one of --json and --ids-only" in result.output
