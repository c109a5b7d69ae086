"""Extraction benchmark: shared decoding, throughput against decode-only, workers, peak memory.

On a generated set of H.264 videos (default 64 clips of 10-30 s, 640x480, 30 fps, libx264
veryfast, default GOP; cached in bench/results/extract_videos/<parameters>/), with tiny encoders
built with random weights (`--random-init`; the cost does not depend on the values), on CPU:

1. Shared decoding: two and three encoders in ONE `run_extraction` against the same encoders
   in SEPARATE runs (the sum of their wall times). Target: one run <= 0.6x for two encoders.
2. End-to-end throughput (videos/s of `run_extraction` with one encoder) against decode-only
   throughput of the same videos: the same `DecodePool` size, the same thread pool and
   look-ahead (2 videos in flight per worker) as the pipeline, decoding the same frame indices
   (the union the encoders sample), with no preprocessing, no encoder and no store.
   Target: >= 0.85x.
3. Scaling with 1 and 2 decode workers, end-to-end and decode-only.
4. Peak memory of a whole run (the first two encoders) at two dataset sizes (half the videos
   and all of them), each in a fresh interpreter: the peak RSS (VmHWM) of that process plus the
   VmHWM of each decode worker process, read from /proc while the workers live (sampled every
   0.2 s and once more after the run, before the workers are stopped). Target: the total does
   not grow with the number of videos (at most 1.1x for twice the videos).
5. With a GPU (torch.cuda.is_available()): DINOv2 ViT-L/14 (random weights) under bf16 autocast,
   as the pipeline runs it, and with bf16 weights, in frames/s against its FLOP-bound rate: the
   FLOPs of one frame's forward pass (counted by torch's FlopCounterMode) and the GPU's peak
   bf16 rate (`--peak-tflops`, default 989 for an H100 SXM, dense). Skipped on CPU.

Every timed run is in this process and writes a fresh store in a temporary folder (removed
after); `run_extraction` starts its own decode workers and stops them when it returns, so
their start-up is inside each time, end-to-end and decode-only alike, and no run finds warm
workers. One
untimed run first imports everything. Each time is the best of `--repeats` (default 1).

Run: .venv/bin/python bench/extract.py [--quick] [--videos N] [--frames F] [--repeats R]
     ->  bench/results/extract.json and extract.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SIZE, FPS, PRESET, CRF = (640, 480), 30, "veryfast", 23
ENCODERS = ("dinov2:tiny", "siglip:tiny", "eva-clip:tiny")
TARGET_SHARED, TARGET_OVERLAP, TARGET_MEMORY = 0.6, 0.85, 1.1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_clip(path: Path, seconds: int, seed: int) -> Path:
    """A noise texture panning over a gradient (seeded), libx264 with its default GOP (250)."""
    import av

    w, h = SIZE
    frames = seconds * FPS
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 128, (h, w + frames, 3), dtype=np.uint8)
    texture += np.linspace(0, 127, w + frames).astype(np.uint8)[None, :, None]
    partial = path.with_suffix(".partial.mp4")  # renamed at the end: no half clip in the cache
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": PRESET, "crf": str(CRF)}
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(texture[:, k : k + w], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    partial.rename(path)
    return path


def ensure_videos(count: int, shortest: int, longest: int) -> list[Path]:
    """The first `count` clips of the set, encoded once and kept keyed by their parameters."""
    folder = RESULTS / "extract_videos" / f"{SIZE[0]}x{SIZE[1]}_{FPS}fps_{PRESET}_crf{CRF}"
    folder.mkdir(parents=True, exist_ok=True)
    span = longest - shortest + 1
    paths = []
    for k in range(count):
        seconds = shortest + (k * 8) % span  # 8 is prime to 21: every length of 10..30 s
        path = folder / f"clip{k:03d}_{seconds}s_seed{k}.mp4"
        if not path.exists():
            log(f"encoding {path.name} ({k + 1}/{count})")
            make_clip(path, seconds, seed=k)
        paths.append(path)
    return paths


def link_folder(folder: Path, videos: list[Path]) -> Path:
    """A media folder of symlinks to `videos` (what `read_folder` lists)."""
    folder.mkdir(parents=True)
    for video in videos:
        (folder / video.name).symlink_to(video)
    return folder


def extract_config(encoders, args, workers: int):
    from vdial.extract.runner import ExtractConfig

    return ExtractConfig(
        encoders=tuple(encoders), random_init=True, frames=args.frames, decode_workers=workers
    )


def timed_extraction(folder: Path, encoders, args, workers: int) -> dict:
    """One `run_extraction` into a fresh store; its wall time and per-stage seconds."""
    from vdial.extract.runner import run_extraction
    from vdial.manifests import read_folder

    manifest = read_folder(folder, name="bench")
    store = Path(tempfile.mkdtemp(prefix="store-", dir=args.workdir))
    try:
        start = time.perf_counter()
        summary = run_extraction(
            manifest, store, extract_config(encoders, args, workers), progress=False
        )
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(store)
    if summary.failed:
        raise RuntimeError(f"benchmark videos failed: {summary.failed}")
    return dict(
        seconds=seconds, videos=summary.videos, frames=summary.frames, stages=summary.seconds
    )


def timed_decode_only(videos: list[Path], encoders, args, workers: int) -> dict:
    """The pipeline's decoding alone: same pool, threads, look-ahead and frame indices."""
    from vdial.extract.decode.worker import DecodePool
    from vdial.extract.runner import build_encoders

    config = extract_config(encoders, args, workers)
    built = list(build_encoders(config, "cpu").values())

    def union(total: int, fps: float) -> np.ndarray:
        return np.unique(np.concatenate([e.frame_indices(total, fps) for e in built]))

    start = time.perf_counter()
    pool = DecodePool(workers)
    threads = ThreadPoolExecutor(workers, thread_name_prefix="bench-decode")
    frames, inflight, pending = 0, deque(), iter(videos)
    try:
        while True:
            while len(inflight) < 2 * workers and (path := next(pending, None)) is not None:
                inflight.append(
                    threads.submit(
                        pool.decode, path, union, config.backend, config.decode_timeout_s
                    )
                )
            if not inflight:
                break
            frames += len(inflight.popleft().result().indices)
        seconds = time.perf_counter() - start
    finally:
        threads.shutdown()
        pool.close()
    return dict(seconds=seconds, videos=len(videos), frames=frames)


