"""`predict`: AVSD challenge JSON and VisDial generated answers, decoding options, sidecar."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from vdial.cache import FeatureStore
from vdial.manifests import DIALOG_SCHEMA, MEDIA_SCHEMA, Manifest
from vdial.train.cli import app
from vdial.train.generate import Decoding
from vdial.train.loop import fit
from vdial.train.models.prefix_lm import context_text
from vdial.train.predict import meta_path, predict
from vdial.train.run import load_trained
from vdial.train.tokenizer import load_tokenizer

from .conftest import COLOURS, _dialog_row, build_colour_dataset, toy_config


@pytest.fixture(scope="module")
def avsd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("avsd")
    toy = build_colour_dataset(root)
    fit(toy_config(toy, steps=20, checkpoint_every=20), root / "run", progress=False)
    return root / "run"


def test_avsd_predictions_record_their_decoding(avsd_run, tmp_path):
    out = predict(
        avsd_run,
        "test",
        out=tmp_path / "preds.json",
        decoding=Decoding(beam_size=3, length_penalty=0.5),
        batch_size=5,
    )
    payload = json.loads(out.read_text())
    assert payload["type"] == "scene_aware_dialog" and len(payload["dialogs"]) == 8
    assert all(d["dialog"][-1]["question"] == "what colour is it ?" for d in payload["dialogs"])
    meta = json.loads(meta_path(out).read_text())
    assert meta_path(out).name == "preds.meta.json"
    assert meta["format"] == "avsd" and meta["split"] == "test" and meta["output"] == "answers"
    assert meta["checkpoint"] == {"stage": "train", "step": 20}
    assert meta["decoding"] == {
        "search": "beam",
        "beam_size": 3,
        "length_penalty": 0.5,
        "max_length": 8,  # the run's max_answer_tokens
    }
    assert meta["batch_size"] == 5


def test_answers_do_not_depend_on_the_batch_size(avsd_run, tmp_path):
    one = predict(avsd_run, "test", out=tmp_path / "one.json", batch_size=1).read_text()
    many = predict(avsd_run, "test", out=tmp_path / "many.json", batch_size=64).read_text()
    assert one == many and len(json.loads(one)["dialogs"]) == 8


def test_cli_predict_options(avsd_run, tmp_path):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--run",
            str(avsd_run),
            "--split",
            "test",
            "--out",
            str(out),
            "--beam-size",
            "2",
            "--length-penalty",
            "0",
            "--max-length",
            "2",
            "--batch-size",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    tokenizer = load_tokenizer(avsd_run / "tokenizer")
    answers = [d["dialog"][-1]["answer"] for d in json.loads(out.read_text())["dialogs"]]
    # two tokens at most, <eos> included
    assert all(1 <= len(tokenizer.encode(a)) <= 2 for a in answers), answers
    meta = json.loads(meta_path(out).read_text())
    assert meta["decoding"]["max_length"] == 2 and meta["decoding"]["length_penalty"] == 0.0
    assert meta["batch_size"] == 3


def build_visdial_dataset(
    root, n_train: int = 8, n_val: int = 3, n_test: int = 3, *, shuffle: bool = False
) -> dict:
    """VisDial-shaped data over a toy store: 3 rounds per image, 100 options per round; test
    dialogs end at an unanswered round that alone carries options (as in VisDial v1.0).
    `shuffle`: the options hold every colour's answer, the ground truth at a random index, and
    val rounds carry dense relevances (1 for the truth, 0.5 for "it is" answers, 0 else)."""
    rng = np.random.default_rng(0)
    store = FeatureStore.open(root / "cache" / "vd", mode="w")
    feature = store.create_feature("toy", item_shape=(4, 8), spec={"name": "toy"})
    media, dialogs = [], []
    rounds = [("is it moving ?", "no ."), ("what colour is it ?", None), ("is it big ?", "yes .")]
    with feature.writer() as writer:
        for k in range(n_train + n_val + n_test):
            image_id = str(k + 1)
            split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            tokens = rng.normal(0, 0.1, (1, 4, 8)).astype(np.float32)
            tokens[..., k % 4] += 2.0
            writer.add(image_id, tokens)
            media.append({"id": image_id, "kind": "image", "split": split})
            for turn, (question, answer) in enumerate(rounds):
                answer = answer or f"it is {COLOURS[k % 4]} ."
                row = _dialog_row(image_id, split, turn, question, answer)
                others = [f"option {j}" for j in range(99)]
                if shuffle:
                    near = [f"it is {c} ." for c in COLOURS] + ["no .", "yes ."]
                    others = ([o for o in near if o != answer] + others)[:99]
                    gt = int(rng.integers(100))
                    row["answer_options"] = [*others[:gt], answer, *others[gt:]]
                    row["gt_index"] = gt
                    if split == "val":
                        row["relevance"] = [
                            1.0 if o == answer else 0.5 if o.startswith("it is") else 0.0
                            for o in row["answer_options"]
                        ]
                else:
                    row["answer_options"] = [answer, *others]
                    row["gt_index"] = 0
                if split == "test" and turn == 1:  # the scored round: options, no answer
                    row.update(answer=None, answers=[], gt_index=None)
                elif split == "test":
                    row.update(answer_options=None, gt_index=None)
                dialogs.append(row)
                if split == "test" and turn == 1:
                    break
    manifest = Manifest(
        name="vd",
        media=pa.Table.from_pylist(media, schema=MEDIA_SCHEMA),
        dialogs=pa.Table.from_pylist(dialogs, schema=DIALOG_SCHEMA),
    )
    manifest.write(root / "manifests" / "vd")
    return {"store": root / "cache" / "vd", "manifest": root / "manifests" / "vd"}


@pytest.fixture(scope="module")
def visdial_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("visdial")
    data = build_visdial_dataset(root)
    config = toy_config(data, frames=1, steps=20, checkpoint_every=20, history_turns=2)
    fit(config, root / "run", progress=False)
    return root / "run"


def test_visdial_val_answers_every_round(visdial_run, tmp_path):
    out = predict(visdial_run, "val", out=tmp_path / "answers.json")
    entries = json.loads(out.read_text())
    assert [(e["image_id"], e["round_id"]) for e in entries] == [
        (image, r) for image in (9, 10, 11) for r in (1, 2, 3)
    ]
    assert all(isinstance(e["answer"], str) for e in entries)
    assert json.loads(meta_path(out).read_text())["format"] == "visdial"


def test_visdial_history_uses_the_dataset_answers(visdial_run):
    trained = load_trained(visdial_run)
    asked = trained.data.part("toy", "val", mode="predict").samples.samples
    third = next(s for s in asked if s.dialog_id == "9" and s.turn == 2)
    assert third.answer is None  # withheld from the model
    assert context_text(third, 2, True) == [
        "a clip .",
        "is it moving ? no .",
        "what colour is it ? it is red .",
        "is it big ?",
    ]


def test_visdial_test_answers_the_scored_round_only(visdial_run, tmp_path):
    entries = json.loads(predict(visdial_run, "test", out=tmp_path / "t.json").read_text())
    assert [(e["image_id"], e["round_id"]) for e in entries] == [(12, 2), (13, 2), (14, 2)]


def _ranks(scored, manifest, split):
    from vdial.evaluate.visdial import ranks_from_scores

    dialogs = Manifest.read(manifest).dialogs.to_pylist()
    gt = {
        (int(r["dialog_id"]), r["turn"] + 1): r["gt_index"] for r in dialogs if r["split"] == split
    }
    ranks = ranks_from_scores(np.array([e["scores"] for e in scored]))
    return np.array([ranks[i, gt[(e["image_id"], e["round_id"])]] for i, e in enumerate(scored)])


def test_visdial_discriminative_scores_rank_the_truth_first(tmp_path):
    """Option scores for `vdial eval visdial --scores`: the colour round is answerable only
    from the image features, so the real model ranks its truth first and the zeroed one cannot
    (1/4 of them at best)."""
    data = build_visdial_dataset(tmp_path, n_train=16, n_val=8, n_test=2, shuffle=True)
    colour = {}
    for visual in ("real", "zero"):
        config = toy_config(
            data,
            steps=150,
            frames=1,
            history_turns=1,
            discriminative=True,
            visual=visual,
            stages=[{"name": "train", "steps": 150, "losses": {"options": 1.0, "response": 0.5}}],
        )
        run = tmp_path / visual
        fit(config, run, progress=False)
        out = predict(run, "val", out=tmp_path / f"{visual}.json")
        scored = json.loads(out.read_text())
        assert json.loads(meta_path(out).read_text())["output"] == "scores"
        assert len(scored) == 24 and all(len(e["scores"]) == 100 for e in scored)
        ranks = _ranks(scored, data["manifest"], "val")
        colour[visual] = float(np.mean(ranks[1::3] == 1))  # round 2 asks the colour
    assert colour["real"] >= 0.75 and colour["zero"] <= 0.5, colour
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--run",
            str(tmp_path / "real"),
            "--split",
            "val",
            "--output",
            "answers",
            "--out",
            str(tmp_path / "g.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert all(isinstance(e["answer"], str) for e in json.loads((tmp_path / "g.json").read_text()))


def test_dense_fine_tuning_raises_the_relevance_of_the_scores(tmp_path):
    """Dense fine-tuning (-sum relevance x log-softmax) on the rounds with dense annotations:
    the loss falls by a fifth in 40 steps, i.e. softmax mass moves onto relevant options."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = build_visdial_dataset(tmp_path, n_train=4, n_val=8, n_test=2, shuffle=True)
    stages = [{"name": "dense", "steps": 40, "losses": {"dense": 1.0}}]
    config = toy_config(data, frames=1, history_turns=0, discriminative=True, stages=stages)
    config = dataclasses.replace(
        config,
        datasets={"toy": dataclasses.replace(config.datasets["toy"], train_split="val")},
    )
    fit(config, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    dense = [e.value for e in events.Scalars("train/dense")]
    assert len(dense) == 4 and dense[-1] < 0.8 * dense[0]
