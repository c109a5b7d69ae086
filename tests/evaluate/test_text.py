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
        ("thanks =) bye =]", "thanks =-rrb- bye =]"),
        (":O) :o) :)x :-p", ":o -rrb- :o-rrb- -rrb- x :-p"),
        ("(^_^) -_- at .5 and :30", "-lrb-^_^-rrb- -_- at .5 and :30"),
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
    # Emoticons: `=` as eyes, no bracket renaming but round ones, case-sensitive `O` and `x`, no
    # emoticon before a letter or digit; Asian ones, numbers led by a separator, duck feet.
    "thanks =) and =( and =] and :] and :-p and :D and =-) and <:) and >:( and :\\ and :|",
    ":o) :O) :O :o :-O :oD :')  :)x :)9 :)_ :). a=)b hi=) =)=) ::) 8) 8-)",
    "^_^ -_- (^_^) (^^) (-.-) (x_x) (X_X) (xx) ('') x_^ x_^y ^_xy x_x-y x_xy >_< '_' (--)",
    "it is .5 mm , ,000 and :30 a:3 << quoted >> <<< and the CAPS: IT'S O'BRIEN, MR. SMITH",
    "a line that ends with an emoticon :)",
    # Last: the Java lexer sees no newline after the last line of its input, so an emoticon
    # ending it is not one (`:)` gives `: -rrb-`); the in-process tokenizer sees a line end.
    "the last line",
]


def test_matches_java_ptb_tokenizer_on_hard_cases() -> None:
    assert [normalize(line) for line in HARD_CASES] == _java_ptb(HARD_CASES)


def _strings(node) -> list[str]:
    """Every string in a parsed JSON document: texts, ids, the type and version fields."""
    if isinstance(node, str):
        return [node]
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [text for value in values for text in _strings(value)]


def test_matches_java_ptb_tokenizer_on_real_avsd_text() -> None:
    """Every distinct string of the three real AVSD files, in one Java call: 100 % agreement.

    Questions, answers (single and multiple references), reasons, captions and summaries, and
    the ids, 91,884 strings in all, 40,479 of them distinct.
    """
    names = [
        "test_set4DSTC10-AVSD_multiref+reason.json",
        "test_set4DSTC10-AVSD.json",
        "test_set4DSTC7-AVSD.json",
    ]
    paths = [REAL / "avsd" / name for name in names]
    if not all(path.is_file() for path in paths):
        pytest.skip("real AVSD data not available")
    strings = [text for path in paths for text in _strings(json.loads(path.read_text()))]
    lines = sorted(set(strings))
    assert (len(strings), len(lines)) == (91884, 40479)
    expected = _java_ptb(lines)
    mismatches = [
        (line, ours, theirs)
        for line, ours, theirs in zip(lines, map(normalize, lines), expected, strict=True)
        if ours != theirs
    ]
    assert mismatches == []