def best_of(fn, repeats: int) -> dict:
    runs = [fn() for _ in range(repeats)]
    return min(runs, key=lambda r: r["seconds"])


def measure_shared(folder: Path, args) -> dict:
    """(1) Each encoder alone, then two and three together, in one run each."""
    alone, together = {}, {}
    for encoder in ENCODERS:
        alone[encoder] = best_of(
            lambda e=encoder: timed_extraction(folder, [e], args, 2), args.repeats
        )
        log(f"shared: {encoder} alone {alone[encoder]['seconds']:.1f} s")
    rows = []
    for n in (2, 3):
        chosen = ENCODERS[:n]
        together[n] = best_of(lambda c=chosen: timed_extraction(folder, c, args, 2), args.repeats)
        separate = sum(alone[e]["seconds"] for e in chosen)
        rows.append(
            dict(
                encoders=list(chosen),
                one_run_s=together[n]["seconds"],
                separate_s=separate,
                ratio=together[n]["seconds"] / separate,
                stages=together[n]["stages"],
            )
        )
        log(
            f"shared: {'+'.join(chosen)} one run {together[n]['seconds']:.1f} s "
            f"vs separate {separate:.1f} s"
        )
    return dict(alone=alone, rows=rows)


def measure_throughput(folder: Path, videos: list[Path], args) -> list[dict]:
    """(2, 3) End-to-end with one encoder and decode-only, with 1 and 2 decode workers."""
    rows = []
    for workers in (1, 2):
        decode = best_of(
            lambda w=workers: timed_decode_only(videos, ENCODERS[:1], args, w), args.repeats
        )
        log(f"throughput: decode-only, {workers} worker(s): {decode['seconds']:.1f} s")
        full = best_of(
            lambda w=workers: timed_extraction(folder, ENCODERS[:1], args, w), args.repeats
        )
        log(f"throughput: end-to-end {ENCODERS[0]}, {workers} worker(s): {full['seconds']:.1f} s")
        if decode["frames"] != full["frames"]:  # the two must decode exactly the same frames
            raise RuntimeError(f"decode-only decoded {decode['frames']} frames, the run {full}")
        rows.append(
            dict(
                workers=workers,
                decode_s=decode["seconds"],
                end_to_end_s=full["seconds"],
                decode_vps=len(videos) / decode["seconds"],
                end_to_end_vps=len(videos) / full["seconds"],
                ratio=decode["seconds"] / full["seconds"],
                frames=full["frames"],
                stages=full["stages"],
            )
        )
    return rows


