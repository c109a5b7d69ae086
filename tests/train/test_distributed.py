"""Real `torchrun` processes (2 ranks, gloo, CPU): DDP and FSDP2 against one process, exact
resume after SIGKILL, and resume at another number of ranks.

Tolerance: the runs differ only in the order of floating-point reductions (each rank sums its
half of the batch, then gloo sums the halves), so losses, gradient norms and weights agree to
1e-5 (about 100 float32 ulps at these magnitudes); a resume at the same rank count is bitwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from .conftest import toy_recipe

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _fit(recipe, out, nproc: int = 1, **popen):
    command = [sys.executable, "-m", "vdial.train.cli", "fit", "--config", str(recipe)]
    if nproc > 1:
        command[1:3] = ["-m", "torch.distributed.run", "--standalone",
                        f"--nproc-per-node={nproc}", "-m", "vdial.train.cli"]  # fmt: skip
    command += ["--out", str(out), "--no-progress"]
    if popen:
        return subprocess.Popen(command, env=ENV, **popen)
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _scalars(run, tag) -> np.ndarray:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return np.array([e.value for e in events.Scalars(tag)])


def _weights(run, step) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "train" / f"step-{step:06d}" / "model.safetensors")


def _recipe(toy, tmp_path, name="recipe.yaml", **keys):
    path = tmp_path / name
    defaults = dict(steps=12, checkpoint_every=6, log_every=1, eval_every=6, dropout=0.0)
    path.write_text(yaml.safe_dump(toy_recipe(toy, **{**defaults, **keys})))
    return path


def _rewind(run, step):
    """The run as a kill right after the checkpoint of `step` leaves it (checkpoints are
    published atomically, so this is every state a kill can leave)."""
    import shutil

    for later in (run / "checkpoints" / "train").glob("step-*"):
        if int(later.name.split("-")[1]) > step:
            shutil.rmtree(later)
    latest = {"stage": "train", "step": step, "path": f"train/step-{step:06d}"}
    (run / "checkpoints" / "latest.json").write_text(json.dumps(latest))


def test_two_ddp_ranks_follow_one_process(toy, tmp_path):
    """Same global batch: the loss, gradient-norm and validation-loss trajectories agree;
    validation's 3 batches shard unevenly over 2 ranks without a hang."""
    recipe = _recipe(toy, tmp_path, batch_size=6, val_split="test")
    one, two = tmp_path / "one", tmp_path / "two"
    _fit(recipe, one)
    _fit(recipe, two, nproc=2)
    for tag in ("train/loss", "train/grad_norm", "val/loss"):
        a, b = _scalars(one, tag), _scalars(two, tag)
        assert len(a) == len(b) > 1 and np.allclose(a, b, rtol=0, atol=1e-5), tag
    assert sorted(p.name for p in (two / "checkpoints" / "train" / "step-000012").iterdir()) == [
        "model.safetensors", "rng-0.pt", "rng-1.pt", "state.pt"
    ]  # fmt: skip


def test_fsdp_gradients_equal_one_process_and_resume_at_another_rank_count(toy, tmp_path):
    """FSDP2 over 2 gloo ranks: gradient norms equal the single process's (a sum instead of a
    mean over ranks, pytorch#162338, would double them); its sharded optimizer state resumes
    in one process, and a one-process checkpoint resumes on 2 ranks."""
    recipe = _recipe(toy, tmp_path, parallel="fsdp")
    one, two = tmp_path / "one", tmp_path / "two"
    _fit(recipe, one)
    _fit(recipe, two, nproc=2)
    for tag in ("train/loss", "train/grad_norm"):
        assert np.allclose(_scalars(one, tag), _scalars(two, tag), rtol=0, atol=1e-5), tag
    assert (two / "checkpoints" / "train" / "step-000006" / "optimizer" / ".metadata").is_file()
    reference = _weights(one, 12)
    for source, nproc in ((two, 1), (one, 2)):
        resumed = tmp_path / f"from-{source.name}"
        subprocess.run(["cp", "-r", str(source), str(resumed)], check=True)
        _rewind(resumed, 6)
        _fit(recipe, resumed, nproc=nproc)
        got = _weights(resumed, 12)
        for name in set(reference) & set(got):
            assert torch.allclose(got[name], reference[name], rtol=0, atol=1e-5), name


