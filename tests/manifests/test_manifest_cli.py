"""`vdial manifest ...` commands, driven through typer's CliRunner on the manifest sub-app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vdial.manifests import Manifest, read_avsd
from vdial.manifests.cli import app

runner = CliRunner()


@pytest.fixture()
def avsd(tmp_path: Path, files) -> dict[str, Path]:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "AAAAA.mp4").write_bytes(b"x")
    return {
        "train": files.write_json(
            tmp_path / "train.json",
            files.avsd_file([files.avsd_dialog("AAAAA", 10), files.avsd_dialog("BBBBB", 3)]),
        ),
        "val": files.write_json(
            tmp_path / "val.json", files.avsd_file([files.avsd_dialog("CCCCC", 2)])
        ),
        "videos": videos,
    }


def test_build_avsd_writes_manifest_and_prints_table(tmp_path: Path, avsd) -> None:
    out = tmp_path / "manifests"
    args = ["build", "avsd", "--name", "toy", "--videos", str(avsd["videos"]), "--out", str(out)]
    args += ["--annotations", f"train={avsd['train']}", "--annotations", f"val={avsd['val']}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(
        line.split("│")[1:5] == [" train ", "     2 ", "       1 ", "       2 "] for line in lines
    )
    assert "rows: 3 media, 15 dialog turns" in result.output
    assert "warning: 2 media file(s) not found on disk" in result.output
    assert f"wrote {out / 'toy'}" in result.output
    written = Manifest.read(out / "toy")
    direct = read_avsd({"train": avsd["train"], "val": avsd["val"]}, avsd["videos"], name="toy")
    assert written.media.equals(direct.media) and written.dialogs.equals(direct.dialogs)
    assert json.loads((out / "toy" / "summary.json").read_text())["totals"]["turns"] == 15


def test_build_avsd_malformed_exits_1_without_traceback(tmp_path: Path, files) -> None:
    dialog = files.avsd_dialog("AAAAA", 2)
    del dialog["dialog"][1]["question"]
    bad = files.write_json(tmp_path / "bad.json", files.avsd_file([dialog]))
    result = runner.invoke(
        app,
        ["build", "avsd", "--name", "x", "--annotations", f"test={bad}", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert f"error: {bad}: dialogs[0].dialog[1]: missing 'question'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--annotations", "train"], "expected split=PATH"),
        (["--annotations", "=a.json"], "expected split=PATH"),
        (["--annotations", "a=x.json", "--annotations", "a=y.json"], "split 'a' given twice"),
        (["--annotations", "a=x.json", "--name", "../up"], "is not a directory name"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["build", "avsd", "--name", "n", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_build_visdial_with_dense(tmp_path: Path, files) -> None:
    val = files.write_json(tmp_path / "val.json", files.visdial_file("val2018", [1, 2], 3))
    dense = files.write_json(
        tmp_path / "dense.json", [{"image_id": 2, "round_id": 1, "gt_relevance": [0.5] * 100}]
    )
    out = tmp_path / "m"
    args = ["build", "visdial", "--name", "vd", "--annotations", f"val={val}", "--out", str(out)]
    result = runner.invoke(app, [*args, "--dense", f"val={dense}"])
    assert result.exit_code == 0, result.output
    rows = Manifest.read(out / "vd").dialogs.to_pylist()
    assert [(r["dialog_id"], r["turn"]) for r in rows if r["relevance"]] == [("2", 0)]
    orphan_dense = runner.invoke(app, [*args, "--dense", f"train={dense}"])
    assert (
        orphan_dense.exit_code == 2
        and "no --annotations for split(s) ['train']" in orphan_dense.output
    )


def test_build_folder_and_csv_and_show(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.mp4").write_bytes(b"x")
    (media / "b.jpg").write_bytes(b"x")
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["build", "folder", "--name", "f", "--root", str(media), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Manifest.read(out / "f").media["id"].to_pylist() == ["a", "b"]
    listing = tmp_path / "l.csv"
    listing.write_text("id,path,split\nx,media/a.mp4,train\n")
    result = runner.invoke(
        app, ["build", "folder", "--name", "c", "--csv", str(listing), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Manifest.read(out / "c").media_paths("train") == {"x": str((media / "a.mp4").resolve())}
    neither = runner.invoke(app, ["build", "folder", "--name", "c", "--out", str(out)])
    assert neither.exit_code == 2 and "exactly one of --root or --csv" in neither.output

    shown = runner.invoke(app, ["show", str(out / "f")])
    assert shown.exit_code == 0, shown.output
    assert "manifest f: ok" in shown.output and "rows: 2 media, 0 dialog turns" in shown.output
    missing = runner.invoke(app, ["show", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "manifest directory not found" in missing.output


def test_help_lists_commands_and_import_stays_light() -> None:
    result = runner.invoke(app, ["build", "--help"])
    assert result.exit_code == 0
    assert all(cmd in result.output for cmd in ("avsd", "visdial", "folder"))
    probe = "import sys, vdial.manifests.cli; print('pyarrow' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "False"