def vmhwm_mib(pid: int | str) -> float | None:
    """Peak resident memory (VmHWM) of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def child_pids() -> set[int]:
    """Children of this process, started from any of its threads."""
    pids = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return pids


def memory_child(folder: str, encoders: list[str], args) -> None:
    """Inside a fresh interpreter: one whole run, its peak memory printed as JSON."""
    import timm  # noqa: F401 - imported before the baseline, as the run imports it
    import torch  # noqa: F401

    from vdial.extract.runner import run_extraction
    from vdial.manifests import read_folder

    manifest = read_folder(Path(folder), name="bench")
    imported = vmhwm_mib("self")
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        for pid in child_pids():
            peak = vmhwm_mib(pid)
            if peak is not None:
                peaks[pid] = max(peak, peaks.get(pid, 0.0))

    def sampler() -> None:
        while not done.wait(0.2):
            sample()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    store = Path(tempfile.mkdtemp(prefix="store-", dir=args.workdir))
    try:
        start = time.perf_counter()
        summary = run_extraction(manifest, store, extract_config(encoders, args, 2), progress=False)
        seconds = time.perf_counter() - start
        done.set()
        thread.join()
        # The decoders stop when run_extraction returns: their peaks are the samples above.
    finally:
        shutil.rmtree(store)
    own = vmhwm_mib("self")
    print(
        json.dumps(
            dict(
                videos=summary.videos,
                seconds=seconds,
                import_mib=imported,
                parent_mib=own,
                workers=len(peaks),
                workers_mib=sum(peaks.values()),
                total_mib=own + sum(peaks.values()),
            )
        )
    )


def measure_memory(videos: list[Path], work: Path, args) -> list[dict]:
    """(4) A whole run at half and at all of the videos, each in a fresh interpreter."""
    rows = []
    for count in (max(1, len(videos) // 2), len(videos)):
        folder = link_folder(work / f"memory_{count}", videos[:count])
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-child",
            str(folder),
            "--encoders",
            ",".join(ENCODERS[:2]),
            "--workdir",
            str(args.workdir),
        ]
        if args.frames is not None:
            cmd += ["--frames", str(args.frames)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        log(f"memory: {count} videos: {rows[-1]['total_mib']:.0f} MiB in all")
    return rows


def measure_gpu(args) -> dict | None:
    """(5) DINOv2 ViT-L/14 forward passes in frames/s against its FLOP-bound rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vdial.extract.encoders import build_encoder

    if not torch.cuda.is_available():
        return None
    encoder = build_encoder("dinov2:large", random_init=True).to("cuda")
    side = encoder.spec.input_size
    batch = torch.randn(args.gpu_batch, 3, side, side, device="cuda")
    # Counted under autocast on the GPU: the attention kernels counted are the ones timed.
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        with FlopCounterMode(display=False) as counter:
            encoder.encode(batch[:1])
    flops = counter.get_total_flops()
    bound = args.peak_tflops * 1e12 / flops
    rows = []
    for mode in ("bf16 autocast (pipeline)", "bf16 weights"):
        if mode == "bf16 weights":
            encoder.model.to(torch.bfloat16)
            batch = batch.to(torch.bfloat16)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):  # kernels chosen and caches warm before the clock
                encoder.encode(batch)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.gpu_iters):
                encoder.encode(batch)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        fps = args.gpu_batch * args.gpu_iters / seconds
        rows.append(dict(mode=mode, frames_per_s=fps, ratio=fps / bound))
        log(f"gpu: {mode}: {fps:.0f} frames/s ({fps / bound:.2f}x the FLOP bound)")
    return dict(
        device=torch.cuda.get_device_name(),
        gflops_per_frame=flops / 1e9,
        peak_tflops=args.peak_tflops,
        bound_fps=bound,
        batch=args.gpu_batch,
        rows=rows,
    )


