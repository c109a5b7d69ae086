"""Tiny random language models saved in the real Hugging Face layout.

No GPT-2, T5 or Vicuna weights can be downloaded here, so the tests (and anyone trying the
LLM-head paths without a checkpoint) build a tiny random model of the real architecture with
a small byte-level BPE tokenizer trained locally, and save both with `save_pretrained`:
config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json.
The folder then loads through the same code a user's checkpoint takes (`source: hf`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Enough text for a BPE vocabulary that covers the synthetic dialogs and ordinary English.
DEFAULT_TEXTS = (
    "what colour is the circle ? it is red . how many shapes are there ? there are two shapes .",
    "which way do they move ? everything moves leftwards . is there a square ? yes , there is .",
    "the triangle is green , the square is blue and the circle is yellow , purple or orange .",
    "a person walks into the kitchen and opens the fridge . does he say anything ? no he does not",
    "In: what is in the video ?\nOut: a clip of shapes moving up and down on a gray background .",
)

# Token conventions of each family's real tokenizer.
_SPECIALS = {
    "gpt2": {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    },
    "t5": {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
}


def train_bpe_tokenizer(arch: str, texts: Iterable[str], vocab_size: int = 400):
    """A byte-level BPE `PreTrainedTokenizerFast` with `arch`'s special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[arch]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(specials.values())),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def write_tiny_lm(
    arch: str,
    out: str | Path,
    *,
    texts: Iterable[str] = DEFAULT_TEXTS,
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny random `arch` model (gpt2, t5, llama) and its tokenizer under `out`."""
    import torch
    import transformers

    out = Path(out)
    tok = train_bpe_tokenizer(arch, texts)
    ids = {
        "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=len(tok),
            n_positions=256,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            **ids,
        )
        model = transformers.GPT2LMHeadModel(config)
    elif arch == "t5":
        config = transformers.T5Config(
            vocab_size=len(tok),
            d_model=d_model,
            d_kv=d_model // n_heads,
            d_ff=2 * d_model,
            num_layers=n_layers,
            num_heads=n_heads,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            decoder_start_token_id=tok.pad_token_id,
            **ids,
        )
        model = transformers.T5ForConditionalGeneration(config)
    elif arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=len(tok),
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **ids,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown architecture {arch!r}; expected one of gpt2, t5, llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
