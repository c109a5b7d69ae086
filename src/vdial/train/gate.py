"""The re-evaluation gate: a run's predictions and metrics, recorded once, re-computed exactly.

`record_gate(run, out)` writes a self-contained directory that re-evaluates the run without
anything outside it (paths inside are relative, so it works from any clone):

    gate.json                  the split, decoding, scorer and the sha256 of every input
    run/config.yaml            the run's recipe, its dataset pointed at store/ and manifest/
    run/tokenizer/, run/checkpoints/   the tokenizer and the weights (no optimiser state)
    store/                     a FeatureStore (written by vdial) with the split's items of
                               every feature the run reads
    manifest/                  the split's media and dialogs
    references.json, question_types.json          AVSD references of those dialogs
    expected/predictions.json, expected/metrics.json

`check_gate(dir)` loads the store, predicts and scores again, and compares with `expected/`
exactly: every answer string and every metric value. Scoring is the in-process ("fast")
scorer, so no Java is needed and the numbers do not depend on the machine. Prediction runs on
the CPU, on one thread, with deterministic kernels; the answers are discrete, so float
differences between CPUs change them only at exact ties. A failure names what changed: the
inputs (e.g. the checkpoint's digest), the answers that differ, and the metrics that moved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from vdial.cache import FeatureStore
from vdial.manifests import Manifest
from vdial.train import checkpoint as ckpt
from vdial.train.config import TrainConfig, read_run_config, save_recipe
from vdial.train.generate import Decoding
from vdial.train.models import MODELS
from vdial.train.predict import output_kind, payload, run_predictions
from vdial.train.run import RunError, Trained, load_trained
from vdial.train.tokenizer import WORD_FILE

FORMAT = "vdial-gate/2"
GATE_STAGE = "gate"  # the gate's weights: checkpoints/gate/step-000000/model.safetensors
GATE_WEIGHTS = f"{GATE_STAGE}/{ckpt.checkpoint_name(0)}/{ckpt.WEIGHTS}"
SCORER = "fast"
# Inputs whose digests are recorded: a changed one is named in a failure.
INPUTS = {
    "checkpoint": f"run/checkpoints/{GATE_WEIGHTS}",
    "config": "run/config.yaml",
    "tokenizer": f"run/tokenizer/{WORD_FILE}",
    "manifest": "manifest/dialogs.parquet",
    "media": "manifest/media.parquet",
    "references": "references.json",
    "question_types": "question_types.json",
}


class GateError(RuntimeError):
    """The gate's re-evaluation differs from what was recorded (the message says how)."""


@dataclass(frozen=True)
class GateResult:
    path: Path  # the gate directory
    dataset: str  # "avsd" or "visdial"
    answers: int  # answers compared
    metrics: dict[str, Any] | None  # the re-computed metrics (AVSD)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # Reductions may be split differently with more threads; one thread fixes the order.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gate_dir(path: str | Path) -> Path:
    """`path` itself when it holds gate.json, else `path/gate` (a run's own gate)."""
    path = Path(path)
    for candidate in (path, path / "gate"):
        if (candidate / "gate.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no gate at {path} (no gate.json there or in {path / 'gate'}); record one with "
        f"`vdial-train gate record RUN --references REFERENCES.json`"
    )


def _copy_feature(source, store: FeatureStore, media_ids: list[str]) -> None:
    """The items of `media_ids` (and their recorded failures) into a new store."""
    target = store.create_feature(
        source.name,
        item_shape=source.item_shape,
        dtype=source.dtype.name,
        spec=source.spec,
        extras={name: (shape, dtype.name) for name, (shape, dtype) in source.extras.items()},
        lineage=source.lineage,
    )
    failures = source.failures
    with target.writer(segment_items=max(1, len(media_ids))) as writer:
        for media_id in media_ids:
            if media_id in failures:
                writer.fail(media_id, failures[media_id]["stage"], failures[media_id]["message"])
                continue
            item = source.item(media_id)
            writer.add(media_id, item.pop("data"), **item)


def _subset_references(path: Path, dialog_ids: set[str]) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    kept = [d for d in data["dialogs"] if d["image_id"] in dialog_ids]
    absent = sorted(dialog_ids - {d["image_id"] for d in kept})
    if absent:
        raise ValueError(f"{path} has no references for {len(absent)} dialog(s), e.g. {absent[:5]}")
    return {**data, "dialogs": kept}


def _gate_config(directory: Path) -> TrainConfig:
    """The gate run's config with its store and manifest resolved inside `directory`."""
    config = read_run_config(directory / "run" / "config.yaml")
    datasets = {
        name: dataclasses.replace(
            ds, features=str(directory / ds.features), manifest=str(directory / ds.manifest)
        )
        for name, ds in config.datasets.items()
    }
    return dataclasses.replace(config, datasets=datasets, device="cpu")


