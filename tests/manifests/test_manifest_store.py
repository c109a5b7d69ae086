"""Manifest Parquet round trip, schema checks on read, and the validation report."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from vdial.manifests import (
    DIALOG_SCHEMA,
    MEDIA_SCHEMA,
    Manifest,
    ManifestError,
    read_avsd,
    read_visdial,
)


def _media(rows: list[tuple[str, str | None, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": i, "path": p, "kind": "video", "split": s} for i, p, s in rows], schema=MEDIA_SCHEMA
    )


def _turns(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "dialog_id": d,
                "media_id": m,
                "split": s,
                "turn": 0,
                "question": "q",
                "answers": [],
                "source": f"x.json#{d}",
            }
            for d, m, s in rows
        ],
        schema=DIALOG_SCHEMA,
    )


def test_round_trip_real_avsd(tmp_path: Path, real: Path) -> None:
    m = read_avsd(
        {"test": real / "avsd/test_set4DSTC10-AVSD_multiref+reason.json"},
        real / "videos",
        name="dstc10",
    )
    out = m.write(tmp_path / "manifests" / "dstc10")
    assert out == tmp_path / "manifests" / "dstc10"
    assert sorted(p.name for p in out.iterdir()) == [
        "dialogs.parquet",
        "media.parquet",
        "summary.json",
    ]
    back = Manifest.read(out)
    assert back.name == "dstc10"
    assert back.media.equals(m.media) and back.dialogs.equals(m.dialogs)
    assert back.media.schema.equals(MEDIA_SCHEMA) and back.dialogs.schema.equals(DIALOG_SCHEMA)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == m.validate().to_dict()
    assert summary["splits"]["test"] == {
        "media": 1804,
        "missing": 1803,
        "dialogs": 1804,
        "turns": 14203,
    }
    assert summary["ok"] is False and "CGRUM" not in summary["missing_files"]


def test_round_trip_visdial_with_options_and_relevance(tmp_path: Path, files) -> None:
    train = files.write_json(tmp_path / "train.json", files.visdial_file("train", [9, 25], 3))
    dense = files.write_json(
        tmp_path / "dense.json", [{"image_id": 9, "round_id": 2, "relevance": files.relevance(3)}]
    )
    m = read_visdial({"train": train}, None, name="vd", dense={"train": dense})
    back = Manifest.read(m.write(tmp_path / "vd"))
    assert back.dialogs.equals(m.dialogs)
    assert back.dialogs["relevance"].type == pa.list_(pa.float32())
    assert back.dialogs["relevance"].null_count == 5


def test_read_rejects_wrong_schema_and_missing_files(tmp_path: Path) -> None:
    good = Manifest(name="m", media=_media([("a", None, "all")]), dialogs=_turns([]))
    directory = good.write(tmp_path / "m")
    bad = good.media.drop_columns(["fps"]).append_column("extra", pa.array([1], pa.int64()))
    pq.write_table(bad, directory / "media.parquet")
    with pytest.raises(ManifestError) as err:
        Manifest.read(directory)
    message = str(err.value)
    assert message.startswith(f"{directory / 'media.parquet'}: schema mismatch")
    assert "missing column(s) ['fps']" in message and "unexpected column(s) ['extra']" in message
    retyped = good.media.set_column(6, "width", pa.array([3], pa.int64()))
    pq.write_table(retyped, directory / "media.parquet")
    with pytest.raises(ManifestError, match="wrong type width: int64"):
        Manifest.read(directory)
    (directory / "media.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="unreadable Parquet file"):
        Manifest.read(directory)
    (directory / "media.parquet").unlink()
    with pytest.raises(ManifestError, match=r"media\.parquet: manifest file not found"):
        Manifest.read(directory)
    with pytest.raises(ManifestError, match="manifest directory not found"):
        Manifest.read(tmp_path / "nowhere")


def test_required_columns_reject_nulls() -> None:
    media = _media([("a", None, "all")]).set_column(
        0, MEDIA_SCHEMA.field("id"), pa.array([None], pa.string())
    )
    with pytest.raises(ManifestError, match="media table: column 'id' has 1 null value"):
        Manifest(name="m", media=media, dialogs=_turns([]))


def test_validation_finds_missing_duplicates_and_orphans(tmp_path: Path) -> None:
    present = tmp_path / "a.mp4"
    present.write_bytes(b"x")
    media = _media(
        [
            ("a", str(present), "train"),
            ("b", str(tmp_path / "gone.mp4"), "train"),
            ("c", None, "val"),
            ("a", str(present), "val"),
        ]
    )
    dialogs = _turns([("d1", "a", "train"), ("d1", "a", "train"), ("d2", "zz", "val")])
    m = Manifest(name="m", media=media, dialogs=dialogs)
    report = m.validate()
    assert not report.ok
    assert report.missing_files == ("b", "c")
    assert report.duplicate_media == ("a",)
    assert report.orphan_dialogs == ("d2",)
    assert report.splits["train"].media == 2 and report.splits["train"].missing == 1
    assert report.splits["train"].dialogs == 1 and report.splits["train"].turns == 2
    assert report.splits["val"].media == 2 and report.splits["val"].turns == 1
    totals = report.to_dict()["totals"]
    assert totals == {"media": 4, "missing": 2, "dialogs": 2, "turns": 3}
    assert report.problems() == [
        "2 media file(s) missing on disk: b, c",
        "1 duplicate media id(s): a",
        "1 dialog(s) without a media row: d2",
    ]
    console = Console(width=120, record=True)
    console.print(report.table())
    text = console.export_text()
    assert "problems found" in text and "1 dialog(s) without a media row: d2" in text
    assert [line.split()[1:] for line in text.splitlines() if "│ train" in line] == [
        ["train", "│", "2", "│", "1", "│", "1", "│", "2", "│"]
    ]


def test_clean_manifest_is_ok_and_paths_filter_by_split(tmp_path: Path) -> None:
    files = {}
    for name in ("a", "b"):
        files[name] = tmp_path / f"{name}.mp4"
        files[name].write_bytes(b"x")
    media = _media([("a", str(files["a"]), "train"), ("b", str(files["b"]), "test")])
    m = Manifest(name="m", media=media, dialogs=_turns([("a", "a", "train")]))
    assert m.validate().ok and m.validate().problems() == []
    assert m.splits() == ["train", "test"]
    assert m.media_paths("test") == {"b": str(files["b"])}
    with pytest.raises(ValueError, match="has no split 'val'"):
        m.media_paths("val")
