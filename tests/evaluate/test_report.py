"""The run-comparison report: markdown tables, loss PNG, TensorBoard reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from vdial.evaluate.avsd import METRIC_KEYS, EvaluationError
from vdial.evaluate.report import compare_runs, load_run, metrics_table, read_losses

TRAIN = [2.5, 2.0, 1.6, 1.3, 1.1, 0.95]
VAL = {2: 1.8, 5: 1.2}


def metrics(seed: int, types: dict[str, int] | None = None, sha: str = "abc") -> dict[str, Any]:
    """A metrics.json dict with distinct, recognisable numbers."""
    overall = {
        k: round(0.1 * seed + 0.01 * i + 0.0001 * seed, 6) for i, k in enumerate(METRIC_KEYS)
    }
    by_type = {
        t: {
            **{k: round(0.05 * seed + 0.001 * j + 0.01 * i, 6) for i, k in enumerate(METRIC_KEYS)},
            "n": n,
        }
        for j, (t, n) in enumerate((types or {}).items())
    }
    return {
        "protocol": "avsd/last-turn",
        "normalisation": "vdial-inprocess-ptb",
        "n": 10,
        "missing": [],
        "overall": overall,
        "by_type": by_type,
        "references_sha256": sha,
    }


def make_run(
    root: Path, name: str, result: dict[str, Any], *, val: bool, tb: bool = True, scale: float = 1
) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(result))
    if tb:
        writer = SummaryWriter(log_dir=str(run / "tb"))
        for step, loss in enumerate(TRAIN):
            writer.add_scalar("train/loss", loss * scale, step)
            writer.add_scalar("train/lr", 0.001, step)
        if val:
            for step, loss in VAL.items():
                writer.add_scalar("val/loss", loss, step)
        writer.close()
    return run


def test_read_losses_from_tensorboard(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", metrics(1), val=True)
    losses = read_losses(run / "tb")
    assert set(losses) == {"train/loss", "val/loss"}
    assert [s for s, _ in losses["train/loss"]] == list(range(len(TRAIN)))
    np.testing.assert_allclose([v for _, v in losses["train/loss"]], TRAIN, rtol=1e-6)
    assert [(s, pytest.approx(v)) for s, v in losses["val/loss"]] == list(VAL.items())
    assert read_losses(tmp_path / "nowhere") == {}


def _colour_present(png: Path, rgb: tuple[int, int, int]) -> bool:
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    return bool((np.abs(pixels - np.array(rgb)).sum(axis=1) < 30).any())


def test_compare_runs_writes_markdown_and_png(tmp_path: Path) -> None:
    types = {"colour": 4, "count": 6}
    visual = make_run(tmp_path / "runs", "visual", metrics(3, types), val=True)
    zeroed = make_run(tmp_path / "runs", "zeroed", metrics(1, {"colour": 4}), val=False, scale=2)
    out = tmp_path / "demo" / "report.md"
    console = Console(record=True, width=200)
    assert compare_runs([visual, zeroed], out, console=console) == out

    text = out.read_text()
    assert "![loss curves](report_loss.png)" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    for name, seed in (("visual", 3), ("zeroed", 1)):
        expected = metrics(seed)["overall"]
        assert all(f"{expected[k]:.4f}" in rows[name] for k in METRIC_KEYS)
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert header.split(" | ")[2:] == [
        "BLEU-1",
        "BLEU-2",
        "BLEU-3",
        "BLEU-4",
        "METEOR",
        "ROUGE-L",
        "CIDEr",
        "exact match |",
    ]
    by_type = metrics(3, types)["by_type"]
    count_row = rows["count"].strip("| ").split(" | ")
    # type | n | visual EM | visual CIDEr | zeroed EM | zeroed CIDEr ("count" absent in zeroed)
    assert count_row == [
        "count",
        "6",
        f"{by_type['count']['exact_match']:.4f}",
        f"{by_type['count']['CIDEr']:.4f}",
        "–",
        "–",
    ]
    assert "Warning" not in text

    png = out.with_name("report_loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    assert Image.open(png).size == (700, 450)
    # Matplotlib's first two cycle colours: one per run's curves.
    assert _colour_present(png, (31, 119, 180)) and _colour_present(png, (255, 127, 14))

    printed = console.export_text()
    assert "visual" in printed and f"{metrics(3)['overall']['CIDEr']:.4f}" in printed
    assert "By question type" in printed


def test_report_flags_incomparable_runs_and_missing_logs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", metrics(1, sha="one"), val=False)
    b = make_run(
        tmp_path, "b", {**metrics(2, sha="two"), "missing": ["x", "y"]}, val=False, tb=False
    )
    out = compare_runs([a, b], tmp_path / "cmp.md")
    text = out.read_text()
    assert "**Warning:** the runs differ in `references_sha256`" in text
    assert "No `train/loss` or `val/loss` logged for: b." in text
    assert "`b` (2)" in text
    assert "By question type" not in text
    png = tmp_path / "cmp_loss.png"
    assert _colour_present(png, (31, 119, 180)) and not _colour_present(png, (255, 127, 14))


def test_run_without_metrics_is_an_error(tmp_path: Path) -> None:
    good = make_run(tmp_path, "good", metrics(1), val=False, tb=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="empty: no metrics.json"):
        compare_runs([good, tmp_path / "empty"], tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()
    (tmp_path / "empty" / "metrics.json").write_text(json.dumps({"overall": {"Bleu_1": 1}}))
    with pytest.raises(EvaluationError, match=r"metrics.json: expected an 'overall' entry"):
        load_run(tmp_path / "empty")


def test_metrics_table_lists_overall_and_types() -> None:
    result = metrics(2, {"colour": 3, "shape": 7})
    console = Console(record=True, width=200)
    console.print(metrics_table(result))
    lines = console.export_text().splitlines()
    shape = next(line for line in lines if "shape" in line)
    assert " 7 " in shape and f"{result['by_type']['shape']['CIDEr']:.4f}" in shape
    overall = next(line for line in lines if "overall" in line)
    assert f"{result['overall']['Bleu_4']:.4f}" in overall
