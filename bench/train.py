"""Trainer benchmark: is the accelerator fed, and what do cached features buy?

Measured in one run on the same machine, each against a baseline of the same run:

- data-wait share of step time (`time/data_wait_share`, the time `next(batches)` blocks over
  the step time) for the demo-size head and for a papers'-size head (GPT-2 small, 124M, random
  weights, over 16 frames x 64 pooled tokens of 1024-d features), with 2 DataLoader workers;
  target <= 5 % at the papers' size;
- steps/s reading the vdial store vs the same items as one `.npy` per video, through the same
  DataLoader and model (demo-size head): target >= 1.0x;
- the same model trained on cached features vs on pixels: a pixel step decodes its videos and
  runs a frozen `dinov2:large` (random weights: the cost does not depend on them) over their
  frames before the same model step; target >= 10x;
- 1 vs 2 processes (torchrun, gloo; NCCL on GPUs) at the same global batch: scaling
  efficiency = speed-up / 2;
- peak RSS of a training process on stores of N and 4N items (flat: items are read lazily).

A GPU section (papers'-size head on CUDA, bf16) runs when a GPU is present. CPU numbers
depend on what else the machine runs; the ratios are what to read.

Run: .venv/bin/python bench/train.py [--quick]  ->  bench/results/train.json and train.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "train_work"
DEMO_VIDEOS = ROOT / "data" / "synth" / "videos"

HEADS = {  # model blocks of the two sizes (the demo's, and GPT-2 small as VGD-GPT2 uses)
    "demo": {"frames": 2, "lm": {"d_model": 64, "n_layers": 2, "n_heads": 4, "dropout": 0.0}},
    # GPT-2 small, with 1100 learned positions instead of 1024: 16 x 64 visual tokens + text
    "papers": {
        "frames": 16,
        "lm": {"d_model": 768, "n_layers": 12, "n_heads": 12, "max_positions": 1100},
    },
}
SHAPES = {"demo": (4, 16, 384), "papers": (16, 64, 1024)}  # item: frames x tokens x dim


def make_data(root: Path, items: int, shape: tuple[int, int, int]) -> dict[str, Path]:
    """A manifest of `items` one-turn dialogs over a store of random features, and the same
    features as one .npy per item."""
    import pyarrow as pa

    from vdial.cache import FeatureStore
    from vdial.manifests import DIALOG_SCHEMA, MEDIA_SCHEMA, Manifest

    if (root / "done").is_file():
        return {"store": root / "cache" / "bench", "manifest": root / "manifests" / "bench"}
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    store = FeatureStore.open(root / "cache" / "bench", mode="w")
    feature = store.create_feature("f", item_shape=shape[1:], spec={"name": "bench"})
    (root / "npy").mkdir(parents=True)
    media, dialogs = [], []
    with feature.writer() as writer:
        for k in range(items):
            vid = f"v{k:05d}"
            data = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
            writer.add(vid, data)
            np.save(root / "npy" / f"{vid}.npy", data)
            media.append({"id": vid, "kind": "video", "split": "train"})
            dialogs.append(
                {"dialog_id": vid, "media_id": vid, "split": "train", "turn": 0,
                 "question": "what colour is the circle ?", "answer": "it is red .",
                 "answers": ["it is red ."], "caption": "shapes move .", "source": "bench"}
            )  # fmt: skip
    Manifest(
        name="bench",
        media=pa.Table.from_pylist(media, schema=MEDIA_SCHEMA),
        dialogs=pa.Table.from_pylist(dialogs, schema=DIALOG_SCHEMA),
    ).write(root / "manifests" / "bench")
    (root / "done").write_text("")
    return {"store": root / "cache" / "bench", "manifest": root / "manifests" / "bench"}


def recipe(data: dict, head: str, steps: int, batch: int, **top) -> dict:
    return {
        "family": "prefix-lm",
        "datasets": {"bench": {"features": str(data["store"]), "manifest": str(data["manifest"]),
                               "val_split": None}},
        "inputs": {"visual": ["f"]},
        "model": {**HEADS[head], "history_turns": 0, "max_context_tokens": 16,
                  "max_answer_tokens": 8},
        "optim": {"batch_size": batch, "warmup_steps": 1},
        "stages": [{"name": "train", "steps": steps}],
        "log_every": steps, "checkpoint_every": 10**6, "num_workers": 2, **top,
    }  # fmt: skip


def timed_fit(config: dict, out: Path, *, npy: Path | None = None) -> dict[str, float]:
    """Train `config` in this process; steps/s and data-wait share of its steps (TensorBoard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vdial.train import run as run_module
    from vdial.train.config import resolve
    from vdial.train.features import FeatureSet
    from vdial.train.loop import fit

    class NpyFeatures(FeatureSet):
        """The same FeatureSet reading one .npy per item instead of the store."""

        def _item(self, name, item_id, extras):
            return {"data": np.load(npy / f"{item_id}.npy")}

    shutil.rmtree(out, ignore_errors=True)
    original = run_module.FeatureSet
    run_module.FeatureSet = NpyFeatures if npy else original
    try:
        fit(resolve(config, "bench"), out, progress=False)
    finally:
        run_module.FeatureSet = original
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    last = {t: events.Scalars(t)[-1].value for t in ("time/steps_per_s", "time/data_wait_share")}
    return {"steps_per_s": last["time/steps_per_s"], "wait_share": last["time/data_wait_share"]}


def pixel_step_seconds(videos: int, batch: int, frames: int) -> float:
    """Seconds of decode + frozen dinov2:large per training step of `batch` videos, measured
    on `videos` of the demo's videos and scaled to the batch."""
    import torch

    from vdial.extract.decode.core import decode
    from vdial.extract.encoders import build_encoder

    encoder = build_encoder("dinov2:large", random_init=True, frames=frames)
    paths = sorted(DEMO_VIDEOS.glob("*.mp4"))[:videos]
    if len(paths) < videos:
        raise SystemExit(f"needs {videos} videos in {DEMO_VIDEOS}: run `make demo` first")
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            clip = decode(path, "pyav", encoder.frame_indices)
            encoder.encode(encoder.preprocess(clip.frames))
    return (time.perf_counter() - start) / videos * batch


def torchrun_speed(config: dict, out: Path, nproc: int) -> float:
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shutil.rmtree(out, ignore_errors=True)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "vdial.train.cli", "fit", "--config",
               str(path), "--out", str(out), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
    subprocess.run(command, check=True, env=env, capture_output=True)
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    return events.Scalars("time/steps_per_s")[-1].value


def peak_rss_mb(config: dict, out: Path) -> float:
    """Peak RSS (MB) of a fresh process training `config`."""
    code = (
        "import json, resource, sys; from pathlib import Path\n"
        f"sys.path.insert(0, {str(ROOT / 'src')!r})\n"
        "from vdial.train.config import resolve; from vdial.train.loop import fit\n"
        f"fit(resolve(json.loads({json.dumps(json.dumps(config))}), 'b'), Path({str(out)!r}),"
        " progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument(
        "--papers-batch",
        type=int,
        default=None,
        help="batch of the GPT-2 small head (default 16 on a GPU, 4 on a CPU: 16 sequences of "
        "1,050 tokens need about 12 GB of activations and a minute per step on 2 cores)",
    )
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    papers_batch = args.papers_batch or (16 if gpu else 4)
    steps = 10 if args.quick else 40
    results: dict[str, dict] = {}
    demo = make_data(WORK / "demo", 512, SHAPES["demo"])
    papers = make_data(WORK / "papers", 64, SHAPES["papers"])

    print("data-wait share", flush=True)
    results["wait_demo"] = timed_fit(recipe(demo, "demo", steps, 64), WORK / "run_demo")
    big = 3 if args.quick else 6  # GPT-2 small on a CPU: seconds per step
    results["wait_papers"] = timed_fit(
        recipe(papers, "papers", big, papers_batch), WORK / "run_papers"
    )
    results["wait_papers"]["batch"] = papers_batch

    print("store vs npy", flush=True)
    store = timed_fit(recipe(demo, "demo", steps, 64), WORK / "run_store")
    npy = timed_fit(recipe(demo, "demo", steps, 64), WORK / "run_npy", npy=WORK / "demo" / "npy")
    results["store_vs_npy"] = {"store": store, "npy": npy,
                               "ratio": store["steps_per_s"] / npy["steps_per_s"]}  # fmt: skip

    print("cached vs pixels", flush=True)
    cached_step = 1.0 / store["steps_per_s"]
    pixels = pixel_step_seconds(2 if args.quick else 4, 64, 4) + cached_step
    results["cached_vs_pixels"] = {"cached_step_s": cached_step, "pixel_step_s": pixels,
                                   "ratio": pixels / cached_step}  # fmt: skip

    print("1 vs 2 processes", flush=True)
    config = recipe(demo, "demo", steps, 64, num_workers=0)
    one = torchrun_speed(config, WORK / "ranks1", 1)
    two = torchrun_speed(config, WORK / "ranks2", 2)
    results["scaling"] = {"one": one, "two": two, "efficiency": two / one / 2}

    print("peak memory", flush=True)
    small = make_data(WORK / "rss_small", 256, SHAPES["demo"])
    large = make_data(WORK / "rss_large", 1024, SHAPES["demo"])
    rss = {n: peak_rss_mb(recipe(d, "demo", 20, 64, num_workers=0), WORK / f"rss_{n}")
           for n, d in (("256", small), ("1024", large))}  # fmt: skip
    results["peak_rss_mb"] = {**rss, "ratio": rss["1024"] / rss["256"]}

    if gpu:
        print("GPU", flush=True)
        gpu = recipe(papers, "papers", 30, 16, device="cuda", precision="bf16")
        results["gpu_wait_papers"] = timed_fit(gpu, WORK / "run_gpu")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "train.md").write_text(table(results))
    print(table(results))


