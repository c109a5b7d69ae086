"""Training end to end on the toy store: learning from features, run directory, resume, stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vdial.config import ConfigError
from vdial.train.loop import fit
from vdial.train.predict import predict
from vdial.train.run import RunError

from .conftest import toy_config, toy_recipe


def answers_of(run, split="test") -> dict[str, str]:
    payload = json.loads(predict(run, split).read_text())
    return {d["image_id"]: d["dialog"][-1]["answer"] for d in payload["dialogs"]}


def final_weights(run, stage="train") -> dict[str, torch.Tensor]:
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["stage"] == stage
    return load_file(run / "checkpoints" / latest["path"] / "model.safetensors")


def test_learns_colours_from_features_only(toy, tmp_path):
    """The answer is only in the features: the real model answers, the zeroed one cannot."""
    results = {}
    for visual in ("real", "zero"):
        run = tmp_path / visual
        fit(toy_config(toy, visual=visual), run, progress=False)
        answers = answers_of(run)
        correct = sum(a == f"it is {toy['colour_of'][d]} ." for d, a in answers.items())
        results[visual] = correct / len(answers)
    assert results["real"] == 1.0
    assert results["zero"] <= 0.5  # four balanced colours: a blind model gets at most 2 of 8


def test_run_directory_contents_and_logs(toy, tmp_path):
    run = tmp_path / "run"
    result = fit(toy_config(toy, steps=30, checkpoint_every=10), run, progress=False)
    assert result.steps == 30 and result.resumed_from == 0 and result.stages == ["train"]
    for name in ("config.yaml", "store.json", "stages.json", "tokenizer/tokenizer.json"):
        assert (run / name).is_file(), name
    steps = sorted(p.name for p in (run / "checkpoints" / "train").iterdir())
    assert steps == ["step-000020", "step-000030"]  # keep_checkpoints: 2
    for name in ("model.safetensors", "state.pt", "rng-0.pt"):
        assert (run / "checkpoints" / "train" / "step-000030" / name).is_file()
    store = json.loads((run / "store.json").read_text())["toy"]
    assert store["kind"] == "avsd" and len(store["features"]["toy"]["fingerprint"]) >= 32
    stages = json.loads((run / "stages.json").read_text())["train"]
    total = sum(t.numel() for t in final_weights(run).values())
    assert stages["complete"] and stages["trained_params"] == stages["total_params"]
    assert stages["total_params"] <= total  # tied GPT-2 embeddings are stored once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    for tag in ("train/loss", "train/response", "train/lr", "time/data_wait_share"):
        assert [e.step for e in events.Scalars(tag)] == [10, 20, 30], tag
    payload = json.loads(predict(run, "test").read_text())
    assert payload["type"] == "scene_aware_dialog" and len(payload["dialogs"]) == 8
    assert payload["dialogs"][0]["dialog"][0]["answer"] == "yes it is ."  # history kept


def test_resuming_with_another_config_is_refused(toy, tmp_path):
    fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="different config.*optim"):
        fit(toy_config(toy, steps=5, lr=1e-2), tmp_path / "run", progress=False)


def test_resuming_on_changed_features_or_dialogs_is_refused(toy, tmp_path):
    import pyarrow.compute as pc

    from vdial.manifests import Manifest

    from .conftest import build_colour_dataset

    fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)
    fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)  # same data: resumes
    build_colour_dataset(toy["store"].parents[1], seed=1)  # re-extracted: other features
    with pytest.raises(ConfigError, match="toy: feature store changed"):
        fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)
    fit(toy_config(toy, steps=5), tmp_path / "run2", progress=False)
    manifest = Manifest.read(toy["manifest"])
    answers = pc.replace_substring(manifest.dialogs["answer"], "it is", "it looks")
    column = manifest.dialogs.schema.get_field_index("answer")
    dialogs = manifest.dialogs.set_column(column, "answer", answers)
    Manifest(name="toy", media=manifest.media, dialogs=dialogs).write(toy["manifest"])
    with pytest.raises(ConfigError, match="toy: dialogs changed"):
        fit(toy_config(toy, steps=5), tmp_path / "run2", progress=False)


def test_killed_run_resumes_to_the_same_weights(toy, tmp_path):
    """SIGKILL a real `vdial-train fit` after its first checkpoint, resume, compare bit for bit
    (dropout on, so the RNG state must be restored too)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe(toy, steps=120, checkpoint_every=20, dropout=0.1)))
    cli = [sys.executable, "-m", "vdial.train.cli", "fit", "--config", str(recipe)]
    cli.append("--no-progress")
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*cli, "--out", str(killed)], env=env)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "latest.json").exists():
        assert proc.poll() is None and time.time() < deadline, "trainer ended before a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = json.loads((killed / "checkpoints" / "latest.json").read_text())["step"]
    assert step < 120
    subprocess.run([*cli, "--out", str(killed)], check=True, env=env)
    straight = tmp_path / "straight"
    subprocess.run([*cli, "--out", str(straight)], check=True, env=env)
    a, b = final_weights(killed), final_weights(straight)
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["step"] == 120
    assert a.keys() == b.keys()
    for key, value in b.items():
        assert torch.equal(a[key], value), key


