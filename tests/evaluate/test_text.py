"""The in-process PTB normalisation against hand-written cases and the Java PTBTokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdial.evaluate.text import PUNCTUATIONS, normalize, tokenize

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It's a man.", "it 's a man"),
        ("He can't see it!", "he ca n't see it"),
        ("i don't know , maybe .", "i do n't know maybe"),
        ("they're here and we've gone", "they 're here and we 've gone"),
        ("she won't , he isn't", "she wo n't he is n't"),
        ("cannot gonna wanna gotta", "can not gon na wan na got ta"),
        ("the dog's bowl; yes: no?", "the dog 's bowl yes no"),
        ("he said \"hello\" to 'me'", "he said hello to me"),
        ("\u201csmart\u201d quotes \u2014 dash", "smart quotes dash"),
        ("a (red) cup", "a -lrb- red -rrb- cup"),
        ("what ?! no !!!", "what ?! no !!!"),
        ("wait... ok.. fine....", "wait ok fine"),
        ("mr. smith saw the u.s. flag at 5 p.m.", "mr. smith saw the u.s. flag at 5 p.m."),
        ("it costs $5 , 3,000 or 50%", "it costs $ 5 3,000 or 50 %"),
        ("a well-known e-mail at 2:30 and/or 24/7", "a well-known e-mail at 2:30 and/or 24/7"),
        ("the tv.", "the tv"),
        ("no i can 't tell", "no i can t tell"),
        ("it 's ok , he ca n't", "it 's ok he ca n't"),
        ("  many   spaces\tand\ttabs  ", "many spaces and tabs"),
        ("__UNDISCLOSED__", "__ undisclosed __"),
        ("", ""),
        (" . , ! ? ; : - -- ", ""),
    ],
)
def test_normalize_cases(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_tokenize_keeps_punctuation_that_normalize_drops() -> None:
    assert tokenize("Yes, it's red.") == ["yes", ",", "it", "'s", "red", "."]


def test_punctuation_list_is_pycocoevalcaps() -> None:
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    assert set(ptb.PUNCTUATIONS) == PUNCTUATIONS


@given(st.text(max_size=60))
def test_normalized_text_is_lowercase_single_spaced_without_dropped_tokens(text: str) -> None:
    out = normalize(text)
    assert out == out.strip()
    assert "  " not in out
    assert out == out.lower()
    assert not set(out.split(" ")) & PUNCTUATIONS


def _java_ptb(lines: list[str]) -> list[str]:
    """The official path: pycocoevalcap's PTBTokenizer (CoreNLP 3.4.1, Java) and its filter."""
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    if shutil.which("java") is None:
        pytest.skip("java is not on the PATH")
    # One sentence per key: pycocoevalcap pairs its output lines with the keys by position.
    tokenized = ptb.PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(lines)})
    assert len(tokenized) == len(lines)
    return [tokenized[i][0] for i in range(len(lines))]


HARD_CASES = [
    "It's a man, and he can't see the TV.",
    'I don\'t know... maybe (not); she said "hi" -- twice!',
    "the men's hats, james' car and the 1980's music",
    "they'll've gone; shouldn't've; i'd've; ain't",
    "gimme lemme cannot gonna wanna gotta 'tis",
    "mr. smith, dr. who and st. james went to the u.s. at 5 p.m. etc.",
    "3.5 and 3,000 and $3 and 50% and #1 and 2:30",
    "hmm?! yes!!! no?? wait.... ok..",
    "a well-known e-mail, a/b/c and/or 24/7 -- yes - no",
    "\u201cquoted\u201d and \u2018single\u2019 and the lady\u2018s hair \u2014 dash",
    "he's' and she is 'nice' and 'em and rock'n'roll",
    "[square] {curly} (round) :-) ;)",
    "__UNDISCLOSED__ and snake_case",
    "o'clock and d'you",
]


def test_matches_java_ptb_tokenizer_on_hard_cases() -> None:
    assert [normalize(line) for line in HARD_CASES] == _java_ptb(HARD_CASES)


def _real_text(data: dict) -> set[str]:
    """Every question, answer, reason, caption and summary of an AVSD file."""
    texts: set[str] = set()
    for dialog in data["dialogs"]:
        texts.update(dialog.get(key, "") for key in ("caption", "summary"))
        for turn in dialog["dialog"]:
            answer = turn["answer"]
            texts.update([turn["question"], *(answer if isinstance(answer, list) else [answer])])
            texts.update(reason["sentence"] for reason in turn.get("reason", []))
    return texts - {"", "__UNDISCLOSED__"}


def test_matches_java_ptb_tokenizer_on_real_avsd_text() -> None:
    """All distinct text of the three real AVSD files, in one Java call: 100 % agreement.

    The multiref file alone holds 37,426 questions and reference answers (31,763 distinct);
    with its reasons and the other two files (DSTC7 adds captions and summaries), 38,576.
    """
    names = [
        "test_set4DSTC10-AVSD_multiref+reason.json",
        "test_set4DSTC10-AVSD.json",
        "test_set4DSTC7-AVSD.json",
    ]
    paths = [REAL / "avsd" / name for name in names]
    if not all(path.is_file() for path in paths):
        pytest.skip("real AVSD data not available")
    lines = sorted(set().union(*(_real_text(json.loads(path.read_text())) for path in paths)))
    assert len(lines) == 38576
    expected = _java_ptb(lines)
    mismatches = [
        (line, ours, theirs)
        for line, ours, theirs in zip(lines, map(normalize, lines), expected, strict=True)
        if ours != theirs
    ]
    assert mismatches == []
