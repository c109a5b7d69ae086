"""Decode benchmark: sampling frames per backend vs decoding the whole file, speed and memory.

Speed: time to get 16 and 32 uniformly sampled frames with each decode backend, on the real
videos in ../shared/data/real/videos and on a generated 30 s 640x480 H.264 clip, against a full
sequential decode of the same file (PyAV, every frame converted to RGB: what a loader that
decodes everything does), and against OpenCV's sequential `VideoCapture.read` up to the last
wanted frame (the approach video_features uses). Each time is the best of `--repeats` runs
(the least disturbed by other work on the machine). Every method's frames are compared with
the full decode's frames at the same indices ("max diff", 0 = identical).

Memory: peak RSS of sampling 16 frames from a generated 1280x720 video of 5 and of 10 minutes,
each measured in a fresh subprocess, vs a full decode of it (frames streamed and dropped), and
the memory it would take to hold every decoded frame. The long videos are made quickly (one
low-bitrate minute encoded once, then its packets copied end to end) and cached in
bench/results/.

Run: .venv/bin/python bench/decode.py   ->   bench/results/decode.json and decode.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
REAL = REPO.parent / "shared" / "data" / "real" / "videos"
REAL_NAMES = ("CGRUM.mp4", "v_GGSY1Qvo990.mp4", "v_ZNVhz7ctTq0.mp4")
SAMPLES = (16, 32)
LONG_MINUTES = (5, 10)
FULL = "full decode (pyav)"
OPENCV = "opencv sequential"
DISTRIBUTIONS = ("av", "decord", "torchcodec", "opencv-python-headless")


def make_clip(path: Path, seconds: int = 30, fps: int = 30, size=(640, 480)) -> Path:
    """A panning noise texture over a gradient, encoded with libx264 defaults (GOP 250)."""
    import av

    w, h = size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (h, w + seconds * fps, 3), dtype=np.uint8)
    texture = (texture // 2 + np.linspace(0, 127, w + seconds * fps)[None, :, None]).astype(
        np.uint8
    )
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for k in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(texture[:, k : k + w], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def make_long(path: Path, minutes: int, fps: int = 25) -> Path:
    """A 1280x720 video of `minutes` minutes: one encoded minute, its packets repeated."""
    import av

    if path.exists():
        return path
    minute = path.with_name("long_1min.mp4")
    if not minute.exists():
        w, h = 1280, 720
        luma = np.linspace(16, 235, w, dtype=np.float32)[None, :].repeat(h, 0).astype(np.uint8)
        base = np.concatenate([luma, np.full((h // 2, w), 128, np.uint8)])  # yuv420p planes
        with av.open(str(minute), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            # Low bitrate, a keyframe every 10 s: quick to make, and seeking has work to do.
            stream.options = {"preset": "ultrafast", "crf": "35", "g": str(10 * fps)}
            for k in range(60 * fps):
                plane = base.copy()
                x = (8 * k) % (w - 96)
                plane[200:296, x : x + 96] = 255 - k % 200  # a moving, changing square
                frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    # Each copy starts with the minute's first (IDR) frame, so the joined stream is valid.
    with av.open(str(minute)) as source:
        last = [p for p in source.demux(video=0) if p.size][-1]
        span = last.pts + last.duration
    with av.open(str(path), "w") as target:
        dst = None
        for copy in range(minutes):
            with av.open(str(minute)) as source:
                src = source.streams.video[0]
                if dst is None:
                    dst = target.add_stream_from_template(src)
                for packet in source.demux(src):
                    if packet.size:
                        packet.pts += copy * span
                        packet.dts += copy * span
                        packet.stream = dst
                        target.mux(packet)
    return path


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def best_time(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def full_decode(path: Path, keep: set[int]) -> dict[int, np.ndarray]:
    """Every frame decoded and converted to RGB in order; the frames at `keep` returned."""
    import av

    kept = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            if i in keep:
                kept[i] = rgb
    return kept


def opencv_read(path: Path, wanted: np.ndarray) -> np.ndarray:
    """video_features' way: VideoCapture.read frame after frame, keeping the wanted ones."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    kept, targets = {}, set(wanted.tolist())
    for i in range(int(wanted.max()) + 1):
        ok, bgr = capture.read()
        if not ok:
            break
        if i in targets:
            kept[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    capture.release()
    return np.stack([kept[i] for i in wanted.tolist()])


def speed_rows(path: Path, label: str, backends, opencv: bool, repeats: int, advance) -> list[dict]:
    import av

    from vdial.extract.decode import sample_uniform
    from vdial.extract.sampling import uniform_indices

    with av.open(str(path)) as container:
        total = sum(1 for p in container.demux(video=0) if p.size)
    plans = {n: uniform_indices(total, n) for n in SAMPLES}
    keep = set(np.concatenate(list(plans.values())).tolist())
    full_s, reference = best_time(lambda: full_decode(path, keep), repeats)
    rows = [dict(video=label, frames=total, method=FULL, n=total, seconds=full_s, max_diff=0)]
    advance()
    for n, wanted in plans.items():
        expected = np.stack([reference[i] for i in wanted.tolist()])
        methods = {b: (lambda b=b, n=n: sample_uniform(path, n, b).frames) for b in backends}
        if opencv:
            methods[OPENCV] = lambda wanted=wanted: opencv_read(path, wanted)
        for method, fn in methods.items():
            seconds, frames = best_time(fn, repeats)
            diff = int(np.abs(frames.astype(np.int16) - expected).max())
            rows.append(
                dict(video=label, frames=total, method=method, n=n, seconds=seconds, max_diff=diff)
            )
            advance()
    for row in rows:
        row["fps"] = row["n"] / row["seconds"]
        row["speedup"] = full_s / row["seconds"]
    return rows


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM, Linux).

    Not getrusage's ru_maxrss: Linux keeps that across exec, so a child started by subprocess
    (vfork + exec) reports its parent's peak. VmHWM belongs to the child's own address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def rss_child(method: str, path: Path) -> None:
    """Run inside a fresh interpreter: one measurement, printed as JSON on stdout."""
    import av

    from vdial.extract.decode import sample_uniform, unavailable_reason

    if method != FULL:
        unavailable_reason(method)  # import the backend's library before the baseline
    imported = peak_rss_mib()
    start = time.perf_counter()
    if method == FULL:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = sum(1 for _ in container.decode(stream))
            shape = (stream.height, stream.width, 3)
    else:
        got = sample_uniform(path, 16, method)
        frames, shape = got.num_frames, got.frames.shape[1:]
    seconds = time.perf_counter() - start
    row = dict(
        peak_mib=peak_rss_mib(),
        import_mib=imported,
        seconds=seconds,
        frames=frames,
        all_frames_mib=frames * int(np.prod(shape)) / 2**20,
    )
    print(json.dumps(row))