def test_dialogs_of_failed_videos_are_left_unanswered(toy, tmp_path):
    """A test video whose extraction failed gets an empty answer instead of a crash, and the
    run lists it."""
    import pyarrow as pa

    from vdial.cache import FeatureStore
    from vdial.manifests import Manifest

    from .conftest import _dialog_row

    manifest = Manifest.read(toy["manifest"])
    gone = {k: None for k in manifest.media.schema.names} | {"id": "gone", "kind": "video"}
    media = manifest.media.to_pylist() + [{**gone, "split": "test"}]
    dialogs = manifest.dialogs.to_pylist() + [
        _dialog_row("gone", "test", 0, "what colour is it ?", None)
    ]
    Manifest(
        name="toy",
        media=pa.Table.from_pylist(media, schema=manifest.media.schema),
        dialogs=pa.Table.from_pylist(dialogs, schema=manifest.dialogs.schema),
    ).write(toy["manifest"])
    with FeatureStore.open(toy["store"], mode="a")["toy"].writer() as writer:
        writer.fail("gone", "decode", "moov atom not found")
    run = tmp_path / "run"
    fit(toy_config(toy, steps=5), run, progress=False)
    answers = answers_of(run)
    assert answers["gone"] == "" and len(answers) == 9
    assert all(a for k, a in answers.items() if k != "gone")


def test_missing_feature_is_named(toy, tmp_path):
    with pytest.raises(
        RunError, match="dataset 'toy': no feature 'nope' in store .*; features: toy"
    ):
        fit(toy_config(toy, steps=5, feature="nope"), tmp_path / "run", progress=False)


THREE_STAGES = [
    {"name": "align", "steps": 6, "trainable": ["visual_proj.*"]},
    {"name": "lm", "steps": 6, "trainable": ["lm.*", "segment"], "frozen": ["*.wpe.*"]},
    {"name": "all", "steps": 6, "lr_mult": {"visual_proj.*": 10.0}},
]


def _counts(run) -> dict[str, int]:
    stages = json.loads((run / "stages.json").read_text())
    return {name: info["trained_params"] for name, info in stages.items()}


def test_three_stages_freeze_and_carry_over_exactly(toy, tmp_path):
    from fnmatch import fnmatchcase

    from vdial.train.run import load_trained

    config = toy_config(toy, stages=THREE_STAGES, dropout=0.1)
    straight = tmp_path / "straight"
    result = fit(config, straight, progress=False)
    assert result.stages == ["align", "lm", "all"]
    model = load_trained(straight).model
    names = {n: p.numel() for n, p in model.named_parameters()}

    def count(trainable, frozen=()):
        return sum(
            k
            for n, k in names.items()
            if any(fnmatchcase(n, p) for p in trainable)
            and not any(fnmatchcase(n, p) for p in frozen)
        )

    expected = {
        "align": count(["visual_proj.*"]),
        "lm": count(["lm.*", "segment"], ["*.wpe.*"]),
        "all": sum(names.values()),
    }
    assert _counts(straight) == expected and 0 < expected["align"] < expected["lm"]
    groups = json.loads((straight / "stages.json").read_text())["all"]["groups"]
    assert {g["pattern"]: g["lr_mult"] for g in groups} == {"": 1.0, "visual_proj.*": 10.0}

    # stage by stage, each in a new process state: the same tensors, bit for bit
    staged = tmp_path / "staged"
    with pytest.raises(RunError, match="starts from stage 'align'.*--stage align"):
        fit(config, staged, stage="lm", progress=False)
    fit(config, staged, stage="align", progress=False)
    align = final_weights(staged, "align")
    fit(config, staged, stage="lm", progress=False)
    lm = final_weights(staged, "lm")
    for name, value in align.items():
        trained_in_lm = (name.startswith("lm.") and ".wpe." not in name) or name == "segment"
        # what stage 2 does not train is exactly what stage 1 left, its projector included
        if not trained_in_lm:
            assert torch.equal(value, lm[name]), name
    assert any(not torch.equal(v, lm[k]) for k, v in align.items() if k.startswith("lm."))
    fit(config, staged, stage="all", progress=False)
    a, b = final_weights(staged, "all"), final_weights(straight, "all")
    for name, value in b.items():
        assert torch.equal(a[name], value), name


def test_precision_and_gradient_checkpointing_switches(toy, tmp_path):
    """Gradient checkpointing recomputes the same activations (same losses); bf16 and fp16
    autocast (fp16 with a GradScaler) train to finite losses close to float32's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def losses(run):
        events = EventAccumulator(str(run / "tb"))
        events.Reload()
        return [e.value for e in events.Scalars("train/loss")]

    runs = {}
    for name, keys in {
        "fp32": {},
        "checkpointed": {"grad_checkpointing": True},
        "bf16": {"precision": "bf16"},
        "fp16": {"precision": "fp16"},
    }.items():
        fit(toy_config(toy, steps=6, log_every=2, **keys), tmp_path / name, progress=False)
        runs[name] = losses(tmp_path / name)
    assert runs["checkpointed"] == pytest.approx(runs["fp32"], abs=1e-6)
    from .test_generate import tiny_model

    model = tiny_model()
    assert not model.lm.transformer.gradient_checkpointing
    model.enable_gradient_checkpointing()
    assert model.lm.transformer.gradient_checkpointing  # the switch reaches GPT-2's blocks
    for name in ("bf16", "fp16"):
        assert runs[name] == pytest.approx(runs["fp32"], rel=0.05), name
    state = torch.load(tmp_path / "fp16" / "checkpoints" / "train" / "step-000006" / "state.pt",
                       weights_only=False)  # fmt: skip
    assert state["scaler"]["scale"] > 0  # the GradScaler's state is saved with the step
