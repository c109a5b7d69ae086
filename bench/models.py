"""Model table: every registered family's synth recipe against its zeroed-visual twin.

For each family with a `configs/<family>-synth.yaml`, trains the recipe twice on the cached
features of the synthetic data (`vdial synth --size demo`), once as written and once with
every visual input zeroed (`--visual zero`), side by side on one thread each; then predicts
and scores each dataset of the recipe with the official metrics: AVSD test (challenge JSON,
BLEU-4/CIDEr and exact match per question type) and VisDial val (option scores where the
model scores options, else generated answers ranked by the MiniLM ranker; R@1, MRR, NDCG and
R@1 per question type). A family learns from the pixels when its row beats its twin's.

Data, manifests and features are made when missing (extraction resumes, so a second run only
trains). The synthetic data: the demo's (`data/synth`, AVSD) and a VisDial set of 2000
training images (`data/synth-visdial`). Results: bench/results/models.md (the table),
models.json, and a loss plot per family, bench/results/models/<family>_loss.png.

Run: .venv/bin/python bench/models.py [--families prefix-lm] [--steps N (smoke runs)]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
SYNTH = ROOT / "data" / "synth"  # the demo's data (AVSD: 800 training videos)
# VisDial with 2000 training images: the demo's 200 are too few to learn which shape has
# which colour without overfitting (its own AVSD part is unused, hence 8 videos)
SYNTH_VISDIAL = ROOT / "data" / "synth-visdial"

MANIFESTS = {
    "synth_avsd": [
        "manifest", "build", "avsd", "--name", "synth_avsd", "--videos", f"{SYNTH}/videos",
        "--annotations", f"train={SYNTH}/avsd/train.json",
        "--annotations", f"val={SYNTH}/avsd/val.json",
        "--annotations", f"test={SYNTH}/avsd/test.json",
    ],
    "synth_visdial": [
        "manifest", "build", "visdial", "--name", "synth_visdial",
        "--images", f"{SYNTH_VISDIAL}/images",
        "--annotations", f"train={SYNTH_VISDIAL}/visdial/visdial_1.0_train.json",
        "--annotations", f"val={SYNTH_VISDIAL}/visdial/visdial_1.0_val.json",
        "--annotations", f"test={SYNTH_VISDIAL}/visdial/visdial_1.0_test.json",
        "--dense", f"val={SYNTH_VISDIAL}/visdial/visdial_1.0_val_dense_annotations.json",
    ],
}  # fmt: skip


def _pooled_dinov2(dataset: str) -> list[list[str]]:
    """The demo's DINOv2 features (random weights: no checkpoint is downloadable here)."""
    return [
        ["extract", "--dataset", dataset, "--encoder", "dinov2:small", "--random-init",
         "--frames", "4", "--no-progress"],
        ["cache", "pool", "--dataset", dataset, "--feature", "dinov2", "--grid", "4"],
    ]  # fmt: skip


# How each (store, feature) a synth recipe reads is made; each model issue adds its own.
FEATURES = {
    ("synth_avsd", "dinov2/pool4x4"): _pooled_dinov2("synth_avsd"),
    ("synth_visdial", "dinov2/pool4x4"): _pooled_dinov2("synth_visdial"),
}

AVSD_REFS = SYNTH / "avsd" / "test_multiref.json"
AVSD_TYPES = SYNTH / "avsd" / "question_types.json"
VISDIAL_VAL = SYNTH_VISDIAL / "visdial" / "visdial_1.0_val.json"
VISDIAL_DENSE = SYNTH_VISDIAL / "visdial" / "visdial_1.0_val_dense_annotations.json"
VISDIAL_TYPES = SYNTH_VISDIAL / "visdial" / "question_types.json"


def vdial(*args: str, tool: str = "vdial", env: dict | None = None, log: Path | None = None):
    command = [str(BIN / tool), *args]
    print("$", " ".join(command[:8]), "..." if len(command) > 8 else "", flush=True)
    out = open(log, "w") if log else None  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    finally:
        if out:
            out.close()


def run(*args: str, tool: str = "vdial") -> None:
    if vdial(*args, tool=tool).wait() != 0:
        raise SystemExit(f"failed: {tool} {' '.join(args)}")


def prepare(recipes: dict[str, dict]) -> None:
    if not (SYNTH / "synth.json").is_file():
        run("synth", "--out", str(SYNTH), "--size", "demo", "--seed", "0")
    if not (SYNTH_VISDIAL / "synth.json").is_file():
        run("synth", "--out", str(SYNTH_VISDIAL), "--size", "demo", "--seed", "0",
            "--images", "2000", "--videos", "8")  # fmt: skip
    needed = set()
    for recipe in recipes.values():
        for ds in recipe["datasets"].values():
            store = Path(ds["features"]).name
            inputs = {**recipe.get("inputs", {}), **ds.get("inputs", {})}
            for feature in (f for fs in inputs.values() for f in _listed(fs)):
                needed.add((store, feature))
    for store in sorted({s for s, _ in needed}):
        if not (ROOT / "manifests" / store).is_dir():
            run(*MANIFESTS[store])
    for key in sorted(needed):
        if key not in FEATURES:
            raise SystemExit(f"bench/models.py does not know how to make {key}; add it to FEATURES")
        for command in FEATURES[key]:
            run(*command)


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def train_pair(family: str, out: Path, steps: int | None) -> dict[str, float]:
    """Train the recipe and its zeroed twin side by side; seconds per run."""
    recipe = ROOT / "configs" / f"{family}-synth.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs, started = {}, time.perf_counter()
    for visual in ("real", "zero"):
        args = ["fit", "--config", str(recipe), "--out", str(out / visual), "--visual", visual]
        args += ["--no-progress"] + (["--steps", str(steps)] if steps else [])
        out.mkdir(parents=True, exist_ok=True)
        procs[visual] = vdial(*args, tool="vdial-train", env=env, log=out / f"{visual}.log")
    seconds = {}
    for visual, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{family} ({visual}) failed: see {out / visual}.log")
        seconds[visual] = time.perf_counter() - started
    return seconds


