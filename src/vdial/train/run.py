"""A run's data, tokenizer and model, built the same way for training, prediction and the gate.

* `RunData` reads each dataset's manifest once and gives `DatasetPart`s per (split, unit):
  samples whose media failed extraction are left out (and listed in store.json); an id a
  feature lacks is an error naming the feature and ids;
* `make_tokenizer`: the language model's own tokenizer, or a word-level one trained on the
  training text of every dataset, with the family's special tokens; saved in <run>/tokenizer;
* `build_model`: the family built from the recipe with torch seeded by the recipe's seed, so
  a rebuild is bit-identical before any weights are loaded;
* `load_trained`: a run's newest weights, for prediction, export and the gate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch

from vdial.cache import FeatureStore
from vdial.config import ConfigError
from vdial.manifests import Manifest, ManifestError
from vdial.train.checkpoint import WEIGHTS, load_weights, read_latest
from vdial.train.config import TrainConfig, model_config, read_run_config
from vdial.train.data import DatasetPart
from vdial.train.features import FeatureSet, InputShape
from vdial.train.models import MODELS
from vdial.train.samples import SampleSet, build_samples, dataset_kind
from vdial.train.tokenizer import Tokenizer, WordTokenizer, load_tokenizer


class RunError(ValueError):
    """A run cannot start or load (one line: what is wrong and what to do)."""


def _dialog_fingerprint(sets: list[SampleSet]) -> str:
    """sha256 over the samples (ids and text) a run learns from."""
    digest = hashlib.sha256()
    for samples in sets:
        for s in samples.samples:
            row = [s.media_id, s.turn, s.caption, s.question, s.answer, s.history, s.gt_index]
            digest.update(json.dumps(row).encode() + b"\n")
        digest.update(json.dumps(samples.vocabulary).encode())
    return digest.hexdigest()


@dataclass
class RunData:
    """The datasets of a run, read once."""

    config: TrainConfig
    model_config: Any
    manifests: dict[str, Manifest] = field(default_factory=dict)
    _parts: dict[tuple[str, str, str, str], DatasetPart] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.config.datasets:
            path = self.config.manifest_dir(name)
            try:
                self.manifests[name] = Manifest.read(path)
            except ManifestError as err:
                raise RunError(
                    f"dataset {name!r}: {err} (build it with `vdial manifest build`, or set "
                    f"--manifest / datasets.{name}.manifest)"
                ) from None

    def kind(self, dataset: str) -> str:
        return dataset_kind(self.manifests[dataset].dialogs)

    def features(self, dataset: str, media_ids: list[str]) -> FeatureSet:
        family = MODELS.get(self.config.family)
        specs = family.inputs(self.model_config)
        given = self.config.dataset_inputs(dataset)
        media = self.manifests[dataset].media
        sizes = {
            row["id"]: (float(row["width"]), float(row["height"]))
            for row in media.select(["id", "width", "height"]).to_pylist()
            if row["width"] and row["height"]
        }
        return FeatureSet(
            self.config.datasets[dataset].features,
            {role: (tuple(given[role]), spec) for role, spec in specs.items() if role in given},
            visual=self.config.visual,
            seed=self.config.seed,
            media_ids=media_ids,
            image_sizes=sizes,
            cache_mb=self.config.feature_cache_mb,
        )

    def part(
        self, dataset: str, split: str, unit: str = "turn", mode: str = "train"
    ) -> DatasetPart:
        """One dataset's samples of `split` with their features (checked once)."""
        key = (dataset, split, unit, mode)
        if key in self._parts:
            return self._parts[key]
        dialogs = self.manifests[dataset].dialogs
        if not pc.any(pc.equal(dialogs["split"], split)).as_py():
            raise RunError(f"dataset {dataset!r} has no dialogs in split {split!r}")
        samples = build_samples(dialogs, split, dataset=dataset, unit=unit, mode=mode)
        media_ids = sorted({s.media_id for s in samples.samples})
        try:
            features = self.features(dataset, media_ids)
            failed = features.failed()
            missing = features.missing([s for s in samples.samples if s.media_id not in failed])
        except KeyError as err:
            raise RunError(f"dataset {dataset!r}: {err.args[0]}") from None
        if missing:
            name, ids = next(iter(missing.items()))
            raise RunError(
                f"dataset {dataset!r}: {len(ids)} item(s) of split {split!r} have no {name!r} "
                f"features in {self.config.datasets[dataset].features} (e.g. {ids[:5]}); "
                "extract them or fix the manifest"
            )
        kept = [s for s in samples.samples if s.media_id not in failed]
        excluded = sorted({s.media_id for s in samples.samples} & failed)
        if excluded:
            self.excluded.setdefault(dataset, [])
            self.excluded[dataset] = sorted(set(self.excluded[dataset]) | set(excluded))
        part = DatasetPart(
            dataset, self.kind(dataset), SampleSet(kept, samples.vocabulary), features
        )
        self._parts[key] = part
        return part

    def shapes(self) -> dict[str, InputShape]:
        """Input shapes of the roles; every dataset must agree on them."""
        found: dict[str, dict[str, InputShape]] = {}
        for name in self.config.datasets:
            try:
                found[name] = self.features(name, []).shapes()
            except KeyError as err:
                raise RunError(f"dataset {name!r}: {err.args[0]}") from None
        first, *rest = found.items()
        for name, shapes in rest:
            if shapes != first[1]:
                raise RunError(
                    f"datasets {first[0]!r} and {name!r} give their inputs different shapes "
                    f"({first[1]} vs {shapes}); a model needs one shape per role"
                )
        return first[1]

    def store_record(self) -> dict[str, Any]:
        """What store.json records: per dataset its features' fingerprints and specs."""
        out: dict[str, Any] = {}
        for name, ds in self.config.datasets.items():
            store = FeatureStore.open(ds.features, mode="r")
            features = sorted({f for fs in self.config.dataset_inputs(name).values() for f in fs})
            parts = [p for key, p in sorted(self._parts.items()) if key[0] == name]
            out[name] = {
                "path": str(ds.features),
                "manifest": str(self.config.manifest_dir(name)),
                "kind": self.kind(name),
                "features": {
                    f: {
                        "items": len(store[f]),
                        "fingerprint": store[f].fingerprint(),
                        "spec": store[f].spec,
                        "lineage": store[f].lineage,
                    }
                    for f in features
                },
                "dialogs_fingerprint": _dialog_fingerprint([p.samples for p in parts]),
                "excluded_failed_items": self.excluded.get(name, []),
            }
        return out

    def training_texts(self) -> list[str]:
        """Every text of the training splits (for the dataset-trained word tokenizer)."""
        texts = []
        for name, ds in self.config.datasets.items():
            rows = self.manifests[name].dialogs.filter(
                pc.equal(self.manifests[name].dialogs["split"], ds.train_split)
            )
            for column in ("caption", "summary", "question", "answer"):
                texts += [t for t in rows[column].to_pylist() if t]
            options = rows["answer_options"].to_pylist()
            texts += sorted({o for opts in options if opts for o in opts})
        return texts


