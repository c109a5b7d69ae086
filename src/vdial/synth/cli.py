"""`vdial synth`: write the synthetic "shapes" dataset (videos, images, AVSD and VisDial JSON).

Only typer and the standard library are imported here; the generator (numpy, Pillow, PyAV)
is imported when the command runs, so `vdial --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(..., "--out", help="Output directory (created if missing)."),
    size: str = typer.Option("tiny", "--size", help="Preset: tiny, demo or bench."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives identical output."),
    videos: int | None = typer.Option(
        None, "--videos", help="Number of AVSD train videos (overrides the preset)."
    ),
    images: int | None = typer.Option(
        None, "--images", help="Number of VisDial train images (overrides the preset)."
    ),
) -> None:
    """Write a deterministic synthetic dataset whose questions need the pixels to answer."""
    from rich.console import Console
    from rich.table import Table

    from vdial.synth.api import SIZES, generate

    if size not in SIZES:
        raise typer.BadParameter(f"choose one of {', '.join(SIZES)}", param_hint="--size")
    for name, value in (("--videos", videos), ("--images", images)):
        if value is not None and value < 1:
            raise typer.BadParameter("must be at least 1", param_hint=name)
    summary = generate(out, size=size, seed=seed, videos=videos, images=images)
    table = Table(title=f"vdial synth: size={summary.size} seed={summary.seed}")
    table.add_column("dataset")
    for split in summary.videos:
        table.add_column(split, justify="right")
    table.add_column("written to")
    table.add_row("AVSD videos", *map(str, summary.videos.values()), str(summary.videos_dir))
    table.add_row("AVSD dialogs", *map(str, summary.videos.values()), str(summary.avsd_dir))
    table.add_row("VisDial images", *map(str, summary.images.values()), str(summary.images_dir))
    table.add_row("VisDial dialogs", *map(str, summary.images.values()), str(summary.visdial_dir))
    console = Console()
    console.print(table)
    console.print(f"ground truth: {summary.synth_json}")
