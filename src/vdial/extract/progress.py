"""The extraction progress bar: videos/s, frames/s, ETA and failures, updated as work lands.

A local run advances per video as it leaves the decoder; a cluster run advances per task as
its result arrives (the client only learns of a task's videos when the task ends).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any


class ExtractProgress:
    """A rich progress bar over `total` media items; a no-op when disabled."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total, self.enabled = total, enabled
        self.videos = self.frames = self.failed = 0
        self._bar: Any = None
        self._task: Any = None
        self._start = 0.0  # set on entering

    def __enter__(self) -> ExtractProgress:
        self._start = time.perf_counter()
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]extract"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TextColumn("[red]failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("extract", total=self.total, rates="", failed=0)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)

    def _advance(self, videos: int, frames: int, failed: int) -> None:
        self.videos += videos
        self.frames += frames
        self.failed += failed
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rates = f"{self.videos / elapsed:.2f} videos/s {self.frames / elapsed:.1f} frames/s"
        self._bar.update(self._task, advance=videos, rates=rates, failed=self.failed)

    def item(self, item: Any, frames: int, failed: bool) -> None:
        """One media item left the decoder (local runs)."""
        self._advance(1, frames, int(failed))

    def task(self, result: Any) -> None:
        """A task's result arrived (cluster runs)."""
        self._advance(result.videos, result.frames, len(result.failed))
