"""The training recipe: run-level settings, the family's `model:` block, and the stages.

A recipe (YAML in configs/) keeps what every run has (datasets, inputs, optimisation, logging)
apart from what one model family has (`model:`, validated against the family's own frozen
config dataclass), and lists the stages a run goes through (V2Dial 1 -> 2 -> 3, MERV align ->
finetune, ...). `load_recipe` resolves one into a `TrainConfig` with every default filled in,
which is what a run directory saves as config.yaml and resumes from.

    family: prefix-lm
    datasets: {avsd: {features: cache/avsd}}     # or --features on the command line
    inputs: {visual: dinov2/pool4x4}             # role -> store feature (a list: concatenated)
    model: {d_model: 128, history_turns: 3}
    optim: {lr: 1.0e-3, batch_size: 32}
    stages:
      - {name: train, steps: 2000, losses: {response: 1.0}}
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vdial.config import ConfigError, from_dict, read_yaml, to_dict

Schedule = Literal["cosine", "linear", "constant", "noam", "step"]


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """One dataset of a run: a manifest and the feature store extracted from it."""

    features: str  # feature store directory (or s3:// URL), e.g. cache/avsd
    manifest: str | None = None  # manifest directory; default manifests/<store directory name>
    train_split: str = "train"  # split trained on
    val_split: str | None = "val"  # split of the validation loss (None: none)
    # role -> feature(s) for this dataset only, where its store names them differently
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """The optimiser and learning-rate schedule (a stage may override any field)."""

    optimizer: Literal["adamw", "adam"] = "adamw"  # torch.optim.AdamW or Adam
    lr: float = 1e-3  # peak learning rate of the base group
    weight_decay: float = 0.01  # applied to matrices only (ndim >= 2), never to biases or norms
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    eps: float = 1e-8  # Adam's epsilon
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    schedule: Schedule = "cosine"  # after warm-up: cosine/linear decay, constant, noam, step
    warmup_steps: int = 100  # linear warm-up from lr/warmup_steps to lr
    min_lr_ratio: float = 0.0  # cosine/linear decay ends at lr * min_lr_ratio
    step_every: int = 1000  # "step": multiply the lr by step_gamma every step_every steps
    step_gamma: float = 0.5  # "step": the factor
    batch_size: int = 32  # global batch: samples per optimiser step over all ranks


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """One stage of a recipe: what is trained, on what, with which losses."""

    name: str  # stage name, e.g. "stage1"; unique within the recipe
    steps: int  # optimiser steps of this stage
    trainable: tuple[str, ...] = ("*",)  # parameter-name patterns (fnmatch) that are trained
    frozen: tuple[str, ...] = ()  # patterns kept frozen even where `trainable` matches
    lr_mult: dict[str, float] = field(default_factory=dict)  # pattern -> lr multiplier (first)
    datasets: dict[str, float] = field(default_factory=dict)  # dataset -> weight ({}: all, 1)
    losses: dict[str, float] = field(default_factory=dict)  # loss -> weight ({}: family's)
    unit: Literal["turn", "caption"] = "turn"  # samples: dialog turns, or one per caption
    optim: dict[str, Any] = field(default_factory=dict)  # OptimConfig fields overridden here


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that determines a training run (saved as <run>/config.yaml)."""

    family: str  # registered model family (vdial.train.models.MODELS)
    datasets: dict[str, DatasetConfig]  # name -> dataset; batches come from one at a time
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> store feature(s)
    visual: Literal["real", "zero", "shuffle"] = "real"  # ablation of every visual input
    model: dict[str, Any] = field(default_factory=dict)  # the family's config (validated)
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and schedule
    stages: tuple[StageConfig, ...] = ()  # run in order; () means one stage "train"
    eval_every: int = 250  # steps between validation passes
    checkpoint_every: int = 250  # steps between checkpoints (and at each stage's end)
    keep_checkpoints: int = 2  # checkpoints kept per stage (the newest); stage ends always
    log_every: int = 25  # steps between TensorBoard points
    num_workers: int = 0  # DataLoader worker processes (each opens the stores lazily)
    prefetch_factor: int = 2  # batches each worker prepares ahead
    feature_cache_mb: int = 0  # keep items read from the stores in RAM up to this (per process)
    seed: int = 0  # seed of weights, data order, masking and dropout
    device: str = "cpu"  # torch device ("cuda" under torchrun: the rank's local GPU)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype (fp16: GradScaler)
    accumulation: int = 1  # micro-batches per optimiser step (per rank)
    grad_checkpointing: bool = False  # recompute activations in backward (the family's blocks)
    compile: bool = False  # torch.compile the model
    parallel: Literal["ddp", "fsdp"] = "ddp"  # how several ranks share the model
    checkpoint_frozen: bool = True  # also save parameters no stage has trained so far

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError("no datasets: give --features or a datasets: block")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for stage in self.stages:
            unknown = sorted(set(stage.datasets) - set(self.datasets))
            if unknown:
                raise ValueError(
                    f"stage {stage.name!r} names unknown dataset(s) {unknown}; "
                    f"the recipe has {sorted(self.datasets)}"
                )
            if stage.steps < 0:
                raise ValueError(f"stage {stage.name!r}: steps must be >= 0")
        if self.accumulation < 1:
            raise ValueError("accumulation must be at least 1")

    def stage_list(self) -> tuple[StageConfig, ...]:
        """The stages to run; a recipe without any has one stage "train" of defaults."""
        return self.stages or (StageConfig(name="train", steps=2000),)

    def stage_optim(self, stage: StageConfig) -> OptimConfig:
        """The run's optimiser settings with the stage's overrides applied."""
        merged = {**to_dict(self.optim), **stage.optim}
        return from_dict(OptimConfig, merged, "recipe", f"stages.{stage.name}.optim")

    def dataset_inputs(self, dataset: str) -> dict[str, tuple[str, ...]]:
        """role -> feature(s) for `dataset` (its own `inputs` win over the recipe's)."""
        return {**self.inputs, **self.datasets[dataset].inputs}

    def manifest_dir(self, dataset: str) -> Path:
        ds = self.datasets[dataset]
        return Path(ds.manifest) if ds.manifest else Path("manifests") / Path(ds.features).name


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key.path=value` with the value read as YAML (`3`, `1e-3`, `true`, `[a, b]`, `x`)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. model.lm.d_model=64")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_recipe(
    path: str | Path | None,
    *,
    features: str | None = None,
    manifest: str | None = None,
    feature: str | None = None,
    assignments: tuple[str, ...] = (),
    steps: int | None = None,
    **overrides: Any,
) -> TrainConfig:
    """Read a recipe, apply the command line, and validate it (with its `model:` block).

    `features`/`manifest` set the store of a one-dataset recipe (or make one, named after
    the store directory); `feature` sets the "visual" input; `assignments` are `--set
    key.path=value` strings; `steps` sets the steps of every stage (a quick smoke run);
    `overrides` (None values ignored) set top-level keys.
    """
    where = str(path) if path is not None else "command line"
    data = copy.deepcopy(read_yaml(path)) if path is not None else {}
    datasets = data.setdefault("datasets", {}) or {}
    data["datasets"] = datasets
    if features is not None or manifest is not None:
        if len(datasets) > 1:
            raise ConfigError(
                f"{where}: the recipe names datasets {sorted(datasets)}; set their stores with "
                "--set datasets.NAME.features=PATH instead of --features"
            )
        if datasets:
            (only,) = datasets.values()
        elif features is None:
            raise ConfigError(f"{where}: --manifest needs --features (the recipe has no datasets)")
        else:
            only = datasets.setdefault(Path(features).name or "data", {})
        if features is not None:
            only["features"] = str(features)
        if manifest is not None:
            only["manifest"] = str(manifest)
    if feature is not None:
        data.setdefault("inputs", {})["visual"] = [feature]
    for text in assignments:
        key, value = parse_assignment(text)
        _set_path(data, key, value)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if steps is not None:
        stages = data.get("stages") or [{"name": "train"}]
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            raise ConfigError(f"{where}: stages: expected a list of mappings")
        data["stages"] = [{**s, "steps": steps} for s in stages]
    for role, value in list((data.get("inputs") or {}).items()):
        if isinstance(value, str):  # one feature may be written without a list
            data["inputs"][role] = [value]
    return resolve(data, where)


def resolve(data: dict[str, Any], where: str) -> TrainConfig:
    """A TrainConfig from a recipe mapping, with the family's model block validated and filled."""
    from vdial.train.models import MODELS

    if "family" not in data:
        raise ConfigError(f"{where}: missing key 'family'; registered: {', '.join(MODELS.names())}")
    if data["family"] not in MODELS:
        raise ConfigError(
            f"{where}: family: unknown model family {data['family']!r}; "
            f"registered: {', '.join(MODELS.names())}"
        )
    family = MODELS.get(data["family"])
    model = from_dict(family.Config, data.get("model") or {}, where, "model")
    config = from_dict(TrainConfig, {**data, "model": {}}, where)
    config = dataclasses.replace(config, model=to_dict(model))
    for stage in config.stage_list():
        config.stage_optim(stage)  # a typo in a stage's optim block fails here, not mid-run
    roles = family.inputs(model)
    for name in config.datasets:
        given = config.dataset_inputs(name)
        absent = sorted(r for r, spec in roles.items() if spec.required and r not in given)
        if absent:
            raise ConfigError(
                f"{where}: inputs: the {data['family']} family needs role(s) {absent} mapped "
                f"to store features for dataset {name!r} "
                f"(e.g. inputs: {{{absent[0]}: dinov2/pool4x4}})"
            )
        unknown = sorted(set(given) - set(roles))
        if unknown:
            raise ConfigError(
                f"{where}: inputs: unknown role(s) {unknown} for the {data['family']} family; "
                f"its roles: {', '.join(sorted(roles))}"
            )
    return config


def model_config(config: TrainConfig) -> Any:
    """The family's frozen config dataclass of a resolved TrainConfig."""
    from vdial.train.models import MODELS

    return from_dict(MODELS.get(config.family).Config, config.model, "config", "model")


def save_recipe(config: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def read_run_config(path: str | Path) -> TrainConfig:
    """A run's saved config.yaml (a resolved recipe)."""
    return resolve(read_yaml(path), str(path))
