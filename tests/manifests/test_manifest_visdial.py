"""VisDial v1.0 reader: train/val/test files with dense relevance, images, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vdial.manifests import ManifestError, read_visdial


@pytest.fixture()
def visdial(tmp_path: Path, files) -> dict[str, Path]:
    """train (ids 9, 25), val (ids 1, 2) with val dense on id 2 round 3, test (id 5, 4 rounds)."""
    root = tmp_path / "visdial"
    return {
        "train": files.write_json(root / "train.json", files.visdial_file("train", [9, 25])),
        "val": files.write_json(root / "val.json", files.visdial_file("val2018", [1, 2])),
        "test": files.write_json(root / "test.json", files.visdial_file("test2018", [5], 4)),
        "val_dense": files.write_json(
            root / "val_dense.json",
            [{"image_id": 2, "round_id": 3, "gt_relevance": files.relevance(1)}],
        ),
        "train_dense": files.write_json(
            root / "train_dense.json",
            [{"image_id": 25, "round_id": 10, "relevance": files.relevance(2)}],
        ),
    }


def _read(v: dict[str, Path], images: Path | None = None):
    return read_visdial(
        {"train": v["train"], "val": v["val"], "test": v["test"]},
        images,
        name="vd",
        dense={"val": v["val_dense"], "train": v["train_dense"]},
    )


def test_rows_options_and_gt_index(visdial: dict[str, Path], files) -> None:
    m = _read(visdial)
    rows = m.dialogs.to_pylist()
    assert m.splits() == ["train", "val", "test"]
    assert m.media.to_pydict()["id"] == ["9", "25", "1", "2", "5"]
    assert set(m.media["kind"].to_pylist()) == {"image"}
    assert len(rows) == 10 + 10 + 10 + 10 + 4
    raw = json.loads(visdial["train"].read_text())["data"]
    for j, row in enumerate(rows[10:20]):  # train image 25
        rnd = raw["dialogs"][1]["dialog"][j]
        assert (row["dialog_id"], row["media_id"], row["turn"]) == ("25", "25", j)
        assert row["question"] == f"question {j}"
        assert row["answer"] == f"answer {(7 * j) % files.num_answers}"
        assert row["answers"] == [row["answer"]]
        assert row["answer_options"] == [f"answer {k}" for k in rnd["answer_options"]]
        assert row["gt_index"] == (13 * j) % 100
        assert row["answer_options"][row["gt_index"]] == row["answer"]
        assert row["caption"] == "image 25" and row["summary"] is None
        assert row["source"] == f"train.json#data.dialogs[1].dialog[{j}]"


def test_test_split_last_round_unanswered(visdial: dict[str, Path]) -> None:
    test_rows = [r for r in _read(visdial).dialogs.to_pylist() if r["split"] == "test"]
    assert [r["turn"] for r in test_rows] == [0, 1, 2, 3]
    assert all(r["answer_options"] is None and r["gt_index"] is None for r in test_rows[:3])
    assert all(r["answers"] == [r["answer"]] and r["answer"] for r in test_rows[:3])
    last = test_rows[3]
    assert last["answer"] is None and last["answers"] == [] and last["gt_index"] is None
    assert len(last["answer_options"]) == 100 and last["question"] == "question 3"


def test_dense_relevance_lands_on_one_based_round(visdial: dict[str, Path], files) -> None:
    rows = _read(visdial).dialogs.to_pylist()
    with_relevance = {(r["dialog_id"], r["turn"]): r["relevance"] for r in rows if r["relevance"]}
    assert set(with_relevance) == {("2", 2), ("25", 9)}  # round_id 3 -> turn 2, 10 -> turn 9
    expected = np.asarray(files.relevance(1), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(with_relevance["2", 2], np.float32), expected)
    np.testing.assert_allclose(with_relevance["25", 9], files.relevance(2), rtol=1e-6)


def test_images_found_by_trailing_id(tmp_path: Path, visdial: dict[str, Path]) -> None:
    images = tmp_path / "images"
    for rel in (
        "train/COCO_train2014_000000000009.jpg",
        "train/COCO_val2014_000000000025.jpg",
        "val/VisualDialog_val2018_000000000001.jpg",
        "test/VisualDialog_test2018_000000000005.png",
        "notes/readme_000000000002.txt",  # not an image extension
    ):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(b"x")
    m = _read(visdial, images)
    paths = m.media_paths()
    assert paths == {
        "9": str((images / "train/COCO_train2014_000000000009.jpg").resolve()),
        "25": str((images / "train/COCO_val2014_000000000025.jpg").resolve()),
        "1": str((images / "val/VisualDialog_val2018_000000000001.jpg").resolve()),
        "5": str((images / "test/VisualDialog_test2018_000000000005.png").resolve()),
    }
    assert m.media_paths("val") == {"1": paths["1"]}
    assert m.validate().missing_files == ("2",)


def test_colliding_image_ids_resolved_by_split(tmp_path: Path, files) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in (
        "COCO_train2014_000000000001.jpg",
        "COCO_val2014_000000000001.jpg",
        "VisualDialog_val2018_000000000001.jpg",
    ):
        (images / name).write_bytes(b"x")
    # the declared split "val2018" decides where the split key "val" alone would not
    val = files.write_json(tmp_path / "val.json", files.visdial_file("val2018", [1], 2))
    m = read_visdial({"val": val}, images, name="vd")
    assert m.media_paths() == {"1": str(images.resolve() / "VisualDialog_val2018_000000000001.jpg")}
    train = files.write_json(tmp_path / "train.json", files.visdial_file("train", [1], 2))
    m = read_visdial({"train": train}, images, name="vd")
    assert m.media_paths() == {"1": str(images.resolve() / "COCO_train2014_000000000001.jpg")}
    other = files.write_json(tmp_path / "other.json", files.visdial_file("other", [1], 2))
    with pytest.raises(ManifestError, match="image id 1 .split other / extra. matches several"):
        read_visdial({"extra": other}, images, name="vd")


def _mutated(tmp_path: Path, files, mutate) -> Path:
    data = files.visdial_file("train", [9, 25], 3)
    mutate(data["data"])
    return files.write_json(tmp_path / "train.json", data)


@pytest.mark.parametrize(
    ("mutate", "location", "problem"),
    [
        (lambda d: d.pop("answers"), "data", "missing 'answers'"),
        (lambda d: d["dialogs"][1].pop("image_id"), "data.dialogs[1]", "missing 'image_id'"),
        (
            lambda d: d["dialogs"][1].update(image_id="25"),
            "data.dialogs[1]",
            "'image_id' must be an integer, got a string",
        ),
        (lambda d: d["dialogs"][1].update(image_id=9), "data.dialogs[1]", "duplicate image_id 9"),
        (
            lambda d: d["dialogs"][0]["dialog"][2].pop("question"),
            "data.dialogs[0].dialog[2]",
            "missing 'question'",
        ),
        (
            lambda d: d["dialogs"][0]["dialog"][1].update(question=12),
            "data.dialogs[0].dialog[1]",
            "'question' index 12 out of range 0..11",
        ),
        (
            lambda d: d["dialogs"][0]["dialog"][1].update(answer=-1),
            "data.dialogs[0].dialog[1]",
            "'answer' index -1 out of range",
        ),
        (
            lambda d: d["dialogs"][1]["dialog"][0]["answer_options"].pop(),
            "data.dialogs[1].dialog[0]",
            "'answer_options' has 99 entries, expected 100",
        ),
        (
            lambda d: d["dialogs"][1]["dialog"][0]["answer_options"].__setitem__(4, 999),
            "data.dialogs[1].dialog[0].answer_options[4]",
            "answer index 999 out of range",
        ),
        (
            lambda d: d["dialogs"][0]["dialog"][1].update(gt_index=100),
            "data.dialogs[0].dialog[1]",
            "'gt_index' 100 out of range 0..99",
        ),
        (
            lambda d: d["dialogs"][0]["dialog"][1].update(gt_index=0),
            "data.dialogs[0].dialog[1]",
            "answer_options[gt_index=0] is answer 8, but 'answer' is 7",
        ),
        (
            lambda d: d["dialogs"][0]["dialog"][1].pop("answer_options"),
            "data.dialogs[0].dialog[1]",
            "'gt_index' without 'answer_options'",
        ),
        (
            lambda d: d["dialogs"][0].update(round_id=2),
            "data.dialogs[0]",
            "'round_id' is 2 but the dialog has 3 round(s)",
        ),
    ],
)
def test_malformed_visdial(tmp_path: Path, files, mutate, location: str, problem: str) -> None:
    path = _mutated(tmp_path, files, mutate)
    with pytest.raises(ManifestError) as err:
        read_visdial({"train": path}, None, name="bad")
    assert str(err.value).startswith(f"{path}: {location}: {problem}")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"image_id": 9, "round_id": 0, "gt_relevance": [0.5] * 100}, "round_id 0 out of range"),
        (
            {"image_id": 9, "round_id": 4, "gt_relevance": [0.5] * 100},
            "round_id 4 out of range 1..3",
        ),
        ({"image_id": 77, "round_id": 1, "gt_relevance": [0.5] * 100}, "image_id 77 has no dialog"),
        (
            {"image_id": 9, "round_id": 1, "gt_relevance": [0.5] * 99},
            "'gt_relevance' has 99 scores, expected 100",
        ),
        ({"image_id": 9, "round_id": 1}, "missing 'gt_relevance' (or 'relevance')"),
        ({"image_id": 9, "gt_relevance": [0.5] * 100}, "missing 'round_id'"),
    ],
)
def test_malformed_dense(tmp_path: Path, files, entry: dict, problem: str) -> None:
    train = files.write_json(tmp_path / "train.json", files.visdial_file("train", [9], 3))
    dense = files.write_json(
        tmp_path / "dense.json", [{"image_id": 9, "round_id": 2, "relevance": [0.0] * 100}, entry]
    )
    with pytest.raises(ManifestError) as err:
        read_visdial({"train": train}, None, name="bad", dense={"train": dense})
    assert str(err.value).startswith(f"{dense}: [1]: {problem}")


def test_dense_on_unanswerable_round_and_duplicates(tmp_path: Path, files) -> None:
    test = files.write_json(tmp_path / "test.json", files.visdial_file("test2018", [5], 3))
    dense = files.write_json(
        tmp_path / "d.json", [{"image_id": 5, "round_id": 1, "gt_relevance": [1.0] * 100}]
    )
    with pytest.raises(
        ManifestError, match=r"d\.json: \[0\]: relevance for a round without answer_options"
    ):
        read_visdial({"test": test}, None, name="x", dense={"test": dense})
    twice = [{"image_id": 5, "round_id": 3, "gt_relevance": [1.0] * 100}] * 2
    dense2 = files.write_json(tmp_path / "d2.json", twice)
    with pytest.raises(
        ManifestError, match=r"d2\.json: \[1\]: duplicate annotation .* first at .*\[0\]"
    ):
        read_visdial({"test": test}, None, name="x", dense={"test": dense2})
    with pytest.raises(ValueError, match=r"dense annotations for split\(s\) \['val'\]"):
        read_visdial({"test": test}, None, name="x", dense={"val": dense2})


def test_same_image_in_two_splits_is_an_error(tmp_path: Path, files) -> None:
    train = files.write_json(tmp_path / "train.json", files.visdial_file("train", [3], 2))
    val = files.write_json(tmp_path / "val.json", files.visdial_file("val2018", [4, 3], 2))
    with pytest.raises(ManifestError) as err:
        read_visdial({"train": train, "val": val}, None, name="x")
    assert str(err.value).startswith(f"{val}: data.dialogs[1]: duplicate image_id 3")
    assert f"{train}: data.dialogs[0] (split 'train')" in str(err.value)