def table(r: dict) -> str:
    rows = [
        ("data-wait share, demo head (batch 64)", f"{r['wait_demo']['wait_share']:.1%}", "-"),
        (f"data-wait share, GPT-2 small head (batch {r['wait_papers']['batch']}, 16x64 tokens)",
         f"{r['wait_papers']['wait_share']:.1%}", "<= 5 %"),
        ("steps/s store vs one .npy per video",
         f"{r['store_vs_npy']['ratio']:.2f}x ({r['store_vs_npy']['store']['steps_per_s']:.2f} vs "
         f"{r['store_vs_npy']['npy']['steps_per_s']:.2f})", ">= 1.0x"),
        ("step time pixels (decode + dinov2:large) vs cached",
         f"{r['cached_vs_pixels']['ratio']:.0f}x ({r['cached_vs_pixels']['pixel_step_s']:.1f} s "
         f"vs {r['cached_vs_pixels']['cached_step_s']:.3f} s)", ">= 10x"),
        ("2 vs 1 processes, same global batch",
         f"efficiency {r['scaling']['efficiency']:.0%} ({r['scaling']['two']:.2f} vs "
         f"{r['scaling']['one']:.2f} steps/s)", "reported"),
        ("peak RSS, 1024 vs 256 items",
         f"{r['peak_rss_mb']['ratio']:.2f}x ({r['peak_rss_mb']['1024']:.0f} vs "
         f"{r['peak_rss_mb']['256']:.0f} MB)", "flat"),
    ]  # fmt: skip
    if "gpu_wait_papers" in r:
        rows.append(("GPU data-wait share, GPT-2 small head (bf16)",
                     f"{r['gpu_wait_papers']['wait_share']:.1%}", "<= 5 %"))  # fmt: skip
    lines = ["# Trainer benchmark (`bench/train.py`)", "", "| measure | result | target |",
             "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
