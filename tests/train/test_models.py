"""The contract every registered model family keeps, checked on each one from its `tiny()`.

Every family builds at a tiny size over a store of its declared inputs, one optimiser step on
a fixed batch lowers its loss, its weights round-trip bit-exactly through safetensors, it
answers (generates, or scores options), its processor pickles (DataLoader workers), and its
recipes in configs/ parse.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vdial.cache import FeatureStore
from vdial.manifests import Manifest
from vdial.train import checkpoint as ckpt
from vdial.train.config import load_recipe, model_config, resolve
from vdial.train.data import ProcessedDataset
from vdial.train.generate import Decoding
from vdial.train.models import MODELS
from vdial.train.run import RunData, build_model, make_tokenizer
from vdial.train.stages import apply_stage, set_modes

from .conftest import build_colour_dataset
from .test_predict import build_visdial_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CASES = [(name, kind) for name in MODELS.names() for kind in MODELS.get(name).tiny()["kinds"]]


def _write_features(store_path: Path, media_ids: list[str], features: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    store = FeatureStore.open(store_path, mode="a")
    for name, spec in features.items():
        kind, shape = spec["kind"], tuple(spec["shape"])
        extras = None
        if kind == "regions":
            extras = {
                "boxes": ((4,), "float32"),
                "class_id": ((), "int64"),
                "image_w": ((), "float32"),
                "image_h": ((), "float32"),
            }
        feature = store.create_feature(
            name, item_shape=shape, dtype="float32", spec={"name": name}, extras=extras
        )
        with feature.writer() as writer:
            for k, media_id in enumerate(media_ids):
                rows = 1 if kind == "text" else 4
                data = rng.normal(0, 0.1, (rows, *shape)).astype(np.float32)
                data[..., k % 4] += 2.0  # the toy's colour, as in its own feature
                more = {}
                if kind == "regions":
                    xy = rng.uniform(0, 50, (rows, 2)).astype(np.float32)
                    more = {
                        "boxes": np.concatenate([xy, xy + 40], 1),
                        "class_id": rng.integers(0, 10, rows),
                        "image_w": np.full(rows, 100.0, np.float32),
                        "image_h": np.full(rows, 100.0, np.float32),
                    }
                writer.add(media_id, data, **more)


def _recipe(family: str, kind: str, root: Path) -> dict:
    tiny = MODELS.get(family).tiny()
    data = build_colour_dataset(root) if kind == "avsd" else build_visdial_dataset(root)
    ids = Manifest.read(data["manifest"]).media["id"].to_pylist()
    _write_features(data["store"], ids, tiny["features"])
    return {
        "family": family,
        "datasets": {kind: {"features": str(data["store"]), "manifest": str(data["manifest"])}},
        "inputs": tiny["inputs"],
        "model": tiny["model"],
        "optim": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 0},
        "stages": [{"name": "train", "steps": 1}],
    }


def _setup(family: str, kind: str, root: Path):
    config = resolve(_recipe(family, kind, root), f"{family} tiny recipe")
    data = RunData(config, model_config(config))
    tokenizer = make_tokenizer(config, data, root / "tokenizer")
    model = build_model(config, data.shapes(), tokenizer, [kind])
    part = data.part(kind, "train")
    processor = MODELS.get(family).processor(model.config, tokenizer)
    dataset = ProcessedDataset([part], processor)
    batch = dataset.collate([dataset[(i, 7)] for i in range(4)])
    batch["seed"] = 11
    return config, data, tokenizer, model, dataset, batch


def _loss(model, batch, losses) -> float:
    with torch.no_grad():
        terms = model(batch, losses)
    return float(
        sum(losses[n] * terms[n].mean for n in losses if n in terms and float(terms[n].count))
    )


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_one_step_on_a_fixed_batch_lowers_the_loss(family, kind, tmp_path):
    torch.manual_seed(0)
    config, _, _, model, _, batch = _setup(family, kind, tmp_path)
    stage = config.stage_list()[0]
    losses = stage.losses or MODELS.get(family).default_losses(model.config)
    apply_stage(model, stage)
    model.eval()  # no dropout: the comparison is of the same function before and after
    before = _loss(model, batch, losses)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    terms = model(batch, losses)
    total = sum(losses[n] * terms[n].mean for n in losses if n in terms and float(terms[n].count))
    total.backward()
    optimizer.step()
    after = _loss(model, batch, losses)
    assert np.isfinite(before) and after < before, (before, after)
    set_modes(model)


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_weights_round_trip_bit_exactly(family, kind, tmp_path):
    config, data, tokenizer, model, _, batch = _setup(family, kind, tmp_path)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the seeded initialisation any more
    ckpt.save_weights(model, tmp_path / "w.safetensors")
    torch.manual_seed(123)
    other = build_model(
        dataclasses.replace(config, seed=config.seed + 1), data.shapes(), tokenizer, [kind]
    )
    ckpt.load_weights(other, tmp_path / "w.safetensors")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    model.eval(), other.eval()
    losses = MODELS.get(family).default_losses(model.config)
    assert _loss(model, batch, losses) == _loss(other, batch, losses)


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_answers_and_processor_pickles(family, kind, tmp_path):
    _, _, _, model, dataset, batch = _setup(family, kind, tmp_path)
    pickle.loads(pickle.dumps(dataset))  # what DataLoader workers receive
    model.eval()
    cls = MODELS.get(family)
    with torch.no_grad():
        if cls.generative:
            hyps = model.search(batch, Decoding(max_length=3))
            assert len(hyps) == 4 and all(len(h.tokens) <= 3 for h in hyps)
        if kind == "visdial" and cls.discriminative and model.config.discriminative:
            scores = model.score_options(batch)
            assert scores.shape == (4, 100) and torch.isfinite(scores).all()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_in_configs_parse(path):
    import yaml

    named = yaml.safe_load(path.read_text()).get("datasets")  # else the command line names one
    config = load_recipe(path, features=None if named else "cache/x")
    assert config.family in MODELS and config.stage_list()
