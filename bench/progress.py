"""A progress bar for the benchmark ramps (rich), so a long run shows where it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def ramp_progress(label: str, steps: int) -> Iterator[Progress]:
    """A bar of ``steps`` for ``label``; ``progress.console.print`` keeps lines above it."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"
                  "/{task.total} steps"), TimeElapsedColumn(), transient=True) as progress:
        progress.add_task(label, total=steps)
        yield progress


def advance(progress: Progress) -> None:
    progress.advance(progress.task_ids[0])
