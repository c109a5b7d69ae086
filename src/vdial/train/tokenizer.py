"""Tokenizers: a word-level one trained on the dataset, or a language model's own.

* `WordTokenizer`: heads trained from scratch on small, lower-cased dialog text (the demo,
  LTMI) use a word-level vocabulary (Hugging Face `tokenizers`, BERT-style pre-tokenisation
  that splits punctuation) trained on the training split.
* `HFTokenizer`: a pretrained language model's tokenizer from its local folder (or GGUF file),
  with the special tokens a family needs added (and the model's embeddings resized).

Both give the same interface (encode/decode, the ids of pad/bos/eos/sep, `token_id`) and are
saved into the run directory's `tokenizer/` and reloaded from there by `load_tokenizer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

PAD, UNK, BOS, EOS, SEP = "<pad>", "<unk>", "<bos>", "<eos>", "<sep>"
SPECIALS = (PAD, UNK, BOS, EOS, SEP)
WORD_FILE = "tokenizer.json"


class Tokenizer(ABC):
    """What models and processors need of a tokenizer."""

    pad_id: int
    bos_id: int
    eos_id: int
    sep_id: int

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def token_id(self, token: str) -> int:
        """The id of a (special) token; KeyError when the vocabulary lacks it."""

    @abstractmethod
    def add_special_tokens(self, tokens: Iterable[str]) -> None: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None: ...

    @abstractmethod
    def _decode(self, ids: list[int]) -> str: ...

    def special_ids(self) -> set[int]:
        return {self.pad_id, self.bos_id, self.eos_id, self.sep_id}

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text, stopping at the first end-of-sequence token."""
        out = []
        special = self.special_ids()
        for i in ids:
            if i == self.eos_id:
                break
            if i not in special:
                out.append(int(i))
        return self._decode(out).strip()


class WordTokenizer(Tokenizer):
    """A word-level vocabulary trained on the dataset's own text."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.pad_id, _, self.bos_id, self.eos_id, self.sep_id = (
            backend.token_to_id(t) for t in SPECIALS
        )

    @classmethod
    def train(cls, texts: Iterable[str], *, min_frequency: int = 1) -> WordTokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, normalizers, pre_tokenizers, trainers

        backend = HFTokenizer(models.WordLevel(unk_token=UNK))
        backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordLevelTrainer(
            special_tokens=list(SPECIALS), min_frequency=min_frequency
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    @classmethod
    def load(cls, directory: str | Path) -> WordTokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(Path(directory) / WORD_FILE)))

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.backend.save(str(Path(directory) / WORD_FILE))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def token_id(self, token: str) -> int:
        found = self.backend.token_to_id(token)
        if found is None:
            raise KeyError(f"the tokenizer has no token {token!r}")
        return found

    def add_special_tokens(self, tokens: Iterable[str]) -> None:
        self.backend.add_special_tokens([t for t in tokens if self.backend.token_to_id(t) is None])

    def _decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)


class HFTokenizer(Tokenizer):
    """A transformers tokenizer with the pad and separator tokens vdial's models need."""

    def __init__(self, tok) -> None:
        self.tok = tok
        added = [t for t, have in ((PAD, tok.pad_token), (SEP, None)) if have is None]
        added = [t for t in added if t not in tok.get_vocab()]
        if added:
            tok.add_special_tokens(
                {"additional_special_tokens": added}, replace_extra_special_tokens=False
            )
        if tok.pad_token is None:
            tok.pad_token = PAD
        self.pad_id = tok.pad_token_id
        self.sep_id = tok.convert_tokens_to_ids(SEP)
        # T5 has no begin-of-sequence token; its decoder starts from pad (decoder_start_token)
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else self.pad_id
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else self.pad_id

    @classmethod
    def load(cls, directory: str | Path, *, gguf_file: str | None = None) -> HFTokenizer:
        from transformers import AutoTokenizer

        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        return cls(AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs))

    def save(self, directory: str | Path) -> None:
        self.tok.save_pretrained(str(directory))

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def token_id(self, token: str) -> int:
        if token not in self.tok.get_vocab():
            raise KeyError(f"the tokenizer has no token {token!r}")
        return self.tok.convert_tokens_to_ids(token)

    def add_special_tokens(self, tokens: Iterable[str]) -> None:
        new = [t for t in tokens if t not in self.tok.get_vocab()]
        if new:
            self.tok.add_special_tokens(
                {"additional_special_tokens": new}, replace_extra_special_tokens=False
            )

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer a run saved in `directory` (word-level or a language model's)."""
    directory = Path(directory)
    if (directory / "tokenizer_config.json").is_file():
        return HFTokenizer.load(directory)
    if (directory / WORD_FILE).is_file():
        return WordTokenizer.load(directory)
    raise FileNotFoundError(f"no tokenizer in {directory} (expected {WORD_FILE} or a HF tokenizer)")
