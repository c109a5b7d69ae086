"""Checkpoints of a run: weights as safetensors, training state beside them, written atomically.

    <run>/checkpoints/<stage>/step-000250/
        model.safetensors   weights (tied/shared tensors stored once, their aliases in the
                            metadata); without `checkpoint_frozen`, only the parameters some
                            stage has trained so far (the rest are rebuilt exactly from the
                            recipe: a pretrained folder or the seeded initialisation)
        state.pt            optimiser, scheduler, grad scaler, stage and step
        rng-<rank>.pt       every rank's torch/CUDA/NumPy/Python RNG states
    <run>/checkpoints/latest.json   {"stage", "step", "path"} of the newest checkpoint

A checkpoint is written into `<name>.tmp/` and renamed when complete, and latest.json is
replaced atomically after it, so a kill at any moment leaves the previous checkpoint in force.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest.json"
WEIGHTS = "model.safetensors"
OPTIMIZER_DIR = "optimizer"  # FSDP runs: the optimizer's shards (torch.distributed.checkpoint)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def _unique_tensors(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors with shared storage kept once: (tensors, alias -> stored name)."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = tensor.detach().contiguous().cpu()
    return kept, aliases


def save_weights(model: torch.nn.Module, path: Path, keep: set[str] | None = None) -> None:
    """The model's state (all of it, or the names in `keep` plus every buffer) as safetensors."""
    save_state(model.state_dict(), model, path, keep)


def save_state(
    state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path, keep: set[str] | None
) -> None:
    """`state` (the model's, possibly gathered from shards) as safetensors; see save_weights."""
    from safetensors.torch import save_file

    buffers = {n for n, _ in model.named_buffers()}
    state = {k: v for k, v in state.items() if keep is None or k in keep or k in buffers}
    tensors, aliases = _unique_tensors(state)
    save_file(tensors, str(path), metadata={"aliases": json.dumps(aliases), "format": "pt"})


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """An FSDP-sharded model's whole state on rank 0's CPU (None elsewhere); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return state if torch.distributed.get_rank() == 0 else None


def save_sharded_optimizer(model: torch.nn.Module, optimizer, directory: Path) -> None:
    """The optimizer state as each rank's shards (torch.distributed.checkpoint), keyed by
    parameter name, so that another number of ranks can load it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=directory)


def load_sharded_optimizer(model: torch.nn.Module, optimizer, directory: Path) -> None:
    """Load `save_sharded_optimizer`'s state, resharded to this run's ranks (or one process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # initialises Adam's
    dcp.load(state, checkpoint_id=directory)
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


def load_weights(model: torch.nn.Module, path: Path, *, partial: bool = False) -> list[str]:
    """Load safetensors weights into `model`; returns the names it did not hold (`partial`:
    allowed, e.g. frozen parameters rebuilt from the recipe; otherwise an error)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for alias, name in aliases.items():
        tensors[alias] = tensors[name]
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise KeyError(f"{path}: weights the model does not have: {result.unexpected_keys[:5]}")
    if result.missing_keys and not partial:
        raise KeyError(f"{path}: weights missing for {result.missing_keys[:5]}")
    return list(result.missing_keys)


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_latest(root: Path, stage: str, step: int, path: Path) -> None:
    tmp = root / (LATEST + ".tmp")
    tmp.write_text(json.dumps({"stage": stage, "step": step, "path": str(path.relative_to(root))}))
    os.replace(tmp, root / LATEST)


def read_latest(root: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint's {"stage", "step", "path"} (path absolute), or None."""
    latest = root / LATEST
    if not latest.is_file():
        return None
    info = json.loads(latest.read_text())
    info["path"] = root / info["path"]
    return info


def stage_final(root: Path, stage: str, steps: int) -> Path:
    """Where a stage's last checkpoint (its weights when it is complete) lives."""
    return root / stage / checkpoint_name(steps)


def finish_write(tmp: Path, final: Path, root: Path, stage: str, step: int, keep: int) -> None:
    """Publish a checkpoint written into `tmp`, then drop the oldest beyond `keep` (a stage's
    own final checkpoint is never dropped: the next stage starts from it)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_latest(root, stage, step, final)
    older = sorted(p for p in final.parent.glob("step-*") if not p.name.endswith(".tmp"))
    for old in older[: max(0, len(older) - keep)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def clean_partial(root: Path) -> None:
    """Remove checkpoints a kill left half-written."""
    for tmp in root.glob("*/step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
