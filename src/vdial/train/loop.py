"""`fit`: train a recipe's stages in order, resumably, into a run directory.

A run directory holds the resolved recipe (config.yaml), the stores and dialogs it trained on
(store.json), the tokenizer (tokenizer/), each stage's record (stages.json: steps, trained
parameters per optimiser group), checkpoints (vdial.train.checkpoint) and TensorBoard logs
(tb/: train/loss, train/<each loss>, val/..., train/lr, time/data_wait_share, time/steps_per_s,
time/samples_per_s; steps count across stages).

A stage starts from the previous stage's weights (the same model object, or its final
checkpoint in a new process), with a fresh optimiser over the parameters it trains. Batches
are a pure function of (seed, stage, step), and every loss is a mean over the global batch
(`LossTerm` sums and counts summed over ranks), so a killed run resumed from its last
checkpoint continues exactly, and the result does not depend on the number of processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdial.config import ConfigError, to_dict
from vdial.train import checkpoint as ckpt
from vdial.train.config import StageConfig, TrainConfig, model_config, read_run_config, save_recipe
from vdial.train.distributed import Dist
from vdial.train.engine import Engine
from vdial.train.models import MODELS
from vdial.train.run import RunData, RunError, build_model, make_tokenizer


@dataclass
class FitResult:
    run_dir: Path
    steps: int  # steps of the last stage run
    resumed_from: int  # step that stage resumed at (0 for a fresh start)
    train_loss: float  # mean weighted loss of the last logging window
    val_loss: float | None  # last validation loss
    stages: list[str]  # stages run (or found complete) by this call


def _check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    previous = to_dict(read_run_config(saved))
    now = to_dict(config)
    if previous != now:
        diff = {k: v for k, v in now.items() if previous.get(k) != v}
        raise ConfigError(
            f"{run_dir} holds a run with a different config; resume it with the same recipe or "
            f"choose another --out (differs in: {', '.join(diff)})"
        )


def _check_same_data(run_dir: Path, record: dict[str, Any]) -> None:
    saved = run_dir / "store.json"
    if not saved.exists():
        return
    before = json.loads(saved.read_text())
    changed = []
    for name, now in record.items():
        then = before.get(name, {})
        if {f: v["fingerprint"] for f, v in then.get("features", {}).items()} != {
            f: v["fingerprint"] for f, v in now["features"].items()
        }:
            changed.append(f"{name}: feature store")
        if then.get("dialogs_fingerprint") != now["dialogs_fingerprint"]:
            changed.append(f"{name}: dialogs")
    if changed:
        raise ConfigError(
            f"{run_dir} was trained on different data than now ({'; '.join(changed)} changed: "
            "re-extracted or regenerated since); choose another --out, or delete the run"
        )


class Trainer:
    """One run: its data, model and stages, on this process's share of the work."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, progress: bool) -> None:
        self.config, self.run_dir = config, run_dir
        self.sharded = False  # set once FSDP2 has sharded the model (in place, for good)
        self.dist = Dist.from_env(config.device)
        self.progress = progress and self.dist.main
        self.family = MODELS.get(config.family)
        self.model_config = model_config(config)
        if self.dist.main:
            _check_run_dir(run_dir, config)
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        self.data = RunData(config, self.model_config)
        self.stages = list(config.stage_list())
        for stage in self.stages:
            unknown = sorted(set(stage.losses) - set(self.family.loss_names(self.model_config)))
            if unknown:
                raise ConfigError(
                    f"stage {stage.name!r}: unknown loss(es) {unknown}; the {config.family} "
                    f"family computes {', '.join(self.family.loss_names(self.model_config))}"
                )
        self.train_parts = {s.name: self._parts(s, "train") for s in self.stages}
        self.val_parts = {s.name: self._parts(s, "val") for s in self.stages}
        record = self.data.store_record()
        if self.dist.main:
            _check_same_data(run_dir, record)
            save_recipe(config, run_dir / "config.yaml")
            (run_dir / "store.json").write_text(json.dumps(record, indent=2, default=str))
        tok_dir = run_dir / "tokenizer"
        if self.dist.main and not tok_dir.is_dir():
            make_tokenizer(config, self.data, tok_dir).save(tok_dir)
        self.dist.barrier()
        self.tokenizer = make_tokenizer(config, self.data, tok_dir)
        kinds = sorted({self.data.kind(n) for n in config.datasets})
        self.model = build_model(config, self.data.shapes(), self.tokenizer, kinds)
        self.model.to(self.dist.device)
        if config.grad_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.processor = self.family.processor(self.model_config, self.tokenizer)
        self.root = run_dir / "checkpoints"

    def _parts(self, stage: StageConfig, which: str):
        names = list(stage.datasets) or list(self.config.datasets)
        parts = []
        for name in names:
            ds = self.config.datasets[name]
            split = ds.train_split if which == "train" else ds.val_split
            if split is None:
                continue
            if which == "val" and not self._has_split(name, split):
                continue
            parts.append(self.data.part(name, split, stage.unit))
        return parts

    def _has_split(self, dataset: str, split: str) -> bool:
        dialogs = self.data.manifests[dataset].dialogs
        return split in set(dialogs["split"].unique().to_pylist())

    def _weights(self, stage: StageConfig) -> list[float]:
        names = list(stage.datasets) or list(self.config.datasets)
        return [stage.datasets.get(n, 1.0) for n in names]

    def offsets(self) -> dict[str, int]:
        """The global step at which each stage begins (TensorBoard's x axis)."""
        out, total = {}, 0
        for stage in self.stages:
            out[stage.name] = total
            total += stage.steps
        return out

    def record_stage(self, stage: StageConfig, info: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        path = self.run_dir / "stages.json"
        stages = json.loads(path.read_text()) if path.exists() else {}
        stages[stage.name] = {**stages.get(stage.name, {}), **info}
        path.write_text(json.dumps(stages, indent=2))

    def fit(self, only: str | None = None) -> FitResult:
        names = [s.name for s in self.stages]
        if only is not None and only not in names:
            raise ConfigError(f"--stage {only!r}: the recipe's stages are {', '.join(names)}")
        if self.dist.main:
            ckpt.clean_partial(self.root)
        latest = ckpt.read_latest(self.root)
        done_upto = -1  # index of the last complete stage
        resume: dict[str, Any] | None = None
        if latest is not None:
            at = names.index(latest["stage"])
            complete = latest["step"] >= self.stages[at].steps
            done_upto = at if complete else at - 1
            resume = None if complete else latest
        result = FitResult(self.run_dir, 0, 0, float("nan"), None, [])
        ran: set[int] = set()  # stages run by this process
        writer = self._writer(latest)
        try:
            for index, stage in enumerate(self.stages):
                if only is not None and stage.name != only:
                    continue
                if index <= done_upto:
                    result.stages.append(stage.name)
                    result.steps = stage.steps
                    continue
                if index > done_upto + 1:
                    previous = self.stages[index - 1].name
                    raise RunError(
                        f"stage {stage.name!r} starts from stage {previous!r}, which has not "
                        f"finished; run it first (--stage {previous})"
                    )
                start_state = (
                    resume if resume is not None and resume["stage"] == stage.name else None
                )
                if start_state is None and index > 0 and index - 1 not in ran:
                    # the previous stage ran in another process: start from its final weights
                    # (in this one, the model already holds them, sharded or not)
                    self._load_stage_start(self.stages[index - 1])
                engine = Engine(self, stage, index, writer)
                outcome = engine.run(start_state)
                ran.add(index)
                done_upto = index
                result = FitResult(
                    self.run_dir,
                    stage.steps,
                    outcome["resumed_from"],
                    outcome["train_loss"],
                    outcome["val_loss"],
                    [*result.stages, stage.name],
                )
        finally:
            if writer is not None:
                writer.close()
        return result

    def _load_stage_start(self, previous: StageConfig) -> None:
        """The weights `previous` ended with (its final checkpoint; loading is bit-exact, so a
        stage starts from the same tensors in this process or in a new one)."""
        final = ckpt.stage_final(self.root, previous.name, previous.steps)
        ckpt.load_weights(
            self.model, final / ckpt.WEIGHTS, partial=not self.config.checkpoint_frozen
        )

    def _writer(self, latest: dict[str, Any] | None):
        if not self.dist.main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        purge = None
        if latest is not None:
            purge = self.offsets()[latest["stage"]] + latest["step"]
        return SummaryWriter(self.run_dir / "tb", purge_step=purge)


def fit(
    config: TrainConfig, run_dir: str | Path, *, stage: str | None = None, progress: bool = True
) -> FitResult:
    """Train (or resume) the run in `run_dir`; `stage` runs that stage only."""
    trainer = Trainer(config, Path(run_dir), progress=progress)
    try:
        return trainer.fit(stage)
    finally:
        trainer.dist.close()