def test_killed_two_rank_job_resumes_bitwise(toy, tmp_path):
    """SIGKILL the whole torchrun job after its first checkpoint, resume it on 2 ranks: the
    weights equal an uninterrupted 2-rank run's bit for bit (dropout on: every rank's RNG
    state is restored)."""
    recipe = _recipe(toy, tmp_path, steps=40, checkpoint_every=5, dropout=0.1)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = _fit(recipe, killed, nproc=2, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "latest.json").exists():
        assert proc.poll() is None and time.time() < deadline, "ended before a checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["step"] < 40
    _fit(recipe, killed, nproc=2)
    _fit(recipe, straight, nproc=2)
    a, b = _weights(killed, 40), _weights(straight, 40)
    assert a.keys() == b.keys()
    for name, value in b.items():
        assert torch.equal(a[name], value), name


def test_accumulation_equals_the_full_batch(toy, tmp_path):
    """Two micro-batches per step give the one-batch trajectory (losses are means over the
    global batch), in one process."""
    from vdial.train.config import resolve
    from vdial.train.loop import fit

    base = toy_recipe(toy, steps=6, log_every=1, dropout=0.0)
    fit(resolve(base, "a"), tmp_path / "full", progress=False)
    fit(resolve({**base, "accumulation": 2}, "b"), tmp_path / "acc", progress=False)
    for tag in ("train/loss", "train/grad_norm"):
        a, b = _scalars(tmp_path / "full", tag), _scalars(tmp_path / "acc", tag)
        assert np.allclose(a, b, rtol=0, atol=1e-5), tag


GATHER_SCRIPT = """
import sys, torch, torch.distributed as dist
from vdial.train.objectives import symmetric_info_nce
dist.init_process_group("gloo")
rank = dist.get_rank()
gen = torch.Generator().manual_seed(0)
a, b = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
mine_a = a[rank * 4:(rank + 1) * 4].clone().requires_grad_()
mine_b = b[rank * 4:(rank + 1) * 4].clone().requires_grad_()
loss = symmetric_info_nce(mine_a, mine_b, 0.1, label_smoothing=0.1)
loss.total.backward()
total = loss.total.detach().clone()
dist.all_reduce(total)
grads = [torch.zeros(8, 5), torch.zeros(8, 5)]
grads[0][rank * 4:(rank + 1) * 4] = mine_a.grad
grads[1][rank * 4:(rank + 1) * 4] = mine_b.grad
for g in grads:
    dist.all_reduce(g)
if rank == 0:
    torch.save({"total": total, "grads": grads}, sys.argv[1])
dist.barrier()  # neither rank leaves while the other still talks to it (gloo aborts then)
dist.destroy_process_group()
"""


def test_info_nce_gathers_negatives_and_gradients_across_ranks(tmp_path):
    """Two ranks of 4 pairs each: the summed loss and every gradient equal one process
    holding all 8 pairs (negatives come from both ranks; gradients flow back to their owner)."""
    from vdial.train.objectives import symmetric_info_nce

    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", str(script), str(tmp_path / "out.pt")]  # fmt: skip
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 5, generator=gen).requires_grad_()
    b = torch.randn(8, 5, generator=gen).requires_grad_()
    loss = symmetric_info_nce(a, b, 0.1, label_smoothing=0.1)
    loss.total.backward()
    assert torch.allclose(got["total"], loss.total.detach(), atol=1e-5)
    assert torch.allclose(got["grads"][0], a.grad, atol=1e-6)
    assert torch.allclose(got["grads"][1], b.grad, atol=1e-6)