def evaluate(run_dir: Path, recipe: dict) -> dict[str, dict]:
    """Metrics per dataset of the recipe (AVSD test, VisDial val)."""
    metrics = {}
    for name, ds in recipe["datasets"].items():
        store = Path(ds["features"]).name
        preds = run_dir / f"predictions_{name}.json"
        out = run_dir / f"metrics_{name}.json"
        if store == "synth_avsd":
            run("predict", "--run", str(run_dir), "--dataset", name, "--split", "test",
                "--out", str(preds), tool="vdial-train")  # fmt: skip
            run("eval", "avsd", "--predictions", str(preds), "--references", str(AVSD_REFS),
                "--question-types", str(AVSD_TYPES), "--scorer", "fast",
                "--out", str(out))  # fmt: skip
        else:
            run("predict", "--run", str(run_dir), "--dataset", name, "--split", "val",
                "--out", str(preds), tool="vdial-train")  # fmt: skip
            kind = json.loads(preds.with_name(preds.stem + ".meta.json").read_text())["output"]
            run("eval", "visdial", "--references", str(VISDIAL_VAL), "--dense",
                str(VISDIAL_DENSE), f"--{kind}", str(preds), "--question-types",
                str(VISDIAL_TYPES), "--out", str(out))  # fmt: skip
        metrics[store] = json.loads(out.read_text())
    return metrics


def loss_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t in ("train/loss", "val/loss")]
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags}


def plot(family: str, curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for visual, tags in curves.items():
        for tag, points in tags.items():
            steps, values = zip(*points, strict=True) if points else ((), ())
            style = "-" if tag == "train/loss" else "--"
            ax.plot(steps, values, style, label=f"{visual} {tag}")
    ax.set(title=f"{family}: weighted loss", xlabel="step", ylabel="loss", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


# (store, heading, overall columns as (label, path in the metrics), per-type metric)
SECTIONS = (
    (
        "synth_avsd",
        "AVSD test (fast scorer): BLEU-4, CIDEr, exact match overall and per question type",
        (("BLEU-4", ("overall", "Bleu_4")), ("CIDEr", ("overall", "CIDEr")),
         ("EM", ("overall", "exact_match"))),
        ("EM", "exact_match"),
    ),
    (
        "synth_visdial",
        "VisDial val: R@1, R@5, MRR, NDCG overall and R@1 per question type",
        (("R@1", ("overall", "r@1")), ("R@5", ("overall", "r@5")), ("MRR", ("overall", "mrr")),
         ("NDCG", ("overall", "ndcg"))),
        ("R@1", "r@1"),
    ),
)  # fmt: skip


def _get(metrics: dict, path: tuple[str, ...]):
    for key in path:
        metrics = metrics.get(key, {}) if isinstance(metrics, dict) else {}
    return metrics if isinstance(metrics, int | float) else None


def table(rows: list[dict]) -> str:
    lines = ["# Model table (synthetic data, `bench/models.py`)", ""]
    for store, heading, columns, (label, key) in SECTIONS:
        chosen = [r for r in rows if store in r["metrics"]]
        if not chosen:
            continue
        types = sorted({t for r in chosen for t in r["metrics"][store].get("by_type", {})})
        header = ["family", "visual", *(c for c, _ in columns), *(f"{label} {t}" for t in types)]
        lines += [f"## {heading}", "", "| " + " | ".join(header) + " |"]
        lines.append("|---" * len(header) + "|")
        for r in chosen:
            m = r["metrics"][store]
            cells = [_fmt(_get(m, path)) for _, path in columns]
            cells += [_fmt(_get(m, ("by_type", t, key))) for t in types]
            lines.append("| " + " | ".join([r["family"], r["visual"], *cells]) + " |")
        lines.append("")
    lines.append("Training time per run (two runs side by side, one thread each):")
    lines += [f"- {r['family']} ({r['visual']}): {r['seconds']:.0f} s" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated families (default: every one)")
    parser.add_argument("--steps", type=int, help="steps of every stage (a smoke run)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import yaml

    from vdial.train.models import MODELS

    families = args.families.split(",") if args.families else MODELS.names()
    recipes = {}
    for family in families:
        path = ROOT / "configs" / f"{family}-synth.yaml"
        if path.is_file():
            recipes[family] = yaml.safe_load(path.read_text())
        else:
            print(f"{family}: no {path.name}; left out of the table", flush=True)
    prepare(recipes)
    rows, plots = [], RESULTS / "models"
    plots.mkdir(parents=True, exist_ok=True)
    for family, recipe in recipes.items():
        out = plots / family
        seconds = train_pair(family, out, args.steps)
        curves = {}
        for visual in ("real", "zero"):
            metrics = evaluate(out / visual, recipe)
            rows.append(
                {"family": family, "visual": visual, "metrics": metrics, "seconds": seconds[visual]}
            )
            curves[visual] = loss_curves(out / visual)
        plot(family, curves, plots / f"{family}_loss.png")
    (RESULTS / "models.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "models.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