def memory_rows(backends, advance) -> list[dict]:
    rows = []
    for minutes in LONG_MINUTES:
        path = make_long(RESULTS / f"long_{minutes}min.mp4", minutes)
        for method in (*backends, FULL):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", method, str(path)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(
                dict(
                    minutes=minutes,
                    method=method if method == FULL else f"{method}: sample 16",
                    **row,
                )
            )
            advance()
    return rows


def fastest_correct(rows: list[dict], backends) -> str | None:
    """The backend with the least total time among those identical to the reference."""
    totals = {}
    for b in backends:
        mine = [r for r in rows if r["method"] == b]
        if mine and all(r["max_diff"] == 0 for r in mine):
            totals[b] = sum(r["seconds"] for r in mine)
    return min(totals, key=totals.get) if totals else None


def markdown(speed: list[dict], memory: list[dict], best: str | None, meta: dict) -> str:
    lines = [
        "# Decode benchmark",
        "",
        f"{meta['cpus']} CPUs, {meta['python']}; {meta['versions']}. Best of {meta['repeats']}.",
        "",
        "| video | frames | method | n | ms | frames/s | x full decode | max diff |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in speed:
        lines.append(
            f"| {r['video']} | {r['frames']} | {r['method']} | {r['n']} | "
            f"{1000 * r['seconds']:.0f} | {r['fps']:.0f} | {r['speedup']:.2f} | {r['max_diff']} |"
        )
    lines += ["", f"Fastest backend with frames identical to the full decode: **{best}**", ""]
    if memory:
        lines += [
            "| length | method | peak RSS MiB | after imports MiB | s | frames | all frames MiB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in memory:
            lines.append(
                f"| {r['minutes']} min | {r['method']} | {r['peak_mib']:.0f} | "
                f"{r['import_mib']:.0f} | {r['seconds']:.1f} | {r['frames']} | "
                f"{r['all_frames_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the RSS part")
    parser.add_argument("--rss-child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], Path(args.rss_child[1]))
        return

    from rich.console import Console
    from rich.markdown import Markdown
    from rich.progress import Progress

    from vdial.extract.decode import available_backends, sample_uniform

    RESULTS.mkdir(parents=True, exist_ok=True)
    backends = available_backends()
    opencv = importlib.util.find_spec("cv2") is not None  # from the `bench` extra
    real = [REAL / n for n in REAL_NAMES if (REAL / n).is_file()]
    steps = (len(real) + 1) * (1 + len(SAMPLES) * (len(backends) + opencv))
    if not args.skip_memory:
        steps += len(LONG_MINUTES) * (len(backends) + 1)
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        task = progress.add_task("decode bench", total=steps)

        def advance() -> None:
            progress.advance(task)

        clip = make_clip(Path(tmp) / "generated_30s_640x480.mp4")
        for b in backends:  # load each library (torch for torchcodec) before any timing
            sample_uniform(clip, 2, b)
        speed = []
        for path in [*real, clip]:
            progress.update(task, description=path.name)
            speed += speed_rows(path, path.name, backends, opencv, args.repeats, advance)
        memory = []
        if not args.skip_memory:
            progress.update(task, description="peak RSS")
            memory = memory_rows(backends, advance)
    best = fastest_correct(speed, backends)
    meta = dict(
        cpus=len(os.sched_getaffinity(0)),
        python=platform.python_version(),
        versions=", ".join(f"{d} {_version(d)}" for d in DISTRIBUTIONS),
        repeats=args.repeats,
    )
    text = markdown(speed, memory, best, meta)
    (RESULTS / "decode.md").write_text(text)
    (RESULTS / "decode.json").write_text(
        json.dumps(dict(meta=meta, speed=speed, memory=memory, fastest_correct=best), indent=1)
    )
    console = Console()
    console.print(Markdown(text))
    if not opencv:
        console.print("OpenCV left out: pip install -e '.[bench]' to compare with it")


if __name__ == "__main__":
    main()
