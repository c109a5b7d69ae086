"""VisDial retrieval metrics against the challenge's formulas, and the input readers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdial.evaluate.avsd import EvaluationError
from vdial.evaluate.visdial import (
    TIE_RULE,
    VisdialReferences,
    evaluate_visdial,
    load_answers,
    load_ranks,
    load_references,
    load_scores,
    ndcg_per_round,
    rank_rounds,
    ranks_from_scores,
)
from vdial.synth.api import plan, write_annotations


def _refs(gt_index, relevance) -> VisdialReferences:
    """References over rounds (image 1, round r+1) whose options are vocabulary 0..N-1."""
    relevance = np.asarray(relevance, dtype=np.float64)
    n_rounds, n = relevance.shape
    return VisdialReferences(
        keys=tuple((1, r + 1) for r in range(n_rounds)),
        option_ids=np.tile(np.arange(n), (n_rounds, 1)),
        vocabulary=tuple(f"answer {i}" for i in range(n)),
        gt_index=np.asarray(gt_index, dtype=np.int64),
        relevance=relevance,
    )


# --- an independent, loop-by-loop transcription of the challenge formulas -------------------


def _reference_ranks(scores: list[int]) -> list[int]:
    # stable descending: an option is preceded by every higher score and every equal score
    # at a lower option index
    return [
        1 + sum(s > x for s in scores) + sum(s == x for s in scores[:i])
        for i, x in enumerate(scores)
    ]


def _reference_ndcg(ranks: list[int], relevance: list[float]) -> float:
    k = sum(r != 0 for r in relevance)
    by_position = [option for _, option in sorted((rank, i) for i, rank in enumerate(ranks))]
    dcg = sum(relevance[by_position[p]] / math.log2(p + 2) for p in range(k))
    best = sorted(relevance, reverse=True)
    ideal = sum(best[p] / math.log2(p + 2) for p in range(k))
    return dcg / ideal


def _reference_metrics(scores, gt_index, relevance, present):
    n = len(scores[0])
    gt_ranks, ndcgs = [], []
    for r in range(len(scores)):
        ranks = _reference_ranks(scores[r]) if present[r] else None
        if gt_index[r] >= 0:
            gt_ranks.append(ranks[gt_index[r]] if present[r] else n)
        if relevance[r] is not None and any(relevance[r]):
            ndcgs.append(_reference_ndcg(ranks, relevance[r]) if present[r] else 0.0)
    out = {}
    for k in (1, 5, 10):
        out[f"r@{k}"] = sum(g <= k for g in gt_ranks) / len(gt_ranks) if gt_ranks else None
    out["mrr"] = sum(1 / g for g in gt_ranks) / len(gt_ranks) if gt_ranks else None
    out["mean_rank"] = sum(gt_ranks) / len(gt_ranks) if gt_ranks else None
    out["ndcg"] = sum(ndcgs) / len(ndcgs) if ndcgs else None
    return out, len(gt_ranks), len(ndcgs)


@st.composite
def _cases(draw):
    n = draw(st.integers(2, 14))
    n_rounds = draw(st.integers(1, 6))
    # few distinct integer values so that ties are frequent
    scores = [draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)) for _ in range(n_rounds)]
    gt_index = [draw(st.integers(-1, n - 1)) for _ in range(n_rounds)]
    relevance = [
        draw(
            st.none()
            | st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0]), min_size=n, max_size=n)
        )
        for _ in range(n_rounds)
    ]
    present = [draw(st.booleans()) for _ in range(n_rounds)]
    return scores, gt_index, relevance, present


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_metrics_equal_an_independent_implementation_with_ties(case) -> None:
    scores, gt_index, relevance, present = case
    n = len(scores[0])
    refs = _refs(gt_index, [rel if rel is not None else [np.nan] * n for rel in relevance])
    predictions = {refs.keys[r]: np.array(scores[r]) for r in range(len(scores)) if present[r]}
    ranks = rank_rounds(predictions)
    for r, key in enumerate(refs.keys):
        if present[r]:
            assert ranks[key].tolist() == _reference_ranks(scores[r])
    if not refs.scored.any():
        return
    result = evaluate_visdial(ranks, refs)
    expected, n_rounds, n_ndcg = _reference_metrics(scores, gt_index, relevance, present)
    assert (result["n_rounds"], result["n_ndcg"]) == (n_rounds, n_ndcg)
    for key, value in expected.items():
        assert result["overall"][key] == (None if value is None else pytest.approx(value))
    scored = [r for r in range(len(scores)) if refs.scored[r]]
    assert result["missing"] == [[1, r + 1] for r in scored if not present[r]]
    undefined = [[1, r + 1] for r in scored if relevance[r] is not None and not any(relevance[r])]
    assert result["ndcg_undefined"] == undefined


def test_ranks_match_the_challenge_scores_to_ranks_with_a_stable_sort() -> None:
    torch = pytest.importorskip("torch")
    scores = torch.randint(0, 4, (3, 5, 100)).float()
    # visdialch/metrics.py scores_to_ranks, with the sort made stable (our tie rule)
    flat = scores.view(-1, 100)
    _, ranked_idx = flat.sort(dim=1, descending=True, stable=True)
    expected = ranked_idx.clone().fill_(0)
    for i in range(ranked_idx.size(0)):
        for j in range(100):
            expected[i][ranked_idx[i][j]] = j
    expected = (expected + 1).view(3, 5, 100)
    assert np.array_equal(ranks_from_scores(scores.numpy()), expected.numpy())


def test_ties_go_to_the_lower_option_index() -> None:
    assert ranks_from_scores(np.array([[1, 3, 3, 0, 1]])).tolist() == [[3, 1, 2, 5, 4]]
    assert "lower index first" in TIE_RULE
    with pytest.raises(EvaluationError, match="NaN"):
        ranks_from_scores(np.array([[1.0, np.nan]]))


def test_perfect_ranking_scores_one() -> None:
    relevance = [[0.0, 0.5, 1.0, 0.0, 0.25]]
    refs = _refs([2], relevance)
    result = evaluate_visdial(rank_rounds({(1, 1): np.array(relevance[0])}), refs)
    assert result["overall"] == {
        "r@1": 1.0,
        "r@5": 1.0,
        "r@10": 1.0,
        "mrr": 1.0,
        "mean_rank": 1.0,
        "ndcg": 1.0,
    }
    assert result["tie_rule"] == TIE_RULE and result["protocol"] == "visdial/v1.0"


def test_a_known_permutation() -> None:
    # options by predicted position: 2 (rel 0.5), 0 (rel 1, the ground truth), 1, 4, 3; k = 2
    refs = _refs([0], [[1.0, 0.0, 0.5, 0.0, 0.0]])
    result = evaluate_visdial({(1, 1): np.array([2, 3, 1, 5, 4])}, refs)["overall"]
    assert (result["r@1"], result["r@5"], result["mrr"], result["mean_rank"]) == (0, 1, 0.5, 2)
    log3 = math.log2(3)
    assert result["ndcg"] == pytest.approx((0.5 + 1 / log3) / (1 + 0.5 / log3))
    # the cut-off is k, not N: relevant options below position k earn nothing
    late = ndcg_per_round(np.array([[3, 1, 4, 2, 5]]), np.array([[1.0, 0.0, 0.5, 0.0, 0.0]]))
    assert late[0] == pytest.approx(0.0)


def test_missing_rounds_count_as_worst_and_are_listed() -> None:
    refs = _refs([0, 1], [[1.0, 0.0, 0.0], [np.nan] * 3])
    result = evaluate_visdial({(1, 2): np.array([2, 1, 3])}, refs)
    assert result["missing"] == [[1, 1]]
    assert result["overall"]["mean_rank"] == 2.0  # (3 + 1) / 2
    assert result["overall"]["mrr"] == pytest.approx((1 / 3 + 1) / 2)
    assert result["overall"]["ndcg"] == 0.0
    with pytest.raises(EvaluationError, match=r"not rounds with answer options.*\(1, 7\)"):
        evaluate_visdial({(1, 7): np.array([1, 2, 3])}, refs)
    with pytest.raises(EvaluationError, match="not a permutation"):
        evaluate_visdial({(1, 1): np.array([1, 1, 3])}, refs)


def test_question_type_breakdown() -> None:
    refs = _refs([0, 0, 0], [[np.nan] * 3] * 3)
    ranks = {(1, 1): np.array([1, 2, 3]), (1, 2): np.array([2, 1, 3]), (1, 3): [3, 1, 2]}
    result = evaluate_visdial(ranks, refs, question_types={"1": ["colour", "shape", "colour"]})
    assert result["by_type"]["colour"]["mean_rank"] == 2.0
    assert result["by_type"]["colour"]["n_rounds"] == 2
    assert result["by_type"]["shape"]["r@1"] == 0.0
    with pytest.raises(EvaluationError, match="image_id 1 round_id 3"):
        evaluate_visdial(ranks, refs, question_types={"1": ["colour", "shape"]})


# --- the reference and prediction files -----------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_annotations(plan(size="tiny", seed=0), out)
    return out / "visdial"


def test_load_references_on_the_synthetic_val_files(synth: Path) -> None:
    refs = load_references(
        synth / "visdial_1.0_val.json", synth / "visdial_1.0_val_dense_annotations.json"
    )
    raw = json.loads((synth / "visdial_1.0_val.json").read_text())["data"]
    dense = json.loads((synth / "visdial_1.0_val_dense_annotations.json").read_text())
    assert refs.vocabulary == tuple(raw["answers"])
    assert len(refs.keys) == sum(len(d["dialog"]) for d in raw["dialogs"]) == 20
    for dialog in raw["dialogs"]:
        for j, turn in enumerate(dialog["dialog"]):
            row = refs.row[dialog["image_id"], j + 1]
            assert refs.option_ids[row].tolist() == turn["answer_options"]
            assert refs.gt_index[row] == turn["gt_index"]
    annotated = {(e["image_id"], e["round_id"]): e["gt_relevance"] for e in dense}
    for key, row in refs.row.items():
        if key in annotated:
            assert refs.relevance[row].tolist() == annotated[key]
        else:
            assert np.isnan(refs.relevance[row]).all()


def test_load_references_errors_name_the_file(synth: Path, tmp_path: Path) -> None:
    data = json.loads((synth / "visdial_1.0_val.json").read_text())
    data["data"]["dialogs"][1]["dialog"][3]["gt_index"] = 100
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(EvaluationError, match=r"bad\.json: data\.dialogs\[1\]\.dialog\[3\]"):
        load_references(bad)
    with pytest.raises(EvaluationError, match="no round has a gt_index"):
        load_references(synth / "visdial_1.0_test.json")


def _write(tmp_path: Path, entries) -> Path:
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"image_id": 5, "round_id": 1, "ranks": [1, 2, 2]},
            r"\[1\]\.ranks: not a perm.*\[2\].*\[3\]",
        ),
        ({"image_id": 5, "round_id": 1, "ranks": [1, 2]}, r"\[1\]\.ranks: expected a list of 3"),
        (
            {"image_id": 5, "round_id": 1, "ranks": [1, 2, 3.0]},
            r"\[1\]\.ranks: expected a list of 3 integers, found 3\.0",
        ),
        ({"image_id": 5, "round_id": 1, "ranks": [1, 2, True]}, r"\[1\]\.ranks: .* found True"),
        ({"image_id": 5, "round_id": 1}, r"\[1\]: missing 'ranks'"),
        ({"image_id": "5", "round_id": 1, "ranks": [1, 2, 3]}, r"\[1\]\.image_id: expected an int"),
        ({"image_id": 5, "round_id": 0, "ranks": [1, 2, 3]}, r"\[1\]: round_id 0 is not 1-based"),
        ({"image_id": 4, "round_id": 2, "ranks": [3, 2, 1]}, r"\[1\]: second prediction .*\[0\]"),
    ],
)
def test_submission_validation(tmp_path: Path, entry, message) -> None:
    path = _write(tmp_path, [{"image_id": 4, "round_id": 2, "ranks": [2, 3, 1]}, entry])
    with pytest.raises(EvaluationError, match=r"submission\.json: " + message):
        load_ranks(path, num_options=3)


def test_submission_is_read_and_checked_against_the_references(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"image_id": 1, "round_id": 2, "ranks": [2, 3, 1]}])
    assert load_ranks(path, num_options=3)[1, 2].tolist() == [2, 3, 1]
    with pytest.raises(EvaluationError, match=r"\[0\]: image_id 1 round_id 2 is not a round"):
        load_ranks(path, references=_refs([0], [[1.0, 0.0, 0.0]]))
    with pytest.raises(EvaluationError, match="expected a JSON list"):
        load_ranks(_write(tmp_path, {"image_id": 1}))


def test_scores_from_json_and_npz(tmp_path: Path) -> None:
    refs = _refs([0, 1], [[np.nan] * 3] * 2)
    rows = [{"image_id": 1, "round_id": r, "scores": [0.5, 2, -1.0]} for r in (1, 2)]
    from_json = load_scores(_write(tmp_path, rows), references=refs)
    npz = tmp_path / "scores.npz"
    np.savez(
        npz,
        image_id=np.array([1, 1]),
        round_id=np.array([1, 2]),
        scores=np.array([[0.5, 2, -1.0]] * 2),
    )
    from_npz = load_scores(npz, references=refs)
    assert from_json.keys() == from_npz.keys() == {(1, 1), (1, 2)}
    assert all(np.array_equal(from_json[k], from_npz[k]) for k in from_json)
    result = evaluate_visdial(rank_rounds(from_npz), refs)
    assert result["overall"]["mean_rank"] == 1.5  # gt 0 at rank 2, gt 1 at rank 1
    np.savez(npz, image_id=np.array([1]), round_id=np.array([1]), scores=np.array([[np.inf] * 3]))
    with pytest.raises(EvaluationError, match=r"scores\.npz: row 0: scores contain NaN"):
        load_scores(npz, references=refs)


def test_answers_file(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"image_id": 1, "round_id": 1, "answer": "yes"}])
    assert load_answers(path) == {(1, 1): "yes"}
    with pytest.raises(EvaluationError, match=r"\[0\]\.answer: expected a string"):
        load_answers(_write(tmp_path, [{"image_id": 1, "round_id": 1, "answer": 3}]))
