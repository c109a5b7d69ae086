"""The training progress bar: stage, step, loss, validation loss, rates, data wait and ETA."""

from __future__ import annotations

import time


class TrainProgress:
    """A rich bar (silent when disabled, e.g. on ranks other than 0 or with --no-progress)."""

    def __init__(self, enabled: bool, stage: str, start: int, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(f"[bold]{stage}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task(stage, total=total, completed=start, info="")
        self.t0, self.start = time.perf_counter(), start

    def update(
        self, step: int, loss: float, val: float | None, samples_per_step: int, wait_share: float
    ) -> None:
        if self.bar is None:
            return
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        info = f"loss {loss:.3f}" + (f" val {val:.3f}" if val is not None else "")
        info += f" {rate:.2f} steps/s {rate * samples_per_step:.0f} samples/s"
        info += f" data wait {100 * wait_share:.0f}%"
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
