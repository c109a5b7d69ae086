"""A word-level tokenizer trained on the dataset's own text.

No pretrained vocabulary can be downloaded here, and the dialog datasets' text is small and
lower-cased, so a word-level vocabulary (Hugging Face `tokenizers`, BERT-style pre-tokenisation
that splits punctuation) trained on the training split is the honest choice. It is saved as
`tokenizer.json` in the run directory and reloaded for prediction.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PAD, UNK, BOS, EOS, SEP = "<pad>", "<unk>", "<bos>", "<eos>", "<sep>"
SPECIALS = (PAD, UNK, BOS, EOS, SEP)


class Tokenizer:
    """Thin wrapper: encode/decode plus the special-token ids the models need."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.sep_id = (
            backend.token_to_id(t) for t in SPECIALS
        )

    @classmethod
    def train(cls, texts: Iterable[str], *, min_frequency: int = 1) -> Tokenizer:
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
    def load(cls, path: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text, stopping at the first end-of-sequence token."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id, self.sep_id):
                out.append(i)
        return self.backend.decode(out, skip_special_tokens=True)
