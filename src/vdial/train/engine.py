"""One stage of training on this process: optimiser, schedule, batches, steps, validation,
logging and checkpoints.

Each optimiser step reads `accumulation` micro-batches of this rank's share of the global
batch. A loss's value is its sum over the micro-batch divided by its count over all ranks
(one small all-reduce of sums and counts per micro-batch), times the world size because DDP
averages gradients; so the gradient is that of the global mean, at any rank count. fp16 runs
scale the loss with a GradScaler and unscale before clipping. The time each step waits for
its batch is measured (time/data_wait_share, as torchtitan logs it).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from typing import Any

import numpy as np
import torch

from vdial.train import checkpoint as ckpt
from vdial.train.config import OptimConfig
from vdial.train.data import ProcessedDataset, StagePlan, StageSampler
from vdial.train.progress import TrainProgress
from vdial.train.stages import (
    apply_stage,
    count_parameters,
    param_groups,
    set_modes,
    trainable_names,
)


def lr_factor(optim: OptimConfig, steps: int):
    """The learning-rate multiplier of each step (warm-up, then the schedule)."""

    def factor(step: int) -> float:
        warm = max(optim.warmup_steps, 0)
        if step < warm:
            return (step + 1) / warm
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "noam":  # Vaswani et al.: warm-up, then 1/sqrt(step)
            return math.sqrt(max(warm, 1) / (step + 1))
        if optim.schedule == "step":
            return optim.step_gamma ** ((step - warm) // max(optim.step_every, 1))
        progress = min(1.0, (step - warm) / max(1, steps - warm))
        floor = optim.min_lr_ratio
        if optim.schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(groups: list[dict[str, Any]], optim: OptimConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    blocking = device.type != "cuda"
    return {
        k: v.to(device, non_blocking=not blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class Engine:
    """Trains `stage` (index `index` of the recipe) of `trainer`'s run."""

    def __init__(self, trainer, stage, index: int, writer) -> None:
        self.t, self.stage, self.index, self.writer = trainer, stage, index, writer
        self.config = trainer.config
        self.dist = trainer.dist
        self.optim = self.config.stage_optim(stage)
        unit = self.dist.world * self.config.accumulation
        if self.optim.batch_size % unit:
            raise ValueError(
                f"stage {stage.name!r}: batch_size {self.optim.batch_size} is not divisible by "
                f"ranks x accumulation = {unit}"
            )
        self.losses = stage.losses or trainer.family.default_losses(trainer.model_config)
        self.active = [n for n, w in self.losses.items() if w]
        self.offset = trainer.offsets()[stage.name]

    # -- set-up ----------------------------------------------------------------------------

    def _saved_names(self) -> set[str] | None:
        """Parameters a checkpoint holds: all, or those some stage up to this one trains."""
        if self.config.checkpoint_frozen:
            return None
        model = self.t.model
        return {n for s in self.t.stages[: self.index + 1] for n in trainable_names(model, s)}

    @property
    def fsdp(self) -> bool:
        return self.config.parallel == "fsdp" and self.dist.world > 1

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.fsdp:
            if not self.t.sharded:
                self._shard(model)
                self.t.sharded = True  # fully_shard works in place, once per process
        elif self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            # a stage's losses need not touch every trained parameter in every batch
            model = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if self.config.compile:
            model = torch.compile(model)
        return model

    def _shard(self, model: torch.nn.Module) -> None:
        """FSDP2 over a 1-D mesh of the ranks: each of the family's blocks is one unit (its
        parameters gathered for its forward only), then the rest at the root; bf16 runs
        compute in bf16 and reduce gradients in float32."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.dist.device.type, (self.dist.world,))
        policy = MixedPrecisionPolicy()
        if self.config.precision == "bf16":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for unit in model.fsdp_units():
            fully_shard(unit, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)

    def _seed(self, step: int = 0) -> None:
        """Fresh RNG streams for this rank at `step` of the stage (a resume at another rank
        count has no saved state for this rank: it continues from these)."""
        seed = [self.config.seed, self.index, self.dist.rank, step]
        state = np.random.SeedSequence(seed).generate_state(3)
        torch.manual_seed(int(state[0]))
        np.random.seed(int(state[1]))
        random.seed(int(state[2]))

    def _loader(self, plan: StagePlan, start: int, dataset: ProcessedDataset):
        workers = self.config.num_workers
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=StageSampler(
                plan,
                start,
                self.dist.rank,
                self.dist.world,
                self.config.accumulation,
                self.config.seed,
            ),
            collate_fn=dataset.collate,
            num_workers=workers,
            prefetch_factor=self.config.prefetch_factor if workers else None,
            persistent_workers=workers > 0,
            pin_memory=self.dist.device.type == "cuda",
            # its own generator: creating the iterator must not draw from the global RNG, or a
            # resumed run's dropout stream would be shifted by one draw
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    # -- the loop --------------------------------------------------------------------------

    def run(self, state: dict[str, Any] | None) -> dict[str, Any]:
        t, stage, model = self.t, self.stage, self.t.model
        trained = apply_stage(model, stage)
        partial = not self.config.checkpoint_frozen
        if state is not None:  # weights first: FSDP shards what is loaded here
            ckpt.load_weights(model, state["path"] / ckpt.WEIGHTS, partial=partial)
        wrapped = self._wrap(model)
        groups, summary = param_groups(model, stage, self.optim)
        optimizer = make_optimizer(groups, self.optim)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(self.optim, stage.steps))
        fp16 = self.config.precision == "fp16"
        scaler = torch.amp.GradScaler(self.dist.device.type, enabled=fp16)
        start = 0
        if state is not None:
            path = state["path"]
            saved = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
            if "optimizer" in saved:
                optimizer.load_state_dict(saved["optimizer"])
            else:  # saved by torch.distributed.checkpoint, resharded to this rank count
                ckpt.load_sharded_optimizer(model, optimizer, path / ckpt.OPTIMIZER_DIR)
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            start = saved["step"]
            rng = path / f"rng-{self.dist.rank}.pt"
            if saved.get("world", 1) == self.dist.world and rng.is_file():
                ckpt.set_rng_state(torch.load(rng, weights_only=False))
            else:
                self._seed(start)
        else:
            self._seed()
        n_trained, n_total = count_parameters(model)
        t.record_stage(
            stage,
            {
                "steps": stage.steps,
                "trained_params": n_trained,
                "total_params": n_total,
                "trained_tensors": len(trained),
                "groups": [vars(g) for g in summary],
                "losses": self.losses,
            },
        )
        if t.progress:
            from rich.console import Console

            lines = ", ".join(
                f"{g.pattern or 'base'} x{g.lr_mult:g}: {g.params:,}" for g in summary
            )
            Console(stderr=True).print(
                f"[bold]stage {stage.name}[/bold]: training {n_trained:,} of {n_total:,} "
                f"parameters ({lines}); losses {self.losses}"
            )
        parts = t.train_parts[stage.name]
        dataset = ProcessedDataset(parts, t.processor)
        weights = t._weights(stage)
        plan = StagePlan(
            [len(p.samples) for p in parts],
            weights,
            self.optim.batch_size,
            self.config.seed,
            self.index,
            stage.steps,
        )
        val = (
            ProcessedDataset(t.val_parts[stage.name], t.processor)
            if t.val_parts[stage.name]
            else None
        )
        loop = _Loop(self, wrapped, optimizer, scheduler, scaler, self._saved_names())
        return loop.train(self._loader(plan, start, dataset), start, val)


class _Loop:
    """The step loop of one stage (kept apart from the set-up above)."""

    def __init__(self, engine: Engine, wrapped, optimizer, scheduler, scaler, saved) -> None:
        self.e, self.wrapped = engine, wrapped
        self.optimizer, self.scheduler, self.scaler, self.saved = (
            optimizer,
            scheduler,
            scaler,
            saved,
        )
        self.model = engine.t.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = engine.config
        self.autocast = (
            torch.autocast(
                engine.dist.device.type,
                dtype=getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[cfg.precision]),
            )
            if cfg.precision != "fp32"
            else contextlib.nullcontext()
        )

    def _reduce(self, terms: dict[str, Any]) -> torch.Tensor:
        """[2, losses]: sums and counts of the active losses over all ranks (detached)."""
        device = self.e.dist.device
        stats = torch.zeros(2, len(self.e.active), device=device, dtype=torch.float64)
        for k, name in enumerate(self.e.active):
            if name in terms:
                stats[0, k] = terms[name].total.detach().double()
                stats[1, k] = terms[name].count.double()
        return self.e.dist.all_reduce(stats)

    def _micro_loss(self, terms: dict[str, Any], stats: torch.Tensor) -> torch.Tensor:
        e = self.e
        scale = e.dist.world / e.config.accumulation
        loss = None
        for k, name in enumerate(e.active):
            if name not in terms or stats[1, k] == 0:
                continue
            part = e.losses[name] * terms[name].total * (scale / float(stats[1, k]))
            loss = part if loss is None else loss + part
        if loss is None or not loss.requires_grad:
            # every rank must take part in the backward pass, even without a loss this time
            zero = sum(p.reshape(-1)[0] * 0.0 for p in self.params)
            loss = zero if loss is None else loss + zero
        return loss

    def step(self, batches, step: int) -> tuple[np.ndarray, float]:
        """One optimiser step; returns ([2, losses] global sums/counts, seconds waited)."""
        e = self.e
        totals = torch.zeros(2, len(e.active), dtype=torch.float64)
        waited = 0.0
        for micro in range(e.config.accumulation):
            t0 = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - t0
            batch = to_device(batch, e.dist.device)
            batch["seed"] = int(
                np.random.SeedSequence(
                    [e.config.seed, e.index, step, micro, e.dist.rank]
                ).generate_state(1)[0]
            )
            last = micro == e.config.accumulation - 1
            sync = (
                contextlib.nullcontext()
                if last or not hasattr(self.wrapped, "no_sync")
                else self.wrapped.no_sync()
            )
            with sync:
                with self.autocast:
                    terms = self.wrapped(batch, e.active)
                stats = self._reduce(terms)
                self.scaler.scale(self._micro_loss(terms, stats)).backward()
            totals += stats.cpu()
        self.scaler.unscale_(self.optimizer)  # clipping sees true gradients, also under fp16
        limit = e.optim.grad_clip if e.optim.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, limit)
        self.grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return totals.numpy(), waited

    def weighted(self, sums: np.ndarray) -> tuple[float, dict[str, float]]:
        """(weighted total, {loss: mean}) from [2, losses] sums and counts."""
        means = {
            n: float(sums[0, k] / sums[1, k]) for k, n in enumerate(self.e.active) if sums[1, k] > 0
        }
        return sum(self.e.losses[n] * v for n, v in means.items()), means

    def validate(self, dataset: ProcessedDataset) -> tuple[float, dict[str, float]]:
        """Losses on the validation split, batches sharded over ranks (ranks whose share runs
        out repeat their last batch with weight zero, so no collective ever waits)."""
        e = self.e
        per = max(1, e.optim.batch_size // e.dist.world)
        batches = [list(range(i, min(len(dataset), i + per))) for i in range(0, len(dataset), per)]
        rounds = -(-len(batches) // e.dist.world)
        sums = torch.zeros(2, len(e.active), dtype=torch.float64, device=e.dist.device)
        self.model.eval()
        with torch.no_grad():
            for r in range(rounds):
                k = r * e.dist.world + e.dist.rank
                real = k < len(batches)
                items = [dataset[i] for i in batches[min(k, len(batches) - 1)]]
                batch = to_device(dataset.collate(items), e.dist.device)
                batch["seed"] = k
                with self.autocast:
                    terms = self.model(batch, e.active)
                for j, name in enumerate(e.active):
                    if real and name in terms:
                        sums[0, j] += terms[name].total.double()
                        sums[1, j] += terms[name].count.double()
        set_modes(self.model)
        return self.weighted(e.dist.all_reduce(sums).cpu().numpy())

    def save(self, step: int) -> None:
        e = self.e
        root = e.t.root
        final = root / e.stage.name / ckpt.checkpoint_name(step)
        tmp = final.with_name(final.name + ".tmp")
        if e.dist.main:
            tmp.mkdir(parents=True, exist_ok=True)
        e.dist.barrier()
        state: dict[str, Any] = {
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "stage": e.stage.name,
            "step": step,
            "world": e.dist.world,
        }
        if e.config.parallel == "fsdp":
            # every rank writes its optimizer shards (keyed by name: loadable at any rank
            # count, one process included); the weights are gathered to rank 0
            weights = ckpt.full_state_dict(self.model) if e.fsdp else self.model.state_dict()
            ckpt.save_sharded_optimizer(self.model, self.optimizer, tmp / ckpt.OPTIMIZER_DIR)
        else:
            weights = self.model.state_dict() if e.dist.main else None
            state["optimizer"] = self.optimizer.state_dict()
        if e.dist.main:
            ckpt.save_state(weights, self.model, tmp / ckpt.WEIGHTS, self.saved)
            torch.save(state, tmp / "state.pt")
        torch.save(ckpt.rng_state(), tmp / f"rng-{e.dist.rank}.pt")
        e.dist.barrier()
        if e.dist.main:
            keep = max(1, e.config.keep_checkpoints)
            ckpt.finish_write(tmp, final, root, e.stage.name, step, keep)
        e.dist.barrier()

    def train(self, loader, start: int, val: ProcessedDataset | None) -> dict[str, Any]:
        e, cfg, stage = self.e, self.e.config, self.e.stage
        bar = TrainProgress(e.t.progress, stage.name, start, stage.steps)
        window = np.zeros((2, len(e.active)))
        waited = busy = 0.0
        train_loss, val_loss = float("nan"), None
        batches = iter(loader)
        try:
            for step in range(start, stage.steps):
                t0 = time.perf_counter()
                sums, wait = self.step(batches, step)
                done = step + 1
                window += sums
                waited, busy = waited + wait, busy + time.perf_counter() - t0
                at = e.offset + done
                if done % cfg.log_every == 0 or done == stage.steps:
                    train_loss, means = self.weighted(window)
                    if e.writer is not None:
                        e.writer.add_scalar("train/loss", train_loss, at)
                        for name, value in means.items():
                            e.writer.add_scalar(f"train/{name}", value, at)
                        e.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], at)
                        e.writer.add_scalar("train/grad_norm", self.grad_norm, at)
                        e.writer.add_scalar("time/data_wait_share", waited / max(busy, 1e-9), at)
                        steps_per_s = cfg.log_every / max(busy, 1e-9)
                        e.writer.add_scalar("time/steps_per_s", steps_per_s, at)
                        e.writer.add_scalar(
                            "time/samples_per_s", steps_per_s * e.optim.batch_size, at
                        )
                    bar.update(
                        done, train_loss, val_loss, e.optim.batch_size, waited / max(busy, 1e-9)
                    )
                    window[:] = 0
                    waited = busy = 0.0
                if val is not None and (done % cfg.eval_every == 0 or done == stage.steps):
                    val_loss, means = self.validate(val)
                    if e.writer is not None:
                        e.writer.add_scalar("val/loss", val_loss, at)
                        for name, value in means.items():
                            e.writer.add_scalar(f"val/{name}", value, at)
                if done % cfg.checkpoint_every == 0 or done == stage.steps:
                    if e.writer is not None:
                        e.writer.flush()
                    self.save(done)
            if start == stage.steps == 0:
                self.save(0)
        finally:
            bar.close()
        e.t.record_stage(stage, {"complete": True, "train_loss": train_loss, "val_loss": val_loss})
        return {"resumed_from": start, "train_loss": train_loss, "val_loss": val_loss}
