"""Progress bars for long work (save, load, pack): rich bars on a terminal, silent
otherwise, so pipes and tests see only the real output.

    with byte_progress("Saving", total_bytes) as advance:
        advance(n)          # call as bytes go by
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO


def _is_tty(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


@contextlib.contextmanager
def byte_progress(description: str, total: int | None, *, stream: TextIO | None = None,
                  enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """A byte-counting progress bar on ``stream`` (default stderr) when it is a terminal
    (or ``enabled``); yields ``advance(n)``. Quiet and nearly free otherwise."""
    stream = stream if stream is not None else sys.stderr
    show = _is_tty(stream) if enabled is None else enabled
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    console = Console(file=stream, force_terminal=True if enabled else None)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextlib.contextmanager
def steps(description: str, total: int, *, stream: TextIO | None = None,
          enabled: bool | None = None) -> Iterator[Callable[[str], None]]:
    """A progress bar over ``total`` steps; yields ``step(label)``."""
    stream = stream if stream is not None else sys.stderr
    show = _is_tty(stream) if enabled is None else enabled
    if not show:
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    console = Console(file=stream, force_terminal=True if enabled else None)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[label]}"), console=console,
                  transient=True) as progress:
        task = progress.add_task(description, total=total, label="")

        def step(label: str) -> None:
            progress.update(task, advance=1, label=label)

        yield step
