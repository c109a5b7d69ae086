"""The `vdial` command: synthetic data, manifests, extraction, the feature cache, evaluation.

Each stage owns its sub-commands in its own `cli.py`; this module only mounts them. Nothing
heavy is imported here so that `vdial --help` answers at once.
"""

from __future__ import annotations

import typer

from vdial import __version__
from vdial.cache.cli import app as cache_app
from vdial.evaluate.cli import app as eval_app
from vdial.extract.cli import encoders, extract, extract_text
from vdial.manifests.cli import app as manifest_app
from vdial.synth.cli import synth

app = typer.Typer(
    name="vdial",
    help="Cache frozen vision-encoder features for video/visual dialog, and evaluate models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vdial {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vdial: extract once, train many times."""


app.command("synth")(synth)
app.add_typer(manifest_app, name="manifest", help="Build dataset manifests (Parquet).")
app.command("extract")(extract)
app.command("extract-text")(extract_text)
app.command("encoders")(encoders)
app.add_typer(cache_app, name="cache", help="Inspect, verify and derive cached features.")
app.add_typer(eval_app, name="eval", help="Score predictions with the benchmarks' metrics.")
