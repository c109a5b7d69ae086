"""Folder and CSV readers: ids, kinds, splits, relative paths and malformed CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdial.manifests import DIALOG_SCHEMA, ManifestError, read_folder


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_folder_ids_kinds_and_ignored_files(tmp_path: Path) -> None:
    root = tmp_path / "media"
    _touch(
        root,
        "b.MP4",
        "clips/a.webm",
        "clips/deeper/c.jpeg",
        "photo.png",
        "notes.txt",
        ".hidden.mp4",
        ".cache/x.mp4",
    )
    m = read_folder(root, name="mine")
    assert m.name == "mine"
    media = m.media.to_pydict()
    assert media["id"] == ["b", "clips/a", "clips/deeper/c", "photo"]
    assert media["kind"] == ["video", "video", "image", "image"]
    assert media["split"] == ["all"] * 4
    assert media["path"] == [
        str((root / n).resolve())
        for n in ("b.MP4", "clips/a.webm", "clips/deeper/c.jpeg", "photo.png")
    ]
    assert m.dialogs.num_rows == 0 and m.dialogs.schema.equals(DIALOG_SCHEMA)
    assert m.validate().ok


def test_folder_errors(tmp_path: Path) -> None:
    _touch(tmp_path / "dup", "x.mp4", "x.jpg")
    with pytest.raises(ManifestError, match=r"x\.mp4: id 'x' is also used by .*x\.jpg"):
        read_folder(tmp_path / "dup", name="d")
    _touch(tmp_path / "empty", "readme.md")
    with pytest.raises(ManifestError, match="no video or image files found"):
        read_folder(tmp_path / "empty", name="d")
    with pytest.raises(ManifestError, match="media directory not found"):
        read_folder(tmp_path / "absent", name="d")
    with pytest.raises(ValueError, match="exactly one of root= or csv="):
        read_folder(tmp_path, csv=tmp_path / "a.csv", name="d")
    with pytest.raises(ValueError, match="exactly one of root= or csv="):
        read_folder(name="d")


def test_csv_paths_splits_and_kinds(tmp_path: Path) -> None:
    _touch(tmp_path / "data", "v/one.mp4", "frames/two.bin")
    absolute = tmp_path / "elsewhere.png"
    absolute.write_bytes(b"x")
    listing = tmp_path / "data" / "list.csv"
    listing.write_text(
        "id,path,split,kind\n"
        "one,v/one.mp4,train,\n"
        "two,frames/two.bin,val,image\n"
        f"three,{absolute},,\n"
        "four,v/missing.mp4,test,video\n"
    )
    m = read_folder(csv=listing, name="csv")
    media = m.media.to_pydict()
    assert media["id"] == ["one", "two", "three", "four"]
    assert media["path"] == [
        str((tmp_path / "data/v/one.mp4").resolve()),
        str((tmp_path / "data/frames/two.bin").resolve()),
        str(absolute.resolve()),
        None,
    ]
    assert media["kind"] == ["video", "image", "image", "video"]
    assert media["split"] == ["train", "val", "all", "test"]
    assert m.validate().missing_files == ("four",)


def test_csv_minimal_columns(tmp_path: Path) -> None:
    _touch(tmp_path, "a.avi")
    listing = tmp_path / "l.csv"
    listing.write_text("path,id\na.avi,clip-a\n")
    m = read_folder(csv=listing, name="csv")
    assert m.media.to_pylist() == [
        {
            "id": "clip-a",
            "path": str((tmp_path / "a.avi").resolve()),
            "kind": "video",
            "split": "all",
            "duration": None,
            "fps": None,
            "width": None,
            "height": None,
        }
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("id,split\na,train\n", "line 1: missing column(s) ['path']"),
        ("id,path,fps\na,a.mp4,3\n", "line 1: unknown column(s) ['fps']"),
        ("id,path\na,a.mp4\nb,b.mp4\na,c.mp4\n", "line 4: duplicate id 'a', first on line 2"),
        ("id,path\n,a.mp4\n", "line 2: empty id"),
        ("id,path\na,\n", "line 2: empty path"),
        ("id,path\na,a.dat\n", "line 2: cannot tell the kind of 'a.dat'"),
        ("id,path,kind\na,a.mp4,audio\n", "line 2: kind 'audio' is not one of ['video', 'image']"),
        ("id,path\na,a.mp4,extra\n", "line 2: more fields than header columns"),
        ("id,path\n", "no rows after the header"),
    ],
)
def test_malformed_csv(tmp_path: Path, content: str, problem: str) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(content)
    with pytest.raises(ManifestError) as err:
        read_folder(csv=listing, name="csv")
    assert str(err.value).startswith(f"{listing}: {problem}")
