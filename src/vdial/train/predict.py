"""`predict`: answer the questions of a split from a run directory, in the dataset's format.

* AVSD (the split's dialogs end at an unanswered question): the challenge's submission JSON,
  the split's dialogs (image_id, caption, summary, dialog) with each last answer filled in.
* VisDial (the split's rounds carry 100 answer options): the generated-answers list
  `[{"image_id", "round_id" (1-based), "answer"}]`, one entry per round with options, which
  `vdial eval visdial --answers` ranks against the options. History uses the dataset's own
  answers of earlier rounds, as the VisDial protocol does.

Beside the predictions, `<name>.meta.json` records the decoding settings, the checkpoint step
and the batch size, so a number can always be traced to how it was decoded. Decoding runs
under `torch.use_deterministic_algorithms`, so the same inputs give the same answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch

from vdial.cache import FeatureReader, FeatureStore
from vdial.config import load_config
from vdial.manifests import Manifest
from vdial.train.config import TrainConfig
from vdial.train.data import DialogDataset, Turn, collate, dialog_turns
from vdial.train.generate import Decoding
from vdial.train.loop import build_model, manifest_dir
from vdial.train.tokenizer import Tokenizer


@dataclass
class Predictor:
    """A run's model with everything needed to answer turns of its manifest."""

    config: TrainConfig
    tokenizer: Tokenizer
    manifest: Manifest
    feature: Any  # vdial.cache.Feature the run trained on
    model: torch.nn.Module
    step: int  # the checkpoint's optimiser step


def load_predictor(run_dir: str | Path, *, config: TrainConfig | None = None) -> Predictor:
    """The run's last checkpoint on its config's device; `config` overrides <run>/config.yaml
    (the gate uses it to point a run at its own copy of the store and manifest)."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(
            f"{run_dir} has no checkpoint (expected {checkpoint}); train it first"
        )
    config = config or load_config(TrainConfig, run_dir / "config.yaml")
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    manifest = Manifest.read(manifest_dir(config))
    feature = FeatureStore.open(config.features, mode="r")[config.feature]
    model = build_model(config, feature, tokenizer)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    model.to(config.device).eval()
    return Predictor(config, tokenizer, manifest, feature, model, int(state.get("step", 0)))


def dataset_kind(manifest: Manifest, split: str) -> str:
    """ "visdial" when the split's rounds have answer options, else "avsd"."""
    rows = manifest.dialogs.filter(pc.equal(manifest.dialogs["split"], split))
    if rows.num_rows == 0:
        raise ValueError(f"manifest {manifest.name!r} has no dialogs in split {split!r}")
    return "visdial" if rows["answer_options"].null_count < rows.num_rows else "avsd"


def turns_to_answer(manifest: Manifest, split: str, config: TrainConfig) -> list[Turn]:
    """AVSD: the unanswered last turns. VisDial: every round with options, answers withheld."""
    if dataset_kind(manifest, split) == "avsd":
        return dialog_turns(manifest.dialogs, split, config, scored=True)
    rows = manifest.dialogs.filter(pc.equal(manifest.dialogs["split"], split))
    rows = rows.filter(pc.invert(pc.is_null(rows["answer_options"])))
    wanted = set(zip(rows["dialog_id"].to_pylist(), rows["turn"].to_pylist(), strict=True))
    order = {d: k for k, d in enumerate(dict.fromkeys(rows["dialog_id"].to_pylist()))}
    turns = dialog_turns(manifest.dialogs, split, config, scored=False)
    turns += dialog_turns(manifest.dialogs, split, config, scored=True)
    return sorted(
        (dataclasses.replace(t, answer=None) for t in turns if (t.dialog_id, t.turn) in wanted),
        key=lambda t: (order[t.dialog_id], t.turn),  # the manifest's dialog order
    )


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic torch kernels inside the block; the previous setting is restored.

    warn_only: on CUDA, cuBLAS is deterministic only with CUBLAS_WORKSPACE_CONFIG set, and an
    unset variable should cost a warning, not the predictions.
    """
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def answer_turns(
    predictor: Predictor, turns: list[Turn], decoding: Decoding, *, batch_size: int = 64
) -> list[str]:
    """The decoded answer of each turn, in order (turns whose video failed: empty)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    config, tokenizer = predictor.config, predictor.tokenizer
    decoding = decoding.resolved(config.max_answer_tokens)
    # Videos whose extraction failed have no features: their answers stay empty, which the
    # metrics score as wrong rather than dropping the dialog.
    failed = set(predictor.feature.failures)
    todo = [k for k, t in enumerate(turns) if t.media_id not in failed]
    dataset = DialogDataset(
        [turns[k] for k in todo], FeatureReader(config.features, config.feature), tokenizer, config
    )
    answers = [""] * len(turns)
    with deterministic(), torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate(
                [dataset[i] for i in range(start, min(len(dataset), start + batch_size))],
                tokenizer.pad_id,
            )
            generated = predictor.model.generate(
                batch["visual"].to(config.device),
                batch["input_ids"].to(config.device),
                batch["context_lengths"].to(config.device),
                decoding.max_length,
                beam_size=decoding.beam_size,
                length_penalty=decoding.length_penalty,
            )
            for index, ids in zip(batch["index"].tolist(), generated, strict=True):
                answers[todo[index]] = tokenizer.decode(ids)
    return answers


