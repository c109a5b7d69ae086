"""AVSD reader: the real DSTC7/DSTC10 test files, a DSTC7-style train file, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vdial.manifests import DIALOG_SCHEMA, MEDIA_SCHEMA, ManifestError, read_avsd

DSTC7 = "avsd/test_set4DSTC7-AVSD.json"
DSTC10 = "avsd/test_set4DSTC10-AVSD.json"
MULTIREF = "avsd/test_set4DSTC10-AVSD_multiref+reason.json"


@pytest.fixture(scope="module")
def dstc10(real: Path):
    return read_avsd({"test": real / MULTIREF}, real / "videos", name="dstc10")


def test_real_dialog_counts(real: Path) -> None:
    m = read_avsd({"test": real / DSTC7}, None, name="dstc7")
    raw = json.loads((real / DSTC7).read_text())["dialogs"]
    assert m.media.num_rows == 1710
    assert len(set(m.dialogs["dialog_id"].to_pylist())) == 1710
    assert m.dialogs.num_rows == sum(len(d["dialog"]) for d in raw)
    assert m.media.schema.equals(MEDIA_SCHEMA) and m.dialogs.schema.equals(DIALOG_SCHEMA)
    # no video directory: every path is null and reported, nothing is dropped
    assert m.media["path"].null_count == 1710
    assert len(m.validate().missing_files) == 1710


def test_real_dstc7_fields(real: Path) -> None:
    m = read_avsd({"test": real / DSTC7}, None, name="dstc7")
    rows = m.dialogs.to_pylist()
    first = json.loads((real / DSTC7).read_text())["dialogs"][0]
    assert rows[0]["dialog_id"] == first["image_id"]
    assert rows[0]["caption"] == first["caption"] and rows[0]["summary"] == first["summary"]
    assert rows[0]["source"] == "test_set4DSTC7-AVSD.json#dialogs[0].dialog[0]"
    # a dialog's last turn is the row before the next dialog's turn 0
    is_last = [r["turn"] == 0 for r in rows[1:]] + [True]
    last_turns = [r for r, last in zip(rows, is_last, strict=True) if last]
    assert len(last_turns) == 1710
    assert all(r["answer"] is None and r["answers"] == [] for r in last_turns)
    assert all(r["reason"] is None for r in rows)


def test_real_dstc10_undisclosed_and_reason(real: Path) -> None:
    m = read_avsd({"test": real / DSTC10}, real / "videos", name="dstc10")
    assert m.media.num_rows == 1804
    cgrum = [r for r in m.dialogs.to_pylist() if r["dialog_id"] == "CGRUM"]
    assert [r["turn"] for r in cgrum] == list(range(8))
    assert cgrum[0]["answer"] == "it is a man on the bed"
    assert cgrum[0]["answers"] == ["it is a man on the bed"]
    assert cgrum[0]["reason"] is None and cgrum[0]["caption"] is None
    last = cgrum[-1]
    assert last["question"] == "can you see what he is watching ?"
    assert last["answer"] is None and last["answers"] == []
    assert last["reason"] == [{"start": 0.0, "end": 23.744, "sentence": "he is in is house"}]
    assert m.media_paths() == {"CGRUM": str((real / "videos" / "CGRUM.mp4").resolve())}


def test_real_multiref_has_six_references(dstc10, real: Path) -> None:
    raw = json.loads((real / MULTIREF).read_text())["dialogs"]
    rows = dstc10.dialogs.to_pylist()
    by_id = {}
    for r in rows:
        by_id.setdefault(r["dialog_id"], []).append(r)
    assert len(by_id) == 1804
    for entry in raw:
        turns = by_id[entry["image_id"]]
        refs = entry["dialog"][-1]["answer"]
        assert len(turns[-1]["answers"]) == 6
        assert turns[-1]["answers"] == refs and turns[-1]["answer"] == refs[0]
        assert all(len(t["answers"]) == 1 for t in turns[:-1])
    reasons = [r["reason"] for r in rows if r["reason"] is not None]
    assert len(reasons) == 1804
    n_sentences = sum(len(t.get("reason", [])) for e in raw for t in e["dialog"])
    assert sum(len(r) for r in reasons) == n_sentences


def test_dstc7_style_train_file(tmp_path: Path, files) -> None:
    train = files.write_json(
        tmp_path / "train.json",
        files.avsd_file([files.avsd_dialog("AAAAA", 10), files.avsd_dialog("BBBBB", 3)]),
    )
    val = files.write_json(tmp_path / "val.json", files.avsd_file([files.avsd_dialog("CCCCC", 2)]))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "AAAAA.webm").write_bytes(b"x")
    (videos / "AAAAA.mkv").write_bytes(b"x")  # webm comes first in the extension order
    (videos / "CCCCC.mov").write_bytes(b"x")
    m = read_avsd({"train": train, "val": val}, videos, name="toy")
    assert m.splits() == ["train", "val"]
    assert m.media.to_pydict()["id"] == ["AAAAA", "BBBBB", "CCCCC"]
    assert m.media_paths() == {
        "AAAAA": str((videos / "AAAAA.webm").resolve()),
        "CCCCC": str((videos / "CCCCC.mov").resolve()),
    }
    assert set(m.media["kind"].to_pylist()) == {"video"}
    d = m.dialogs.to_pydict()
    assert d["dialog_id"] == ["AAAAA"] * 10 + ["BBBBB"] * 3 + ["CCCCC"] * 2
    assert d["turn"] == list(range(10)) + [0, 1, 2, 0, 1]
    assert d["split"] == ["train"] * 13 + ["val"] * 2
    assert d["question"][11] == "BBBBB q1 ?" and d["answer"][11] == "BBBBB a1 ."
    assert d["answers"][11] == ["BBBBB a1 ."]
    assert d["caption"][10] == "caption of BBBBB" and d["summary"][14] == "summary of CCCCC"
    assert d["source"][14] == "val.json#dialogs[0].dialog[1]"
    assert d["answer_options"] == [None] * 15 and d["gt_index"] == [None] * 15
    report = m.validate()
    assert report.missing_files == ("BBBBB",)
    assert report.splits["train"].turns == 13 and report.splits["val"].dialogs == 1


@pytest.mark.parametrize(
    ("mutate", "location", "problem"),
    [
        (lambda d: d[1]["dialog"][2].pop("question"), "dialogs[1].dialog[2]", "missing 'question'"),
        (lambda d: d[0].pop("image_id"), "dialogs[0]", "missing 'image_id'"),
        (lambda d: d[1].update(image_id=7), "dialogs[1]", "'image_id' must be a string"),
        (lambda d: d[0].update(dialog="x"), "dialogs[0]", "'dialog' must be a list"),
        (lambda d: d[0].update(dialog=[]), "dialogs[0]", "'dialog' has no turns"),
        (lambda d: d[0].update(caption=3), "dialogs[0]", "'caption' must be a string"),
        (lambda d: d[1].update(image_id="AAAAA"), "dialogs[1]", "duplicate image_id 'AAAAA'"),
        (
            lambda d: d[0]["dialog"][1].update(answer=5),
            "dialogs[0].dialog[1]",
            "'answer' must be a string or a list of strings",
        ),
        (
            lambda d: d[0]["dialog"][1].update(answer=["a", 2]),
            "dialogs[0].dialog[1].answer[1]",
            "must be a string",
        ),
        (
            lambda d: d[0]["dialog"][0].update(reason=[{"timestamp": [1.0], "sentence": "s"}]),
            "dialogs[0].dialog[0].reason[0]",
            "'timestamp' must be [start, end]",
        ),
        (
            lambda d: d[0]["dialog"][0].update(reason=[{"timestamp": [0, "9"], "sentence": "s"}]),
            "dialogs[0].dialog[0].reason[0].timestamp[1]",
            "must be a number",
        ),
        (
            lambda d: d[0]["dialog"][0].update(reason=[{"timestamp": [0, 1]}]),
            "dialogs[0].dialog[0].reason[0]",
            "missing 'sentence'",
        ),
    ],
)
def test_malformed_avsd(tmp_path: Path, files, mutate, location: str, problem: str) -> None:
    dialogs = [files.avsd_dialog("AAAAA", 3), files.avsd_dialog("BBBBB", 3)]
    mutate(dialogs)
    path = files.write_json(tmp_path / "train.json", files.avsd_file(dialogs))
    with pytest.raises(ManifestError) as err:
        read_avsd({"train": path}, None, name="bad")
    assert str(err.value).startswith(f"{path}: {location}: {problem}")


def test_duplicate_across_splits_names_both_files(tmp_path: Path, files) -> None:
    train = files.write_json(tmp_path / "train.json", files.avsd_file([files.avsd_dialog("A", 1)]))
    test = files.write_json(
        tmp_path / "test.json",
        files.avsd_file([files.avsd_dialog("B", 1), files.avsd_dialog("A", 1)]),
    )
    with pytest.raises(ManifestError, match="duplicate image_id 'A'") as err:
        read_avsd({"train": train, "test": test}, None, name="dup")
    assert str(err.value).startswith(f"{test}: dialogs[1]:")
    assert f"{train}: dialogs[0] (split 'train')" in str(err.value)


def test_file_level_errors(tmp_path: Path, files) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"dialogs": [\n{"image_id": }')
    with pytest.raises(ManifestError, match=r"broken\.json: line 2 column 14: invalid JSON"):
        read_avsd({"test": broken}, None, name="x")
    no_dialogs = files.write_json(tmp_path / "nodialogs.json", {"type": "scene_aware_dialog"})
    with pytest.raises(ManifestError, match=r"nodialogs\.json: missing 'dialogs'"):
        read_avsd({"test": no_dialogs}, None, name="x")
    with pytest.raises(ManifestError, match=r"absent\.json: annotation file not found"):
        read_avsd({"test": tmp_path / "absent.json"}, None, name="x")
    ok = files.write_json(tmp_path / "ok.json", files.avsd_file([files.avsd_dialog("A", 1)]))
    with pytest.raises(ManifestError, match="video directory not found"):
        read_avsd({"test": ok}, tmp_path / "novideos", name="x")
