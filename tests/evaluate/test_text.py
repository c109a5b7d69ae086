"""The in-process PTB normalisation against hand-written cases and the Java PTBTokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess
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


def _java_ptb(lines: list[str], tmp_path: Path) -> list[str]:
    """The official path: CoreNLP's PTBTokenizer as pycocoevalcap runs it, then its filter."""
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    jar = Path(ptb.__file__).with_name(ptb.STANFORD_CORENLP_3_4_1_JAR)
    if shutil.which("java") is None or not jar.is_file():
        pytest.skip("java or the CoreNLP jar is not available")
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(line.replace("\n", " ") for line in lines), encoding="utf-8")
    cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
    cmd += ["-preserveLines", "-lowerCase", str(source)]
    output = subprocess.run(cmd, capture_output=True, check=True, text=True).stdout
    tokenized = output.split("\n")[: len(lines)]
    assert len(tokenized) == len(lines)
    return [
        " ".join(w for w in t.rstrip().split(" ") if w not in ptb.PUNCTUATIONS) for t in tokenized
    ]


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


def test_matches_java_ptb_tokenizer_on_hard_cases(tmp_path: Path) -> None:
    expected = _java_ptb(HARD_CASES, tmp_path)
    assert [normalize(line) for line in HARD_CASES] == expected


def test_matches_java_ptb_tokenizer_on_real_avsd_text(tmp_path: Path) -> None:
    path = REAL / "avsd" / "test_set4DSTC10-AVSD_multiref+reason.json"
    if not path.is_file():
        pytest.skip("real AVSD data not available")
    lines = []
    for dialog in json.loads(path.read_text())["dialogs"]:
        for turn in dialog["dialog"]:
            answer = turn["answer"]
            lines += [turn["question"], *(answer if isinstance(answer, list) else [answer])]
    assert len(lines) > 20000
    expected = _java_ptb(lines, tmp_path)
    ours = [normalize(line) for line in lines]
    mismatches = [trio for trio in zip(lines, ours, expected, strict=True) if trio[1] != trio[2]]
    assert mismatches == []
