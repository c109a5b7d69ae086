"""`predict`: answer a split from a run directory, in the dataset's submission format.

* AVSD (the split's dialogs end at an unanswered question): the challenge's JSON, the
  split's dialogs (image_id, caption, summary, dialog) with each last answer filled in.
* VisDial, generated: `[{"image_id", "round_id" (1-based), "answer"}]`, one entry per round
  with options, for `vdial eval visdial --answers` (ranked against the options). History
  uses the dataset's own earlier answers, as the VisDial protocol does.
* VisDial, scored (families that score options): `[{"image_id", "round_id", "scores"}]` for
  `vdial eval visdial --scores`.

Beside the predictions, `<name>.meta.json` records the output kind, the decoding settings, the
checkpoint (stage and step) and the batch size. Decoding runs under
`torch.use_deterministic_algorithms`, so the same inputs give the same answers; under
torchrun the batches are shared out over the ranks and gathered on rank 0, which writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch

from vdial.manifests import Manifest
from vdial.train.data import ProcessedDataset
from vdial.train.distributed import Dist
from vdial.train.engine import to_device
from vdial.train.generate import Decoding
from vdial.train.models import MODELS
from vdial.train.run import RunError, Trained
from vdial.train.samples import Sample


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


def choose_dataset(trained: Trained, dataset: str | None) -> str:
    names = list(trained.config.datasets)
    if dataset is None:
        return names[0]
    if dataset not in names:
        raise RunError(f"--dataset {dataset!r}: the run's datasets are {', '.join(names)}")
    return dataset


def output_kind(trained: Trained, dataset: str, output: str | None) -> str:
    """ "answers" (AVSD, or generated VisDial answers) or "scores" (VisDial option scores)."""
    family = MODELS.get(trained.config.family)
    visdial = trained.data.kind(dataset) == "visdial"
    scores = (
        visdial and family.discriminative and getattr(trained.model.config, "discriminative", True)
    )
    if output is None:
        return "scores" if scores else "answers"
    if output == "scores" and not scores:
        raise RunError("--output scores needs a VisDial split and a model that scores options")
    if output == "answers" and not family.generative:
        raise RunError(f"the {trained.config.family} family does not generate answers")
    return output


def _batches(n: int, batch_size: int, dist: Dist) -> list[list[int]]:
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    return batches[dist.rank :: dist.world]


def run_predictions(
    trained: Trained,
    dataset: str,
    split: str,
    *,
    output: str,
    decoding: Decoding,
    batch_size: int = 64,
    dist: Dist | None = None,
) -> tuple[list[Sample], list[Any]]:
    """(the samples answered, an answer string or a score list per sample; None where the
    media failed extraction)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dist = dist or Dist()
    everything = trained.data.part(dataset, split, "turn", mode="predict")
    full = _all_samples(trained, dataset, split)
    family = MODELS.get(trained.config.family)
    processor = family.processor(trained.model.config, trained.tokenizer)
    data = ProcessedDataset([everything], processor)
    model = trained.model
    decoding = decoding.resolved(getattr(model.config, "max_answer_tokens", 20))
    found: dict[int, Any] = {}
    with deterministic(), torch.no_grad():
        for indices in _batches(len(data), batch_size, dist):
            batch = to_device(data.collate([data[i] for i in indices]), dist.device)
            if output == "scores":
                values = model.score_options(batch).float().cpu().tolist()
            else:
                values = [trained.tokenizer.decode(h.tokens) for h in model.search(batch, decoding)]
            found.update(zip(indices, values, strict=True))
    merged: dict[int, Any] = {}
    for part in dist.gather_objects(found):
        merged.update(part)
    by_key = {(s.dialog_id, s.turn): merged[k] for k, s in enumerate(everything.samples.samples)}
    return full, [by_key.get((s.dialog_id, s.turn)) for s in full]


def _all_samples(trained: Trained, dataset: str, split: str) -> list[Sample]:
    """Every sample to answer, those of failed media included (answered with nothing)."""
    from vdial.train.samples import build_samples

    dialogs = trained.data.manifests[dataset].dialogs
    return build_samples(dialogs, split, dataset=dataset, mode="predict").samples


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


def _image_id(dialog_id: str) -> int | str:
    # VisDial image ids are integers; the manifest keeps them as strings
    return int(dialog_id) if dialog_id.isdigit() else dialog_id


def payload(
    trained: Trained,
    dataset: str,
    split: str,
    samples: list[Sample],
    values: list[Any],
    output: str,
) -> Any:
    """Predictions in the dataset's submission format."""
    if trained.data.kind(dataset) == "avsd":
        answers = {s.dialog_id: v or "" for s, v in zip(samples, values, strict=True)}
        return challenge_json(trained.data.manifests[dataset], split, answers)
    if output == "scores":  # failed media are left out: the metrics count them as missing
        return [
            {"image_id": _image_id(s.dialog_id), "round_id": s.turn + 1, "scores": v}
            for s, v in zip(samples, values, strict=True)
            if v is not None
        ]
    return [
        {"image_id": _image_id(s.dialog_id), "round_id": s.turn + 1, "answer": v or ""}
        for s, v in zip(samples, values, strict=True)
    ]


def meta_path(predictions: str | Path) -> Path:
    """Where the settings of a predictions file are recorded."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + ".meta.json")


def predict(
    run_dir: str | Path,
    split: str = "test",
    *,
    out: str | Path | None = None,
    decoding: Decoding | None = None,
    batch_size: int = 64,
    dataset: str | None = None,
    output: str | None = None,
    trained: Trained | None = None,
) -> Path:
    """Answer `split` of a dataset of the run, write the predictions and their .meta.json."""
    from vdial.train.run import load_trained

    dist = Dist.from_env("cpu")
    trained = trained or load_trained(run_dir)
    name = choose_dataset(trained, dataset)
    kind = output_kind(trained, name, output)
    decoding = decoding or Decoding()
    samples, values = run_predictions(
        trained, name, split, output=kind, decoding=decoding, batch_size=batch_size, dist=dist
    )
    if not samples:
        raise RunError(f"split {split!r} of dataset {name!r} has no questions to answer")
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / f"predictions_{split}.json"
    if dist.main:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload(trained, name, split, samples, values, kind), indent=1))
        meta = {
            "run": str(run_dir),
            "dataset": name,
            "split": split,
            "format": trained.data.kind(name),
            "output": kind,
            "checkpoint": {"stage": trained.stage, "step": trained.step},
            "decoding": decoding.resolved(
                getattr(trained.model.config, "max_answer_tokens", 20)
            ).to_dict()
            if kind == "answers"
            else None,
            "batch_size": batch_size,
        }
        meta_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return out
