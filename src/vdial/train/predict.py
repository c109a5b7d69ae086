"""`predict`: answer the unanswered last turn of every dialog of a split, from a run directory.

Writes the AVSD challenge's submission format: the split's dialogs (image_id, caption, summary,
dialog) with the last turn's answer filled in, as `<run>/predictions_<split>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import torch

from vdial.cache import FeatureReader, FeatureStore
from vdial.config import load_config
from vdial.manifests import Manifest
from vdial.train.config import TrainConfig
from vdial.train.data import DialogDataset, collate, dialog_turns
from vdial.train.loop import build_model, manifest_dir
from vdial.train.tokenizer import Tokenizer


def generate_answers(run_dir: str | Path, split: str, *, batch_size: int = 64) -> dict[str, str]:
    """dialog_id -> generated answer for the split's unanswered last turns."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(
            f"{run_dir} has no checkpoint (expected {checkpoint}); train it first"
        )
    config = load_config(TrainConfig, run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    manifest = Manifest.read(manifest_dir(config))
    feature = FeatureStore.open(config.features, mode="r")[config.feature]
    model = build_model(config, feature, tokenizer)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
    model.to(config.device).eval()
    # Videos whose extraction failed have no features: their answers stay empty, which the
    # metrics score as wrong rather than dropping the dialog.
    failed = set(feature.failures)
    turns = [
        t
        for t in dialog_turns(manifest.dialogs, split, config, scored=True)
        if t.media_id not in failed
    ]
    if not turns:
        raise ValueError(f"split {split!r} of {manifest_dir(config)} has no unanswered last turns")
    dataset = DialogDataset(
        turns, FeatureReader(config.features, config.feature), tokenizer, config
    )
    answers: dict[str, str] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate(
            [dataset[i] for i in range(start, min(len(dataset), start + batch_size))],
            tokenizer.pad_id,
        )
        out = model.generate(
            batch["visual"].to(config.device),
            batch["input_ids"].to(config.device),
            batch["context_lengths"].to(config.device),
            config.max_answer_tokens,
        )
        for index, ids in zip(batch["index"].tolist(), out, strict=True):
            answers[turns[index].dialog_id] = tokenizer.decode(ids)
    return answers


def challenge_json(manifest: Manifest, split: str, answers: dict[str, str]) -> dict:
    """The split's dialogs in the AVSD format with the predicted answers filled in."""
    rows = manifest.dialogs.filter(pc.equal(manifest.dialogs["split"], split)).to_pylist()
    dialogs: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["dialog_id"], r["turn"])):
        entry = dialogs.setdefault(
            row["dialog_id"],
            {
                "image_id": row["media_id"],
                "caption": row["caption"] or "",
                "summary": row["summary"] or "",
                "dialog": [],
            },
        )
        answer = row["answer"]
        if answer is None:
            answer = answers.get(row["dialog_id"], "")
        entry["dialog"].append({"question": row["question"], "answer": answer})
    return {"type": "scene_aware_dialog", "version": "0.1", "dialogs": list(dialogs.values())}


def predict(run_dir: str | Path, split: str = "test", *, out: str | Path | None = None) -> Path:
    """Generate answers for `split` and write them in the challenge format."""
    run_dir = Path(run_dir)
    answers = generate_answers(run_dir, split)
    config = load_config(TrainConfig, run_dir / "config.yaml")
    payload = challenge_json(Manifest.read(manifest_dir(config)), split, answers)
    out = Path(out) if out else run_dir / f"predictions_{split}.json"
    out.write_text(json.dumps(payload, indent=1))
    return out
