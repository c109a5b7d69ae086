"""The scorer back ends: choice by Java availability, METEOR never reported as 0, the Java
tokenizer's line alignment, and METEOR process failures."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading

import pytest

from vdial.evaluate import coco
from vdial.evaluate.coco import (
    COCO_KEYS,
    FastScorer,
    OfficialScorer,
    ScorerError,
    default_scorer,
    java_missing,
    make_scorer,
)
from vdial.evaluate.text import normalize

REFS = {"a": ["a man sits on the couch", "he sits"], "b": ["no sound"], "c": ["a red cup"]}
HYPS = {"a": "a man sits", "b": "there is no sound", "c": ""}


def _official() -> OfficialScorer:
    if java_missing():
        pytest.skip(java_missing())
    return OfficialScorer()


def _dead_meteor(stderr: str) -> object:
    """pycocoevalcap's Meteor object around a process that has already exited."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor.__new__(Meteor)  # skip __init__: it would start the real JVM
    meteor.lock = threading.Lock()
    script = f"import sys; sys.stderr.write({stderr!r})"
    pipe = subprocess.PIPE
    meteor.meteor_p = subprocess.Popen(
        [sys.executable, "-c", script], stdin=pipe, stdout=pipe, stderr=pipe
    )
    meteor.meteor_p.wait()
    return meteor


def test_without_java_the_default_is_fast_and_meteor_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    assert java_missing() == "java is not on the PATH"
    assert default_scorer() == "fast"
    scorer = make_scorer()
    assert isinstance(scorer, FastScorer)
    assert scorer.meteor == "unavailable: java is not on the PATH"
    scores = scorer.score(REFS, HYPS)
    assert list(scores) == list(COCO_KEYS)
    assert scores["METEOR"] is None
    assert all(isinstance(scores[k], float) for k in COCO_KEYS if k != "METEOR")
    with pytest.raises(ScorerError, match=r"official scorer needs Java \(java is not on the PATH"):
        make_scorer("official")
    with pytest.raises(ValueError, match="unknown scorer 'java'"):
        make_scorer("java")


def test_fast_scorer_normalises_in_process_and_runs_no_java() -> None:
    scorer = FastScorer()
    texts = ["It's a man.", "He can't (really) see", ""]
    assert scorer.normalize(texts) == [normalize(t) for t in texts]
    assert scorer.name == "fast-inprocess" and scorer.normalisation == "vdial-inprocess-ptb"
    if not java_missing():
        assert scorer.meteor == (
            "unavailable: the fast scorer runs no Java (use the official scorer for METEOR)"
        )


def test_official_tokenizer_keeps_lines_aligned() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scorer = _official()
    texts = ["a\rb", "It's ok.", "", "c\u2028d", "e\x0bf", "last"]
    assert scorer.normalize(texts) == ["a b", "it 's ok", "", "c d", "e f", "last"]
    # Why the line breaks are replaced: pycocoevalcap pairs output lines with sentences by
    # position, and Java breaks "\r" into a second line, shifting every later sentence.
    direct = PTBTokenizer().tokenize({0: [{"caption": "a\rb"}], 1: [{"caption": "c"}]})
    assert direct == {0: ["a"], 1: ["b"]}
    assert scorer.normalize([]) == []


def test_official_scores_include_meteor() -> None:
    scorer = _official()
    scores = scorer.score(REFS, HYPS)
    assert scorer.meteor == "available"
    assert list(scores) == list(COCO_KEYS)
    assert 0 < scores["METEOR"] < 1
    fast = FastScorer().score(REFS, HYPS)
    # The same tokens (already normalised here) give the same non-METEOR scores.
    assert {k: v for k, v in scores.items() if k != "METEOR"} == pytest.approx(
        {k: v for k, v in fast.items() if k != "METEOR"}, rel=1e-12
    )


def test_a_dead_meteor_process_is_an_error_naming_its_stderr() -> None:
    meteor = _dead_meteor("Error occurred during initialization of VM\n")
    with pytest.raises(ScorerError, match="METEOR Java process failed: Error occurred during"):
        coco._call_meteor(meteor, {0: ["a"]}, {0: ["a"]})
    # pycocoevalcap's __del__ takes this lock: left held, the interpreter would hang at exit.
    assert not meteor.lock.locked()
    meteor.__del__()  # returns (a held lock would block here forever)


def test_meteor_failing_before_its_first_answer_is_unavailable_not_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scorer = _official()
    assert scorer.score(REFS, HYPS)["METEOR"] is not None  # the real process has answered
    dead = functools.cache(lambda: _dead_meteor("Error: could not reserve 2G heap\n"))
    monkeypatch.setattr(coco, "meteor_process", dead)
    # An answered scorer whose process then dies raises: its numbers would mix states.
    with pytest.raises(ScorerError, match="could not reserve"):
        scorer.score(REFS, HYPS)
    fresh = OfficialScorer()
    scores = fresh.score(REFS, HYPS)
    assert scores["METEOR"] is None
    assert fresh.meteor == (
        "unavailable: the METEOR Java process failed: Error: could not reserve 2G heap"
    )
    assert scores["CIDEr"] == pytest.approx(FastScorer().score(REFS, HYPS)["CIDEr"])
