"""`predict`: AVSD challenge JSON and VisDial generated answers, decoding options, sidecar."""

from __future__ import annotations

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
from vdial.train.predict import (
    generate_answers,
    load_predictor,
    meta_path,
    predict,
    turns_to_answer,
)
from vdial.train.tokenizer import Tokenizer

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
    assert meta["format"] == "avsd" and meta["split"] == "test" and meta["checkpoint_step"] == 20
    assert meta["decoding"] == {
        "search": "beam",
        "beam_size": 3,
        "length_penalty": 0.5,
        "max_length": 8,  # the run's max_answer_tokens
    }
    assert meta["batch_size"] == 5


def test_answers_do_not_depend_on_the_batch_size(avsd_run):
    one = generate_answers(avsd_run, "test", batch_size=1)
    many = generate_answers(avsd_run, "test", batch_size=64)
    assert one == many and len(one) == 8


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
    tokenizer = Tokenizer.load(avsd_run / "tokenizer.json")
    answers = [d["dialog"][-1]["answer"] for d in json.loads(out.read_text())["dialogs"]]
    # two tokens at most, <eos> included
    assert all(1 <= len(tokenizer.encode(a)) <= 2 for a in answers), answers
    meta = json.loads(meta_path(out).read_text())
    assert meta["decoding"]["max_length"] == 2 and meta["decoding"]["length_penalty"] == 0.0
    assert meta["batch_size"] == 3


def build_visdial_dataset(root, n_train: int = 8, n_val: int = 3, n_test: int = 3) -> dict:
    """VisDial-shaped data over a toy store: 3 rounds per image, 100 options per round; test
    dialogs end at an unanswered round that alone carries options (as in VisDial v1.0)."""
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
                row["answer_options"] = [answer] + [f"option {j}" for j in range(99)]
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
    predictor = load_predictor(visdial_run)
    turns = turns_to_answer(predictor.manifest, "val", predictor.config)
    third = next(t for t in turns if t.dialog_id == "9" and t.turn == 2)
    assert third.answer is None  # withheld from the model
    assert third.context == (
        "a clip . <sep> is it moving ? no . <sep> what colour is it ? it is red . <sep> is it big ?"
    )


def test_visdial_test_answers_the_scored_round_only(visdial_run, tmp_path):
    entries = json.loads(predict(visdial_run, "test", out=tmp_path / "t.json").read_text())
    assert [(e["image_id"], e["round_id"]) for e in entries] == [(12, 2), (13, 2), (14, 2)]
