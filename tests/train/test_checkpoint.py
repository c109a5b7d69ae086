"""Checkpoints as safetensors (tied tensors once), partial checkpoints, and `export --hf`."""

from __future__ import annotations

import dataclasses
import json

import torch
from safetensors import safe_open
from typer.testing import CliRunner

from vdial.train import checkpoint as ckpt
from vdial.train.cli import app
from vdial.train.loop import fit
from vdial.train.predict import predict
from vdial.train.run import load_trained

from .conftest import toy_config


def test_tied_weights_are_stored_once_and_stay_tied(toy, tmp_path):
    run = tmp_path / "run"
    fit(toy_config(toy, steps=3), run, progress=False)
    trained = load_trained(run)
    lm = trained.model.lm
    assert lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr()
    path = next((run / "checkpoints" / "train").glob("step-*")) / ckpt.WEIGHTS
    with safe_open(str(path), framework="pt") as f:
        stored = set(f.keys())
        aliases = json.loads(f.metadata()["aliases"])
    assert aliases == {"lm.lm_head.weight": "lm.transformer.wte.weight"}
    assert "lm.lm_head.weight" not in stored and "lm.transformer.wte.weight" in stored
    assert set(trained.model.state_dict()) == stored | set(aliases)


def test_partial_checkpoints_rebuild_what_no_stage_trained(toy, tmp_path):
    stages = [{"name": "proj", "steps": 4, "trainable": ["visual_proj.*", "segment"]}]
    full, partial = tmp_path / "full", tmp_path / "partial"
    config = toy_config(toy, stages=stages)
    fit(config, full, progress=False)
    fit(dataclasses.replace(config, checkpoint_frozen=False), partial, progress=False)
    path = partial / "checkpoints" / "proj" / "step-000004" / ckpt.WEIGHTS
    with safe_open(str(path), framework="pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"visual_proj", "segment"}
    assert predict(full, "test").read_text() == predict(partial, "test").read_text()


def test_export_writes_a_model_from_pretrained_loads(toy, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    fit(toy_config(toy, steps=3), run, progress=False)
    result = CliRunner().invoke(app, ["export", str(run), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    trained = load_trained(run)
    text = "what colour is it ?"
    ids = trained.tokenizer.encode(text)
    assert tokenizer.encode(text, add_special_tokens=False) == ids
    assert tokenizer.pad_token == "<pad>" and tokenizer.sep_token == "<sep>"
    model.eval()
    with torch.no_grad():
        ours = trained.model.lm(torch.tensor([ids])).logits
        theirs = model(torch.tensor([ids])).logits
    assert torch.equal(ours, theirs)
    meta = json.loads((tmp_path / "hf" / "vdial_export.json").read_text())
    assert meta["family"] == "prefix-lm" and meta["step"] == 3
