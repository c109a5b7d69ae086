"""Encoder forward cost: time per frame of every registered encoder, so that users can plan.

For each family, at its tiny test size and at the papers' size (random weights: the cost does
not depend on the values), one batch of synthetic 240x320 frames is preprocessed and encoded
under `torch.inference_mode`: image encoders get `--batch` frames, video encoders one clip
(their `clip_len` frames), the region encoder one image. The baseline in the same run is the
tiny DINOv2 (column "x dinov2:tiny" = this encoder's time per frame over the baseline's), so
the numbers can be compared across machines. Each time is the best of `--repeats` runs after a
warm-up. On a GPU (`--device cuda`) the peak memory allocated is reported too.

Run: .venv/bin/python bench/encoders.py [--device cuda] [--sizes tiny]
     ->   bench/results/encoders.json and encoders.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BASELINE = "dinov2:tiny"


def batch_frames(encoder, batch: int) -> int:
    """Frames making one batch: `batch` frames, one clip, or one image for region encoders."""
    spec = encoder.spec
    if spec.max_regions:
        return 1
    return spec.clip_len if spec.clip_len > 1 else batch


def measure(ref: str, device: str, batch: int, repeats: int) -> dict:
    import torch

    from vdial.extract.encoders import build_encoder

    encoder = build_encoder(ref, random_init=True).to(device)
    n = batch_frames(encoder, batch)
    frames = np.random.default_rng(0).integers(0, 256, (n, 240, 320, 3), dtype=np.uint8)

    def run() -> tuple[float, float]:
        start = time.perf_counter()
        units = encoder.preprocess(frames)
        middle = time.perf_counter()
        with torch.inference_mode():
            if isinstance(units, torch.Tensor):
                units = units.to(device)
            out = encoder.encode(units)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        del out
        return middle - start, time.perf_counter() - middle

    run()  # warm-up: lazy initialisation, allocator, kernels
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    pre, enc = min(run() for _ in range(repeats))
    params = sum(p.numel() for p in encoder.model.parameters())
    return {
        "encoder": ref,
        "params_m": params / 1e6,
        "frames": n,
        "preprocess_ms": 1e3 * pre,
        "encode_ms": 1e3 * enc,
        "ms_per_frame": 1e3 * (pre + enc) / n,
        "frames_per_s": n / (pre + enc),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30
        if device.startswith("cuda")
        else None,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    base = next(r["ms_per_frame"] for r in rows if r["encoder"] == BASELINE)
    lines = [
        "# Encoder forward cost",
        "",
        f"device {meta['device']} ({meta['machine']}), torch threads {meta['threads']}, "
        f"best of {meta['repeats']}; random weights, synthetic 240x320 frames",
        "",
        "| encoder | params (M) | frames per batch | preprocess ms | encode ms | ms per frame "
        "| frames/s | x dinov2:tiny | peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        lines.append(
            f"| {r['encoder']} | {r['params_m']:.3g} | {r['frames']} | {r['preprocess_ms']:.1f} "
            f"| {r['encode_ms']:.1f} | {r['ms_per_frame']:.2f} | {r['frames_per_s']:.1f} "
            f"| {r['ms_per_frame'] / base:.1f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--sizes", default="tiny,real", help="tiny, real (the papers'), or both")
    parser.add_argument("--batch", type=int, default=8, help="frames per batch, image encoders")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (best is kept)")
    parser.add_argument("--only", default=None, help="comma-separated families (default: all)")
    args = parser.parse_args()

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vdial.extract.encoders import ENCODERS

    families = args.only.split(",") if args.only else list(ENCODERS)
    sizes = args.sizes.split(",")
    refs = [BASELINE]
    for name in families:
        family = ENCODERS.get(name)
        for size in sizes:
            ref = f"{name}:{'tiny' if size == 'tiny' else family.default_size}"
            if ref not in refs:
                refs.append(ref)
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("encoders", total=len(refs))
        for ref in refs:
            bar.update(task, description=f"encoders: {ref}")
            rows.append(measure(ref, args.device, args.batch, args.repeats))
            bar.advance(task)
    meta = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "torch": torch.__version__,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoders.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    (RESULTS / "encoders.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
