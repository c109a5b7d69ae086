"""A tiny dataset built in the test: a manifest whose answers depend only on stored features.

Each video's features encode a colour in one of four feature dimensions (plus noise), and every
dialog asks "what colour is it ?": a model can answer only from the visual tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vdial.cache import FeatureStore
from vdial.manifests import DIALOG_SCHEMA, MEDIA_SCHEMA, Manifest

COLOURS = ["red", "green", "blue", "yellow"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny models gain nothing from a second thread, and on a busy machine OpenMP's
    waiting threads make them several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dialog_row(vid, split, turn, question, answer, caption="a clip ."):
    return {
        "dialog_id": vid,
        "media_id": vid,
        "split": split,
        "turn": turn,
        "question": question,
        "answer": answer,
        "answers": [answer] if answer else [],
        "caption": caption,
        "summary": None,
        "reason": None,
        "answer_options": None,
        "gt_index": None,
        "relevance": None,
        "source": f"test.json#{vid}[{turn}]",
    }


def build_colour_dataset(root: Path, n_train: int = 24, n_test: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    media, dialogs, colour_of = [], [], {}
    store = FeatureStore.open(root / "cache" / "toy", mode="w")
    feature = store.create_feature("toy", item_shape=(4, 8), spec={"name": "toy"})
    with feature.writer(segment_items=16) as writer:
        for k in range(n_train + n_test):
            vid = f"v{k:03d}"
            split = "train" if k < n_train else "test"
            colour = k % 4
            colour_of[vid] = COLOURS[colour]
            tokens = rng.normal(0, 0.1, (4, 4, 8)).astype(np.float32)  # 4 frames x 4 tokens
            tokens[..., colour] += 2.0
            writer.add(vid, tokens)
            media.append(
                {
                    "id": vid,
                    "path": None,
                    "kind": "video",
                    "split": split,
                    "duration": None,
                    "fps": None,
                    "width": None,
                    "height": None,
                }
            )
            dialogs.append(_dialog_row(vid, split, 0, "is it moving ?", "yes it is ."))
            answer = f"it is {COLOURS[colour]} ." if split == "train" else None
            dialogs.append(_dialog_row(vid, split, 1, "what colour is it ?", answer))
    manifest = Manifest(
        name="toy",
        media=pa.Table.from_pylist(media, schema=MEDIA_SCHEMA),
        dialogs=pa.Table.from_pylist(dialogs, schema=DIALOG_SCHEMA),
    )
    manifest.write(root / "manifests" / "toy")
    return {
        "store": root / "cache" / "toy",
        "manifest": root / "manifests" / "toy",
        "colour_of": colour_of,
    }


@pytest.fixture
def toy(tmp_path) -> dict:
    return build_colour_dataset(tmp_path)


MODEL_KEYS = {
    "frames",
    "history_turns",
    "use_caption",
    "max_context_tokens",
    "max_answer_tokens",
    "discriminative",
    "visual_input",
    "max_regions",
    "projector",
    "max_option_tokens",
}
LM_KEYS = {
    "source",
    "arch",
    "path",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "dropout",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "dtype",
}
OPTIM_KEYS = {"lr", "batch_size", "warmup_steps", "schedule", "weight_decay", "grad_clip"}


def toy_recipe(data: dict, steps: int = 200, feature: str = "toy", **keys) -> dict:
    """A prefix-lm recipe mapping over a test store; flat keys go where they belong (the
    model block, its lm block, optim, or the top level)."""
    recipe = {
        "family": "prefix-lm",
        "datasets": {
            "toy": {
                "features": str(data["store"]),
                "manifest": str(data["manifest"]),
                "val_split": keys.pop("val_split", None),
            }
        },
        "inputs": {"visual": [feature]},
        "model": {"frames": 4, "max_context_tokens": 32, "max_answer_tokens": 8, "lm": {}},
        "optim": {"batch_size": 8, "lr": 3e-3, "warmup_steps": 10},
        "stages": [{"name": "train", "steps": steps}],
        "eval_every": 50,
        "checkpoint_every": 50,
        "log_every": 10,
    }
    recipe["model"]["lm"].update(d_model=32, n_layers=2, n_heads=2, dropout=0.0)
    for key, value in keys.items():
        if key in MODEL_KEYS:
            recipe["model"][key] = value
        elif key in LM_KEYS:
            recipe["model"]["lm"][key] = value
        elif key in OPTIM_KEYS:
            recipe["optim"][key] = value
        else:
            recipe[key] = value
    return recipe


def toy_config(data: dict, steps: int = 200, **keys):
    """`toy_recipe` resolved into a TrainConfig."""
    from vdial.train.config import resolve

    return resolve(toy_recipe(data, steps, **keys), "test recipe")