def generate_answers(
    run_dir: str | Path,
    split: str,
    *,
    decoding: Decoding | None = None,
    batch_size: int = 64,
    config: TrainConfig | None = None,
) -> dict[str, str]:
    """dialog_id -> generated answer for the split's unanswered last turns (AVSD)."""
    predictor = load_predictor(run_dir, config=config)
    turns = dialog_turns(predictor.manifest.dialogs, split, predictor.config, scored=True)
    if not turns:
        raise ValueError(
            f"split {split!r} of {manifest_dir(predictor.config)} has no unanswered last turns"
        )
    answers = answer_turns(predictor, turns, decoding or Decoding(), batch_size=batch_size)
    return {t.dialog_id: a for t, a in zip(turns, answers, strict=True)}


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


def visdial_answers(turns: list[Turn], answers: list[str]) -> list[dict[str, Any]]:
    """The generated-answers list `vdial eval visdial --answers` reads (round_id 1-based)."""
    return [
        {
            # VisDial image ids are integers; the manifest keeps them as strings
            "image_id": int(t.dialog_id) if t.dialog_id.isdigit() else t.dialog_id,
            "round_id": t.turn + 1,
            "answer": a,
        }
        for t, a in zip(turns, answers, strict=True)
    ]


def predictions_payload(
    predictor: Predictor, split: str, decoding: Decoding, *, batch_size: int = 64
) -> tuple[str, Any]:
    """(dataset kind, predictions in that dataset's format) for `split`."""
    kind = dataset_kind(predictor.manifest, split)
    turns = turns_to_answer(predictor.manifest, split, predictor.config)
    if not turns:
        raise ValueError(
            f"split {split!r} of {manifest_dir(predictor.config)} has no questions to answer"
        )
    answers = answer_turns(predictor, turns, decoding, batch_size=batch_size)
    if kind == "visdial":
        return kind, visdial_answers(turns, answers)
    by_dialog = {t.dialog_id: a for t, a in zip(turns, answers, strict=True)}
    return kind, challenge_json(predictor.manifest, split, by_dialog)


def meta_path(predictions: str | Path) -> Path:
    """Where the decoding settings of a predictions file are recorded."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".meta.json")


def predict(
    run_dir: str | Path,
    split: str = "test",
    *,
    out: str | Path | None = None,
    decoding: Decoding | None = None,
    batch_size: int = 64,
    config: TrainConfig | None = None,
) -> Path:
    """Answer `split`, write the predictions and their `.meta.json` sidecar; returns the path."""
    run_dir = Path(run_dir)
    decoding = decoding or Decoding()
    predictor = load_predictor(run_dir, config=config)
    kind, payload = predictions_payload(predictor, split, decoding, batch_size=batch_size)
    out = Path(out) if out else run_dir / f"predictions_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    meta = {
        "run": str(run_dir),
        "split": split,
        "format": kind,
        "checkpoint_step": predictor.step,
        "decoding": decoding.resolved(predictor.config.max_answer_tokens).to_dict(),
        "batch_size": batch_size,
    }
    meta_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return out
