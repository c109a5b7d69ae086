"""Scorer back ends for the AVSD generation metrics: coco-caption with or without Java.

The AVSD challenges score answers with coco-caption (pycocoevalcap): Stanford's PTBTokenizer
(Java) on hypotheses and references, then BLEU-1..4, METEOR (Java), ROUGE-L and CIDEr (which in
pycocoevalcap is CIDEr-D). Two back ends share the pure-Python BLEU, ROUGE-L and CIDEr-D:

* `OfficialScorer` ("official-ptb-java") tokenizes with pycocoevalcap's own PTBTokenizer and
  adds METEOR 1.5, i.e. exactly the challenge evaluation; it needs Java.
* `FastScorer` ("fast-inprocess") normalises with `vdial.evaluate.text.normalize`, which agrees
  with the Java tokenizer on the real AVSD text, and starts no JVM: quick enough for validation
  during training. It has no METEOR, which exists only as a Java program.

A metric that cannot be computed is `None` with a reason, never 0: a 0 would read as a score.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from vdial.evaluate.text import normalize

if TYPE_CHECKING:
    from pycocoevalcap.meteor.meteor import Meteor

SCORERS = ("official", "fast")
COCO_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
AVAILABLE = "available"

# pycocoevalcap's input shape: {item key: [sentence, ...]}.
Sentences = dict[Hashable, list[str]]

# Characters the Java PTBTokenizer treats as line breaks. pycocoevalcap replaces only "\n" and
# pairs its output lines with the input by position, so one "\r" would shift every later
# sentence onto the wrong hypothesis; as spaces they tokenize the same and keep lines aligned.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x85\u2028\u2029]")


class ScorerError(RuntimeError):
    """A scorer back end cannot run (no Java, or its Java process failed)."""


def java_missing() -> str | None:
    """Why Java cannot be used, or None when a `java` executable is on the PATH."""
    return "java is not on the PATH" if shutil.which("java") is None else None


def default_scorer() -> str:
    """The scorer to use when none is named: official where Java exists, else fast."""
    return "fast" if java_missing() else "official"


class Scorer(ABC):
    """Normalises sentences, then scores hypotheses against references."""

    name: ClassVar[str]  # recorded as "scorer" in results
    normalisation: ClassVar[str]  # recorded as "normalisation" in results
    # AVAILABLE, or "unavailable: <reason>" (METEOR is then None); read it after scoring,
    # since the official scorer learns only on first use that METEOR's JVM cannot run.
    meteor: str

    @abstractmethod
    def normalize(self, texts: Sequence[str]) -> list[str]:
        """The normalised form of each text, in order (one batch, one JVM at most)."""

    @abstractmethod
    def _meteor(self, gts: Sentences, res: Sentences) -> float | None:
        """Corpus METEOR of tokenized `res` against `gts`, or None where unavailable."""

    def score(
        self, refs: Mapping[Hashable, list[str]], hyps: Mapping[Hashable, str]
    ) -> dict[str, float | None]:
        """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of normalised hypotheses and references.

        Both mappings have the same keys; each reference list is non-empty. Scores are
        corpus-level as coco-caption computes them (BLEU from summed n-gram counts, CIDEr-D's
        document frequencies from these references).
        """
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        gts = {k: list(refs[k]) for k in refs}
        res = {k: [hyps[k]] for k in refs}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        # Last: a METEOR process still loading has then had the most time to finish.
        meteor = self._meteor(gts, res)
        values = [*bleu, meteor, rouge, cider]
        return {k: None if v is None else float(v) for k, v in zip(COCO_KEYS, values, strict=True)}


class FastScorer(Scorer):
    """In-process normalisation and pure-Python BLEU, ROUGE-L, CIDEr-D; no METEOR."""

    name = "fast-inprocess"
    normalisation = "vdial-inprocess-ptb"

    def __init__(self) -> None:
        missing = java_missing()
        self.meteor = f"unavailable: {missing or 'the fast scorer runs no Java'}"
        if not missing:
            self.meteor += " (use the official scorer for METEOR)"

    def normalize(self, texts: Sequence[str]) -> list[str]:
        return [normalize(text) for text in texts]

    def _meteor(self, gts: Sentences, res: Sentences) -> None:
        return None


@functools.cache
def meteor_process() -> Meteor:
    """pycocoevalcap's METEOR 1.5 scorer, one per Python process, shared by every evaluation.

    Starting it returns at once, but the JVM then loads its paraphrase table for 10-20 s
    (while the other metrics are computed); its scoring requests are independent of each
    other, so sharing one process changes no score.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _call_meteor(meteor: Meteor, gts: Sentences, res: Sentences) -> float:
    try:
        return float(meteor.compute_score(gts, res)[0])
    except (OSError, ValueError) as err:
        # pycocoevalcap holds its lock while talking to the JVM and waits for it again in
        # __del__: release it, or a dead process would hang the interpreter at exit.
        if meteor.lock.locked():
            meteor.lock.release()
        meteor.meteor_p.kill()
        # Closing drops what a failed write left buffered; __del__'s close is then a no-op
        # instead of a BrokenPipeError printed at garbage collection.
        with contextlib.suppress(BrokenPipeError):
            meteor.meteor_p.stdin.close()
        stderr = meteor.meteor_p.stderr.read().decode(errors="replace").strip()
        detail = stderr.splitlines()[-1] if stderr else repr(err)
        raise ScorerError(f"the METEOR Java process failed: {detail}") from err