def make_tokenizer(config: TrainConfig, data: RunData | None, directory: Path) -> Tokenizer:
    """The run's tokenizer: reloaded from `directory`, else made (and saved there)."""
    from vdial.train.lm import load_lm_tokenizer

    if directory.is_dir() and any(directory.iterdir()):
        return load_tokenizer(directory)
    family = MODELS.get(config.family)
    cfg = model_config(config)
    lm = family.lm_config(cfg)
    if lm is not None and lm.pretrained:
        tokenizer = load_lm_tokenizer(lm)
    else:
        if data is None:
            raise RunError(f"no tokenizer in {directory}; the run was not trained")
        tokenizer = WordTokenizer.train(data.training_texts())
    tokenizer.add_special_tokens(family.special_tokens(cfg))
    return tokenizer


def build_model(config: TrainConfig, shapes: dict[str, InputShape], tokenizer: Tokenizer, kinds):
    """The family of `config`, built with torch seeded by the recipe's seed."""
    from vdial.train.models.base import BuildContext

    family = MODELS.get(config.family)
    torch.manual_seed(config.seed)
    return family(model_config(config), BuildContext(shapes, tokenizer, tuple(kinds)))


@dataclass
class Trained:
    """A run's model with what prediction needs."""

    run_dir: Path
    config: TrainConfig
    data: RunData
    tokenizer: Tokenizer
    model: Any
    stage: str
    step: int


def load_trained(run_dir: str | Path, *, config: TrainConfig | None = None) -> Trained:
    """The newest checkpoint of `run_dir` on the config's device (`config` overrides
    <run>/config.yaml, e.g. the gate's copy pointing at its own store)."""
    run_dir = Path(run_dir)
    latest = read_latest(run_dir / "checkpoints")
    if latest is None:
        raise RunError(f"{run_dir} has no checkpoint (no checkpoints/latest.json); train it first")
    if not (run_dir / "config.yaml").is_file() and config is None:
        raise RunError(f"{run_dir} has no config.yaml: not a run directory")
    try:
        config = config or read_run_config(run_dir / "config.yaml")
    except ConfigError as err:
        raise RunError(str(err)) from None
    data = RunData(config, model_config(config))
    tokenizer = make_tokenizer(config, None, run_dir / "tokenizer")
    model = build_model(config, data.shapes(), tokenizer, [data.kind(n) for n in config.datasets])
    load_weights(model, latest["path"] / WEIGHTS, partial=not config.checkpoint_frozen)
    model.to(torch.device(config.device if not config.device.startswith("cuda") else "cuda"))
    model.eval()
    return Trained(run_dir, config, data, tokenizer, model, latest["stage"], latest["step"])
