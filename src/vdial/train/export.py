"""`export`: a run's language model in Hugging Face layout, loadable with `from_pretrained`.

The family's language model (`DialogModel.language_model`) is written with `save_pretrained`
(config.json, model.safetensors with tied weights handled by transformers) next to its
tokenizer: the pretrained model's own, or the run's word-level vocabulary wrapped as a
`PreTrainedTokenizerFast` with its special tokens named. LoRA adapters, where a later stage
adds them, are merged into the weights first. What only vdial reads (visual projectors,
option heads) stays in the run's checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

from vdial.train.run import RunError, load_trained
from vdial.train.tokenizer import BOS, EOS, PAD, SEP, UNK, HFTokenizer, WordTokenizer


def _hf_tokenizer(tokenizer):
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.tok
    if isinstance(tokenizer, WordTokenizer):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer.backend,
            pad_token=PAD,
            unk_token=UNK,
            bos_token=BOS,
            eos_token=EOS,
            sep_token=SEP,
        )
    raise TypeError(f"cannot export a {type(tokenizer).__name__}")


def export_hf(run_dir: str | Path, out: str | Path) -> Path:
    """Write the run's newest language model and tokenizer to `out` (HF layout)."""
    import copy

    trained = load_trained(run_dir)
    lm = trained.model.language_model()
    if lm is None:
        raise RunError(f"the {trained.config.family} family of {run_dir} has no language model")
    lm = copy.deepcopy(lm)
    if hasattr(lm, "merge_and_unload"):  # a peft model: fold the adapters into the weights
        lm = lm.merge_and_unload()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(out))
    _hf_tokenizer(trained.tokenizer).save_pretrained(str(out))
    source = {
        "run": str(run_dir),
        "family": trained.config.family,
        "stage": trained.stage,
        "step": trained.step,
    }
    (out / "vdial_export.json").write_text(json.dumps(source, indent=2) + "\n")
    return out
