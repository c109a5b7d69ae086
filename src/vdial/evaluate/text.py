"""In-process text normalisation for the AVSD generation metrics.

The AVSD challenges score answers with coco-caption (pycocoevalcap): every hypothesis and
reference first goes through Stanford CoreNLP's PTBTokenizer 3.4.1 (a Java subprocess, options
`-preserveLines -lowerCase`), then the tokens in `PUNCTUATIONS` are dropped. `normalize`
reproduces that pipeline in Python for ordinary English so that evaluation needs no JVM and no
temporary files: lower-casing, clitics split the PTB way (`it's` -> `it 's`, `can't` ->
`ca n't`, `cannot` -> `can not`, `gonna` -> `gon na`), punctuation split off words while
numbers (`3,000`, `2:30`), abbreviations (`mr.`, `e.g.`, `u.s.`) and hyphenated or slashed
words stay whole, emoticons (`:-)`, `=]`, `^_^`, `(x_x)`) and numbers led by a separator (`.5`,
`:30`) kept as single tokens, and the dropped punctuation removed.

Two quirks of the official pipeline are reproduced on purpose, because published numbers
include them: brackets become `-lrb-`, `-rrb-`, ... and are *kept* (pycocoevalcap's list holds
the upper-case `-LRB-` while the tokenizer emits lower case), and runs such as `?!` or `!!!`
are single tokens that are kept. On every string of the real AVSD files (questions, answers,
reasons, captions, summaries, ids: 40,479 distinct) the output equals the Java tokenizer's (a
test checks this); exotic input (URLs, unusual clitics, `x.5`) may still differ, and so does an
emoticon that ends the last sentence of a Java batch, which the lexer, meeting the end of its
input instead of a newline, does not take for one. The Java path itself is
`vdial.evaluate.coco.OfficialScorer`; results record which normalisation was used.
"""

from __future__ import annotations

import re

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens removed after PTB tokenization.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"]
    + [".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Abbreviations whose final period stays attached (CoreNLP keeps them even at line end).
_ABBREVIATIONS = (
    "mr|mrs|ms|messrs|dr|prof|st|jr|sr|gen|gov|sen|rep|lt|col|capt|sgt|mt|ft|vs|etc|inc"
    "|corp|co|ltd|bros|ave|blvd|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)

# Typographic characters mapped to the ASCII forms the PTB lexer normalises them to.
_TRANSLATE = str.maketrans(
    {
        "\u201c": "``",
        "\u201d": "''",
        "\u201e": "``",
        "\u2018": "`",
        "\u2019": "'",
        "\u201a": "'",
        "\u2026": "...",
        "\u2013": " -- ",
        "\u2014": " -- ",
        "\u00a0": " ",
    }
)

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}

# Ordered alternatives: Python takes the first that matches, so specific rules come first.
# Matched case-insensitively on the text as given and lower-cased afterwards, as the lexer
# does; the emoticons are case-sensitive there (`:O` is one, `:o` is not; `x` but not `X` in
# `(x_x)`), hence their `(?-i:...)`.
_TOKEN = re.compile(
    r"""
    (?P<ellipsis>\.{3,})
  | (?P<dash>-{2,})
  | (?P<quote>"|''|``)
  | (?P<smiley>(?-i:[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]](?![A-Za-z0-9])))
  | (?P<asian>(?-i:\([-^x=~<>'][_.]?[-^x=~<>']\)
              | [-^=~<>']_[-^x=~<>'] | x_[-^=~<>'] | x_x(?![^\W_]|[-&/._][^\W_])))
  | (?P<feet><<|>>)
  | (?P<number>[.:,]\d+(?:[.:,]\d+)*)
  | (?P<clitic>n't(?!\w) | '(?:s|m|d|re|ve|ll)(?!\w) | 'em(?!\w) | 'n' | '\d\ds(?!\w)
              | 't(?=is(?!\w)))
  | (?P<stem>\w+?(?=n't(?!\w)) | \w+(?='(?:s|m|d|re|ve|ll)(?!\w)))
  | (?P<split>(?<!\w)(?:can(?=not(?!\w)) | gon(?=na(?!\w)) | wan(?=na(?!\w))
              | got(?=ta(?!\w)) | gim(?=me(?!\w)) | lem(?=me(?!\w))))
  | (?P<abbrev>(?:[a-z]\.){2,}(?!\w) | [a-z]\.(?!\w) | (?:"""
    + _ABBREVIATIONS
    + r""")\.(?!\w))
  | (?P<word>[od]'[a-z]+ | [#@][a-z]\w* | [^\W_]+(?:[-&/._][^\W_]+ | (?<=\d)[,:]\d+)*)
  | (?P<run>[?!]{2,} | _+)
  | (?P<other>\S)
    """,
    re.VERBOSE | re.IGNORECASE,
)


def tokenize(text: str) -> list[str]:
    """PTB-style tokens of `text`, lower-cased, before punctuation removal."""
    text = text.translate(_TRANSLATE)
    tokens: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        if text[pos].isspace():
            pos += 1
            continue
        match = _TOKEN.match(text, pos)
        # `other` matches any non-space character, so a match always exists here.
        assert match is not None
        token = match.group().lower()
        if match.lastgroup == "ellipsis":
            token = "..."
        elif match.lastgroup == "dash":
            token = "--"
        elif match.lastgroup == "quote":
            token = "``" if token == "``" else "''"
        elif match.lastgroup in ("smiley", "asian"):
            # Only round brackets are renamed inside an emoticon: `:-)` -> `:--rrb-`, `=]` stays.
            token = token.replace("(", "-lrb-").replace(")", "-rrb-")
        elif match.lastgroup == "other":
            token = _BRACKETS.get(token, token)
        tokens.append(token)
        pos = match.end()
    return tokens


def normalize(text: str) -> str:
    """The AVSD challenge normalisation of one sentence, computed in process.

    Lower-cases, tokenizes like Stanford's PTBTokenizer (`it's` -> `it 's`, `don't` ->
    `do n't`, punctuation split off), drops the tokens pycocoevalcap's PTBTokenizer removes
    (`.`, `,`, `?`, `!`, `:`, `;`, `-`, `--`, `...`, quotes) and joins the rest with single
    spaces. This is the in-process form ("vdial-inprocess-ptb") of the official Java
    tokenization ("ptb-corenlp-3.4.1-java").

    >>> normalize("It's a man, and he can't see the TV.")
    "it 's a man and he ca n't see the tv"
    """
    return " ".join(t for t in tokenize(text) if t not in PUNCTUATIONS)
