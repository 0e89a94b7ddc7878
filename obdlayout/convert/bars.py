"""Progress bars on a terminal (rich), one per layer being converted, fed by the events of progress.py."""

from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from .progress import Events, LayerFinished, LayerProgress, LayerStarted, Message, event_line


def show_bars(events: Events, stream: TextIO) -> None:
    """Show `events` as bars on `stream` until the sending side closes."""
    console = Console(file=stream)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=False) as bars:
        while (event := events.receive()) is not None:
            if isinstance(event, LayerStarted):
                tasks[event.key] = bars.add_task(event.label, total=None)
            elif isinstance(event, LayerProgress) and event.key in tasks:
                bars.update(tasks[event.key], completed=event.done)
            elif isinstance(event, LayerFinished):
                task = tasks.pop(event.key, None)
                if task is not None:
                    bars.update(task, total=event.tar_bytes, completed=event.tar_bytes)
                else:
                    bars.console.print(event_line(event))
            elif isinstance(event, Message):
                bars.console.print(event_line(event), markup=False)