class OfficialScorer(Scorer):
    """pycocoevalcap exactly as coco-caption runs it: Java PTBTokenizer and METEOR 1.5.

    METEOR starts loading when the scorer is made. If its JVM cannot start or dies before
    its first answer (e.g. no room for its 2 GB heap), METEOR becomes unavailable and the
    other metrics stay official; a process that dies after having answered is an error.
    """

    name = "official-ptb-java"
    normalisation = "ptb-corenlp-3.4.1-java"

    def __init__(self) -> None:
        missing = java_missing()
        if missing:
            raise ScorerError(
                f"the official scorer needs Java ({missing}); install Java 8+ or use the "
                "fast scorer, which has no METEOR"
            )
        self.meteor = AVAILABLE
        self._meteor_answered = False
        try:
            meteor_process()
        except OSError as err:
            self.meteor = f"unavailable: the METEOR Java process did not start: {err}"

    def normalize(self, texts: Sequence[str]) -> list[str]:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        if not texts:
            return []
        captions = {i: [{"caption": _LINE_BREAKS.sub(" ", t)}] for i, t in enumerate(texts)}
        try:
            tokenized = PTBTokenizer().tokenize(captions)
        except OSError as err:
            raise ScorerError(f"pycocoevalcap's PTBTokenizer failed: {err}") from err
        if len(tokenized) != len(texts):
            raise ScorerError(
                f"the PTBTokenizer returned {len(tokenized)} lines for {len(texts)} sentences"
            )
        return [tokenized[i][0] for i in range(len(texts))]

    def _meteor(self, gts: Sentences, res: Sentences) -> float | None:
        if self.meteor != AVAILABLE:
            return None
        try:
            value = _call_meteor(meteor_process(), gts, res)
        except ScorerError as err:
            # The next scorer gets a fresh process instead of the dead one.
            meteor_process.cache_clear()
            if self._meteor_answered:
                raise
            self.meteor = f"unavailable: {err}"
            return None
        self._meteor_answered = True
        return value


def make_scorer(kind: str | None = None) -> Scorer:
    """The scorer `kind` ("official" or "fast"); None picks `default_scorer()`."""
    kind = default_scorer() if kind is None else kind
    if kind == "official":
        return OfficialScorer()
    if kind == "fast":
        return FastScorer()
    raise ValueError(f"unknown scorer {kind!r}; expected one of {SCORERS}")