def table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines; the first column left-aligned, the others right-aligned."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    return [f"| {' | '.join(map(str, line))} |" for line in (header, align, *rows)] + [""]


def targets(r: dict) -> list[dict]:
    two, three = r["shared"]["rows"]
    small, large = r["memory"]
    growth = large["total_mib"] / small["total_mib"]
    checks = [
        ("one run / separate runs, 2 encoders", two["ratio"], "<=", TARGET_SHARED),
        ("one run / separate runs, 3 encoders (no target)", three["ratio"], "", None),
        *[
            (
                f"end-to-end / decode-only, {t['workers']} decode worker(s)",
                t["ratio"],
                ">=",
                TARGET_OVERLAP,
            )
            for t in r["throughput"]
        ],
        (f"peak memory, {large['videos']} / {small['videos']} videos", growth, "<=", TARGET_MEMORY),
    ]
    return [
        dict(
            name=name,
            value=value,
            target=f"{op} {limit}" if op else "-",
            met=None if op == "" else value <= limit if op == "<=" else value >= limit,
        )
        for name, value, op, limit in checks
    ]


def markdown(r: dict) -> str:
    from vdial.extract.pipeline import STAGES

    m, gpu = r["meta"], r["gpu"]
    one, two = r["throughput"]
    lines = [
        "# Extraction benchmark",
        "",
        f"`{m['command']}`",
        "",
        f"{m['cpus']} CPUs, Python {m['python']}, torch {m['torch']}, load average at start "
        f"{m['load']}; {m['videos']} videos ({m['video_desc']}); tiny encoders with random "
        f"weights, frames per video: {m['frames']}. Best of {m['repeats']}; every run has a "
        "fresh store and fresh decode workers.",
        "",
        "## 1. Shared decoding: several encoders in one run vs separate runs (2 decode workers)",
        "",
        *table(
            ["encoders", "one run s", "separate runs s", "one / separate"],
            [[f"{e} alone", f"{a['seconds']:.1f}", "", ""] for e, a in r["shared"]["alone"].items()]
            + [
                [
                    " + ".join(x["encoders"]),
                    f"{x['one_run_s']:.1f}",
                    f"{x['separate_s']:.1f}",
                    f"{x['ratio']:.2f}",
                ]
                for x in r["shared"]["rows"]
            ],
        ),
        f"## 2-3. Throughput: end-to-end ({ENCODERS[0]}) vs decode-only, by decode workers",
        "",
        *table(
            [
                "decode workers",
                "decode-only videos/s",
                "end-to-end videos/s",
                "end-to-end / decode-only",
                "stage s (summed over threads): decode, preprocess, encode, write",
            ],
            [
                [
                    t["workers"],
                    f"{t['decode_vps']:.2f}",
                    f"{t['end_to_end_vps']:.2f}",
                    f"{t['ratio']:.2f}",
                    ", ".join(f"{t['stages'][k]:.1f}" for k in STAGES),
                ]
                for t in r["throughput"]
            ],
        ),
        f"2 workers / 1 worker: decode-only {two['decode_vps'] / one['decode_vps']:.2f}x, "
        f"end-to-end {two['end_to_end_vps'] / one['end_to_end_vps']:.2f}x.",
        "",
        f"## 4. Peak memory of a whole run ({' + '.join(ENCODERS[:2])}, 2 decode workers)",
        "",
        *table(
            [
                "videos",
                "s",
                "after imports MiB",
                "process peak MiB",
                "decode workers",
                "workers' peaks MiB (sum)",
                "total MiB",
            ],
            [
                [
                    x["videos"],
                    f"{x['seconds']:.1f}",
                    f"{x['import_mib']:.0f}",
                    f"{x['parent_mib']:.0f}",
                    x["workers"],
                    f"{x['workers_mib']:.0f}",
                    f"{x['total_mib']:.0f}",
                ]
                for x in r["memory"]
            ],
        ),
        "## 5. Real-size encoder on the GPU",
        "",
    ]
    if gpu is None:
        lines += ["Skipped: no CUDA device here (run on a GPU machine to measure it).", ""]
    else:
        lines += [
            f"{gpu['device']}: DINOv2 ViT-L/14 at 224 px, {gpu['gflops_per_frame']:.1f} GFLOP "
            f"per frame (FlopCounterMode), batch {gpu['batch']}; FLOP bound at "
            f"{gpu['peak_tflops']:g} TFLOP/s: {gpu['bound_fps']:.0f} frames/s.",
            "",
            *table(
                ["mode", "frames/s", "x FLOP bound"],
                [[x["mode"], f"{x['frames_per_s']:.0f}", f"{x['ratio']:.2f}"] for x in gpu["rows"]],
            ),
        ]
    verdict = {True: "met", False: "MISSED", None: "-"}
    lines += [
        "## Targets",
        "",
        *table(
            ["measurement", "value", "target", "met"],
            [
                [t["name"], f"{t['value']:.2f}", t["target"], verdict[t["met"]]]
                for t in r["targets"]
            ],
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=64, help="number of generated clips")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 clips of 10 s")
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per video for every encoder (default: each its own)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="GPU peak dense bf16 TFLOP/s (989: H100 SXM)",
    )
    parser.add_argument("--gpu-batch", type=int, default=64, help="frames per forward pass (GPU)")
    parser.add_argument("--gpu-iters", type=int, default=20, help="timed forward passes (GPU)")
    parser.add_argument("--memory-child", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--encoders", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.encoders.split(","), args)
        return

    import torch

    count, (shortest, longest) = (8, (10, 10)) if args.quick else (args.videos, (10, 30))
    RESULTS.mkdir(parents=True, exist_ok=True)
    videos = ensure_videos(count, shortest, longest)
    lengths = f"{shortest}-{longest}" if longest > shortest else str(shortest)
    meta = dict(
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        cpus=len(os.sched_getaffinity(0)),
        python=platform.python_version(),
        torch=torch.__version__,
        load=" ".join(f"{x:.1f}" for x in os.getloadavg()),
        videos=count,
        repeats=args.repeats,
        frames=args.frames or "each encoder's default",
        video_desc=f"{lengths} s, {SIZE[0]}x{SIZE[1]}, {FPS} fps, libx264 {PRESET} crf {CRF}",
    )
    with tempfile.TemporaryDirectory(prefix="vdial-bench-extract-", dir=args.workdir) as tmp:
        work = Path(tmp)
        args.workdir = work
        folder = link_folder(work / "all", videos)
        warm = link_folder(work / "warm", videos[:2])
        log("warm-up run (imports, untimed)")
        timed_extraction(warm, ENCODERS, args, 2)
        results = dict(meta=meta)
        results["shared"] = measure_shared(folder, args)
        results["throughput"] = measure_throughput(folder, videos, args)
        results["memory"] = measure_memory(videos, work, args)
    results["gpu"] = measure_gpu(args)
    if results["gpu"] is None:
        log("gpu: skipped (no CUDA device)")
    results["targets"] = targets(results)
    text = markdown(results)
    (RESULTS / "extract.md").write_text(text)
    (RESULTS / "extract.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