def _evaluate(directory: Path, meta: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """(predictions, metrics or None) of the gate in `directory`, computed afresh."""
    decoding = Decoding(**{k: v for k, v in meta["decoding"].items() if k != "search"})
    with _one_thread():
        trained = load_trained(directory / "run", config=_gate_config(directory))
        name = next(iter(trained.config.datasets))
        kind = output_kind(trained, name, "answers")
        samples, values = run_predictions(
            trained,
            name,
            meta["split"],
            output=kind,
            decoding=decoding,
            batch_size=meta["batch_size"],
        )
        predictions = payload(trained, name, meta["split"], samples, values, kind)
    if meta["dataset"] != "avsd" or not (directory / "references.json").is_file():
        return predictions, None
    from vdial.evaluate.avsd import evaluate_avsd, load_question_types, load_references
    from vdial.evaluate.coco import make_scorer

    references = load_references(directory / "references.json")
    types_path = directory / "question_types.json"
    types = load_question_types(types_path) if types_path.is_file() else None
    answers = {d["image_id"]: d["dialog"][-1]["answer"] for d in predictions["dialogs"]}
    metrics = evaluate_avsd(answers, references, question_types=types, scorer=make_scorer(SCORER))
    # The note on why METEOR is missing says whether this machine has Java: not a result.
    metrics.pop("meteor", None)
    # compared after a JSON round trip, as they are stored
    return predictions, json.loads(json.dumps(metrics))


def _digests(directory: Path) -> dict[str, str]:
    digests = {
        name: _sha256(directory / rel) for name, rel in INPUTS.items() if (directory / rel).exists()
    }
    config = read_run_config(directory / "run" / "config.yaml")
    (name,) = config.datasets
    store = FeatureStore.open(directory / config.datasets[name].features, mode="r")
    for feature in sorted({f for fs in config.dataset_inputs(name).values() for f in fs}):
        digests[f"features:{feature}"] = store[feature].content_digest()
    return digests


def _selected(trained: Trained, name: str, split: str, dialogs: int | None):
    """(manifest, kept dialog ids, their dialog rows, their media rows without paths)."""
    manifest = trained.data.manifests[name]
    asked = trained.data.part(name, split, "turn", mode="predict").samples.samples
    keep = sorted({s.dialog_id for s in asked})[:dialogs]
    if not keep:
        raise ValueError(f"split {split!r} of {manifest.name!r} has no questions to answer")
    dialog_rows = manifest.dialogs.filter(
        pc.and_(
            pc.equal(manifest.dialogs["split"], split),
            pc.is_in(manifest.dialogs["dialog_id"], value_set=pa.array(keep)),
        )
    )
    media_ids = sorted(set(dialog_rows["media_id"].to_pylist()))
    media_rows = manifest.media.filter(
        pc.is_in(manifest.media["id"], value_set=pa.array(media_ids))
    )
    # the gate never reads media files: their (absolute, machine-specific) paths are dropped
    media_rows = media_rows.set_column(
        media_rows.schema.get_field_index("path"),
        media_rows.schema.field("path"),
        pa.nulls(media_rows.num_rows, pa.string()),
    )
    return manifest, keep, dialog_rows, media_rows


def record_gate(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    split: str = "test",
    references: str | Path | None = None,
    question_types: str | Path | None = None,
    dialogs: int | None = None,
    decoding: Decoding | None = None,
    batch_size: int = 64,
) -> GateResult:
    """Copy what `run_dir` needs to answer `split` into `out` (default <run>/gate), predict,
    score (AVSD, with `references`) and record the results as the gate's expected outputs.

    `dialogs` keeps the first N dialogs of the split (by id), to make a small fixture.
    An existing gate at `out` is replaced; any other non-empty directory is refused. Runs of
    one dataset whose language model is built from the recipe (not a pretrained folder, which
    the gate cannot hold) are gated.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "gate"
    if dialogs is not None and dialogs < 1:
        raise ValueError(f"dialogs must be at least 1, got {dialogs}")
    if out.exists() and any(out.iterdir()):
        if not (out / "gate.json").is_file():
            raise FileExistsError(f"{out} is not empty and holds no gate; choose another --out")
        shutil.rmtree(out)
    trained = load_trained(run_dir)
    config = trained.config
    if len(config.datasets) != 1:
        raise RunError(f"{run_dir} trains on {len(config.datasets)} datasets; the gate holds one")
    lm = MODELS.get(config.family).lm_config(trained.model.config)
    if lm is not None and lm.pretrained:
        raise RunError(f"{run_dir} uses the pretrained model {lm.path}; the gate cannot hold it")
    (name,) = config.datasets
    kind = trained.data.kind(name)
    if kind != "avsd" and references is not None:
        raise ValueError("the gate scores AVSD only; a VisDial gate compares the answers alone")
    manifest, keep, dialog_rows, media_rows = _selected(trained, name, split, dialogs)
    media_ids = media_rows["id"].to_pylist()

    out.mkdir(parents=True, exist_ok=True)
    source = FeatureStore.open(config.datasets[name].features, mode="r")
    store = FeatureStore.open(out / "store", mode="w")
    for feature in sorted({f for fs in config.dataset_inputs(name).values() for f in fs}):
        _copy_feature(source[feature], store, media_ids)
    Manifest(name=manifest.name, media=media_rows, dialogs=dialog_rows).write(out / "manifest")
    (out / "run").mkdir()
    gated = dataclasses.replace(
        config.datasets[name], features="store", manifest="manifest", val_split=None
    )
    save_recipe(
        dataclasses.replace(config, datasets={name: gated}, device="cpu"),
        out / "run" / "config.yaml",
    )
    shutil.copytree(run_dir / "tokenizer", out / "run" / "tokenizer")
    # weights only: the optimiser state would triple the size and is never read here
    weights = out / "run" / "checkpoints" / GATE_WEIGHTS
    weights.parent.mkdir(parents=True)
    ckpt.save_weights(trained.model, weights)
    ckpt.write_latest(out / "run" / "checkpoints", GATE_STAGE, 0, weights.parent)
    if references is not None:
        subset = _subset_references(Path(references), set(keep))
        (out / "references.json").write_text(json.dumps(subset, indent=1) + "\n")
    if question_types is not None:
        types = json.loads(Path(question_types).read_text(encoding="utf-8"))
        (out / "question_types.json").write_text(
            json.dumps({k: types[k] for k in keep if k in types}, indent=1) + "\n"
        )

    max_answer = getattr(trained.model.config, "max_answer_tokens", 20)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "dataset": kind,
        "split": split,
        "dialogs": len(keep),
        "decoding": (decoding or Decoding()).resolved(max_answer).to_dict(),
        "batch_size": batch_size,
        "scorer": SCORER if references is not None else None,
        "source": {
            "run": str(run_dir),
            "checkpoint": {"stage": trained.stage, "step": trained.step},
            "features": config.datasets[name].features,
            "inputs": {r: list(f) for r, f in config.dataset_inputs(name).items()},
        },
    }
    predictions, metrics = _evaluate(out, meta)
    (out / "expected").mkdir()
    (out / "expected" / "predictions.json").write_text(json.dumps(predictions, indent=1) + "\n")
    if metrics is not None:
        (out / "expected" / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    meta["inputs"] = _digests(out)
    (out / "gate.json").write_text(json.dumps(meta, indent=2) + "\n")
    return GateResult(out, kind, _count(predictions), metrics)


def _answers(predictions: Any) -> dict[str, str]:
    """A predictions payload as {key: answer} (AVSD: dialog id; VisDial: image_id#round)."""
    if isinstance(predictions, list):
        return {f"{p['image_id']}#{p['round_id']}": p["answer"] for p in predictions}
    return {d["image_id"]: d["dialog"][-1]["answer"] for d in predictions["dialogs"]}


def _count(predictions: Any) -> int:
    return len(_answers(predictions))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _diff_answers(expected: Any, actual: Any) -> list[str]:
    want, got = _answers(expected), _answers(actual)
    keys = sorted(set(want) | set(got))
    differ = [k for k in keys if want.get(k) != got.get(k)]
    if not differ:
        return [] if expected == actual else ["predictions: the file differs outside the answers"]
    examples = "; ".join(f"{k}: expected {want.get(k)!r}, got {got.get(k)!r}" for k in differ[:3])
    return [f"predictions: {len(differ)} of {len(keys)} answers differ ({examples})"]


def _diff_metrics(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    want, got = _flatten(expected), _flatten(actual)
    moved = [k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    if not moved:
        return []
    shown = "; ".join(f"{k} expected {want.get(k)!r}, got {got.get(k)!r}" for k in moved[:6])
    more = f" and {len(moved) - 6} more" if len(moved) > 6 else ""
    return [f"metrics: {len(moved)} value(s) differ ({shown}{more})"]


def check_gate(path: str | Path) -> GateResult:
    """Re-evaluate the gate at `path` (a gate directory, or a run with one in gate/) and
    raise GateError naming every difference from what was recorded."""
    directory = gate_dir(path)
    meta = json.loads((directory / "gate.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise GateError(f"{directory}: unknown gate format {meta.get('format')!r}")
    problems = []
    now = _digests(directory)
    changed = [
        k for k in sorted(set(meta["inputs"]) | set(now)) if meta["inputs"].get(k) != now.get(k)
    ]
    if changed:
        where = ", ".join(f"{k} ({INPUTS.get(k, 'store/')})" for k in changed)
        problems.append(f"inputs changed since the gate was recorded: {where}")
    predictions, metrics = _evaluate(directory, meta)
    expected = json.loads((directory / "expected" / "predictions.json").read_text())
    problems += _diff_answers(expected, predictions)
    metrics_file = directory / "expected" / "metrics.json"
    if metrics_file.is_file():
        problems += _diff_metrics(json.loads(metrics_file.read_text()), metrics or {})
    if problems:
        raise GateError(f"gate {directory} failed:\n  " + "\n  ".join(problems))
    return GateResult(directory, meta["dataset"], _count(predictions), metrics)
