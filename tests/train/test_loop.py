"""Training end to end on the toy store: learning from features, predictions, resume, logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vdial.config import ConfigError
from vdial.train.loop import batch_indices, fit
from vdial.train.predict import generate_answers, predict

from .conftest import toy_config


def test_batches_are_a_function_of_seed_and_step():
    assert batch_indices(20, 8, 0, 3) == batch_indices(20, 8, 0, 3)
    epoch0 = batch_indices(20, 8, 0, 0) + batch_indices(20, 8, 0, 1)
    assert len(set(epoch0)) == 16  # no repeats inside an epoch
    assert batch_indices(20, 8, 1, 0) != batch_indices(20, 8, 0, 0)


def test_learns_colours_from_features_only(toy, tmp_path):
    """The answer is only in the features: the real model answers, the zeroed one cannot."""
    results = {}
    for visual in ("real", "zero"):
        run = tmp_path / visual
        fit(toy_config(toy, visual=visual), run, progress=False)
        answers = generate_answers(run, "test")
        correct = sum(a == f"it is {toy['colour_of'][d]} ." for d, a in answers.items())
        results[visual] = correct / len(answers)
    assert results["real"] == 1.0
    assert results["zero"] <= 0.5  # four balanced colours: a blind model gets at most 2 of 8


def test_run_directory_contents_and_predictions(toy, tmp_path):
    run = tmp_path / "run"
    result = fit(toy_config(toy, steps=30, checkpoint_every=10), run, progress=False)
    assert result.steps == 30 and result.resumed_from == 0
    for name in ("config.yaml", "store.json", "tokenizer.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    store = json.loads((run / "store.json").read_text())
    assert store["feature"] == "toy" and len(store["fingerprint"]) >= 32
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20, 30]
    path = predict(run, "test")
    payload = json.loads(path.read_text())
    assert payload["type"] == "scene_aware_dialog" and len(payload["dialogs"]) == 8
    last = payload["dialogs"][0]["dialog"][-1]
    assert last["question"] == "what colour is it ?" and isinstance(last["answer"], str)
    assert payload["dialogs"][0]["dialog"][0]["answer"] == "yes it is ."  # history kept


def test_resuming_with_another_config_is_refused(toy, tmp_path):
    fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="different config"):
        fit(toy_config(toy, steps=5, lr=1e-2), tmp_path / "run", progress=False)


def test_resuming_on_changed_features_or_dialogs_is_refused(toy, tmp_path):
    from .conftest import build_colour_dataset

    fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)
    fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)  # same data: resumes
    build_colour_dataset(toy["store"].parents[1], seed=1)  # re-extracted: other features
    with pytest.raises(ConfigError, match="different feature store than now"):
        fit(toy_config(toy, steps=5), tmp_path / "run", progress=False)
    fit(toy_config(toy, steps=5), tmp_path / "run2", progress=False)
    other = build_colour_dataset(tmp_path / "other", seed=1)
    # the same features with other dialogs: reuse the store, change the manifest's answers
    import pyarrow.compute as pc

    from vdial.manifests import Manifest

    manifest = Manifest.read(other["manifest"])
    answers = pc.replace_substring(manifest.dialogs["answer"], "it is", "it looks")
    dialogs = manifest.dialogs.set_column(
        manifest.dialogs.schema.get_field_index("answer"), "answer", answers
    )
    Manifest(name="toy", media=manifest.media, dialogs=dialogs).write(toy["manifest"])
    with pytest.raises(ConfigError, match="different dialogs than now"):
        fit(toy_config(toy, steps=5), tmp_path / "run2", progress=False)


def test_killed_run_resumes_to_the_same_weights(toy, tmp_path):
    """SIGKILL a real `vdial-train fit` after its first checkpoint, resume, compare bit for bit."""
    import yaml

    config = toy_config(toy, steps=120, checkpoint_every=20, dropout=0.1)
    recipe = tmp_path / "recipe.yaml"
    fields = {k: v for k, v in config.__dict__.items() if k not in ("features", "feature")}
    recipe.write_text(yaml.safe_dump(fields))
    cli = [
        sys.executable,
        "-m",
        "vdial.train.cli",
        "fit",
        "--features",
        str(toy["store"]),
        "--feature",
        "toy",
        "--config",
        str(recipe),
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cli, "--out", str(killed)], env={**os.environ, "PYTHONHASHSEED": "0"})
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "trainer ended before a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)["step"]
    assert step < 120
    subprocess.run([*cli, "--out", str(killed)], check=True)
    straight = tmp_path / "straight"
    subprocess.run([*cli, "--out", str(straight)], check=True)
    a = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 120
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key


def test_dialogs_of_failed_videos_are_left_unanswered(toy, tmp_path):
    """A test video whose extraction failed gets an empty answer instead of a crash."""
    import pyarrow as pa

    from vdial.cache import FeatureStore
    from vdial.manifests import Manifest

    from .conftest import _dialog_row

    manifest = Manifest.read(toy["manifest"])
    media = manifest.media.to_pylist() + [
        {
            "id": "gone",
            "path": None,
            "kind": "video",
            "split": "test",
            "duration": None,
            "fps": None,
            "width": None,
            "height": None,
        }
    ]
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
    payload = json.loads(predict(run, "test").read_text())
    answers = {d["image_id"]: d["dialog"][-1]["answer"] for d in payload["dialogs"]}
    assert answers["gone"] == "" and len(answers) == 9
    assert all(a for k, a in answers.items() if k != "gone")
