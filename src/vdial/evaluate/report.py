"""Compare training runs: loss curves (PNG) and metric tables (markdown and rich).

A run directory holds `metrics.json` (written by `vdial eval avsd`) and TensorBoard event files
under `tb/` with the scalars `train/loss` and, where validation ran, `val/loss`. The report is
meant to be read side by side with the runs, e.g. `runs/demo/report.md` next to
`runs/demo/report_loss.png`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from vdial.evaluate.avsd import METRIC_KEYS, EvaluationError, read_json

LOSS_TAGS = ("train/loss", "val/loss")
HEADERS = {
    "Bleu_1": "BLEU-1",
    "Bleu_2": "BLEU-2",
    "Bleu_3": "BLEU-3",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr",
    "exact_match": "exact match",
}
TYPE_KEYS = ("exact_match", "CIDEr")


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What the report needs from one run directory."""

    name: str  # the run directory's name, used as the row label
    path: Path  # the run directory
    metrics: dict[str, Any]  # the metrics.json dict
    # tag -> [(step, value)], for the LOSS_TAGS present in the run's TensorBoard logs
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def read_losses(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The loss scalars logged under `tb_dir` (all event files of the directory, in order)."""
    if not tb_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # size_guidance 0 keeps every scalar instead of TensorBoard's default reservoir sample.
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    present = set(accumulator.Tags().get("scalars", []))
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in LOSS_TAGS
        if tag in present
    }


def load_run(run_dir: Path) -> RunRecord:
    """Read one run directory; a missing or malformed metrics.json is an error naming it."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise EvaluationError(f"{run_dir}: no metrics.json (run `vdial eval avsd` first)")
    metrics = read_json(metrics_path)
    overall = metrics.get("overall") if isinstance(metrics, dict) else None
    if not isinstance(overall, dict) or any(k not in overall for k in METRIC_KEYS):
        raise EvaluationError(
            f"{metrics_path}: expected an 'overall' entry with the keys {list(METRIC_KEYS)}"
        )
    return RunRecord(
        name=run_dir.name, path=run_dir, metrics=metrics, losses=read_losses(run_dir / "tb")
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _types(runs: list[RunRecord]) -> list[str]:
    return sorted({t for run in runs for t in run.metrics.get("by_type", {})})


def _type_value(run: RunRecord, kind: str, key: str) -> float | None:
    return run.metrics.get("by_type", {}).get(kind, {}).get(key)


def overall_rows(runs: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the overall table: one row per run."""
    header = ["run", "n", *(HEADERS[k] for k in METRIC_KEYS)]
    rows = [
        [
            run.name,
            str(run.metrics.get("n", "–")),
            *(_fmt(run.metrics["overall"][k]) for k in METRIC_KEYS),
        ]
        for run in runs
    ]
    return header, rows


def type_rows(runs: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-question-type table: a row per type, two columns per run."""
    header = ["type", "n", *(f"{run.name} {HEADERS[k]}" for run in runs for k in TYPE_KEYS)]
    rows = []
    for kind in _types(runs):
        # Runs scored on different reference sets may count a type differently: show each.
        counts = {_type_value(run, kind, "n") for run in runs} - {None}
        rows.append(
            [
                kind,
                "/".join(str(c) for c in sorted(counts)),
                *(_fmt(_type_value(run, kind, k)) for run in runs for k in TYPE_KEYS),
            ]
        )
    return header, rows


def rich_tables(runs: list[RunRecord]) -> list[Table]:
    """The overall table and, when any run has per-type scores, the per-type table."""
    tables = []
    for title, (header, rows) in (
        ("AVSD metrics", overall_rows(runs)),
        ("By question type", type_rows(runs)),
    ):
        if not rows:
            continue
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return tables


def metrics_table(result: dict[str, Any], *, title: str = "AVSD metrics") -> Table:
    """One evaluation result as a table: an "overall" row, then a row per question type.

    Unavailable metrics (METEOR without Java) show as "–". The compact style keeps the ten
    columns whole in an 80-column terminal instead of truncating the numbers.
    """
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0, 0, 1),
        collapse_padding=True,
    )
    table.add_column("subset")
    for name in ("n", *(HEADERS[k] for k in METRIC_KEYS)):
        table.add_column(name, justify="right")
    rows = [("overall", result["n"], result["overall"])]
    rows += [(kind, scores["n"], scores) for kind, scores in result.get("by_type", {}).items()]
    for name, n, scores in rows:
        table.add_row(name, str(n), *(_fmt(scores[k]) for k in METRIC_KEYS))
    return table


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def plot_losses(runs: list[RunRecord], png: Path) -> Path:
    """Training (solid) and validation (dashed) loss of every run against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot global state, no display needed.
    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    plotted = False
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        for tag, style in zip(LOSS_TAGS, ("-", "--"), strict=True):
            points = run.losses.get(tag)
            if points:
                steps, values = zip(*points, strict=True)
                axes.plot(
                    steps,
                    values,
                    style,
                    color=colour,
                    label=f"{run.name} {tag}",
                    marker="o" if tag == "val/loss" else None,
                    markersize=3,
                )
                plotted = True
    if plotted:
        axes.legend(fontsize="small")
        # Cross-entropy falls by orders of magnitude early on; a log axis keeps the later,
        # smaller differences between runs visible.
        axes.set_yscale("log")
    else:
        axes.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("Loss curves")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png)
    return png


def compare_runs(run_dirs: list[Path], out: Path, *, console: Console | None = None) -> Path:
    """Write the markdown report `out` and `<out stem>_loss.png` beside it; return `out`.

    With `console`, the same tables are printed there.
    """
    if not run_dirs:
        raise EvaluationError("no run directories to compare")
    runs = [load_run(Path(d)) for d in run_dirs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot_losses(runs, out.with_name(f"{out.stem}_loss.png"))
    lines = ["# Run comparison", ""]
    lines += [f"- `{run.name}`: {run.path}" for run in runs]
    lines.append("")
    # Numbers from different protocols or reference files are not comparable: say so.
    for key in ("protocol", "normalisation", "references_sha256"):
        values = {run.metrics.get(key) for run in runs}
        if len(values) > 1:
            lines += [
                f"**Warning:** the runs differ in `{key}` ({sorted(map(str, values))}); "
                "their numbers are not directly comparable.",
                "",
            ]
    missing = [
        f"`{run.name}` ({len(run.metrics['missing'])})"
        for run in runs
        if run.metrics.get("missing")
    ]
    if missing:
        lines += [f"Dialogs without a prediction, scored as empty: {', '.join(missing)}.", ""]
    lines += ["## Loss", "", f"![loss curves]({png.name})", ""]
    no_logs = [run.name for run in runs if not run.losses]
    if no_logs:
        lines += [f"No `train/loss` or `val/loss` logged for: {', '.join(no_logs)}.", ""]
    protocol = runs[0].metrics.get("protocol", "?")
    lines += [
        f"## Metrics ({protocol}, normalisation {runs[0].metrics.get('normalisation', '?')})",
        "",
    ]
    lines += _markdown_table(*overall_rows(runs)) + [""]
    header, rows = type_rows(runs)
    if rows:
        lines += ["## By question type", ""] + _markdown_table(header, rows) + [""]
    out.write_text("\n".join(lines), encoding="utf-8")
    if console is not None:
        for table in rich_tables(runs):
            console.print(table)
    return out
