"""Progress bars of the `ovault` CLI, drawn with rich on standard error.

One mechanism for every long command: `JobProgress` for a job the server
runs (``--wait``: one bar per VM, with the rate and ETA the server computes,
never measured here), `TaskProgress` for work the CLI does itself (`verify`,
`export`, `gc`: one bar per step, fed by the store's ``progress(done,
total)`` callbacks). Bars are drawn only on a terminal; elsewhere a job
prints one line per state change and local work prints nothing, so output
that goes to logs or scripts stays clean. ``--json`` turns both off.
"""
from __future__ import annotations

from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                           TextColumn, TimeRemainingColumn, TransferSpeedColumn)

from .common import human


def _console() -> Console:
    return Console(stderr=True)


def _eta(seconds) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class JobProgress:
    """One bar per VM of a job, from the job's REST view; use as a context manager."""

    def __init__(self, console: Console | None = None):
        self.console = console or _console()
        self.tty = self.console.is_terminal
        self.bars = Progress(
            TextColumn("{task.description:<20}"), TextColumn("{task.fields[state]:<9}"), BarColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[size]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[error]}", style="red"),
            console=self.console, disable=not self.tty)
        self.tasks: dict[str, int] = {}
        self.last_state: dict[str, str] = {}

    def __enter__(self) -> "JobProgress":
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def draw(self, job: dict) -> None:
        for m in job["machines"]:
            name = (m.get("vm_name") or m["vm_id"])[:20]
            fields = {
                "state": m["state"],
                "size": f"{human(m['bytes_done'])}/{human(m['bytes_total'])}",
                "rate": f"{human(m['rate_bps'])}/s" if m.get("rate_bps") is not None else "",
                "eta": _eta(m.get("eta_seconds")),
                "error": m.get("error") or "",
            }
            total = m["bytes_total"] or None
            done = m["bytes_done"] if total else 0
            if m["id"] not in self.tasks:
                self.tasks[m["id"]] = self.bars.add_task(name, total=total, completed=done, **fields)
            else:
                self.bars.update(self.tasks[m["id"]], total=total, completed=done, **fields)
            if not self.tty and self.last_state.get(m["id"]) != m["state"]:
                self.last_state[m["id"]] = m["state"]
                self.console.print(f"{name:<20} {m['state']:<9} {fields['size']}"
                                   + (f"  {fields['error']}" if fields["error"] else ""),
                                   highlight=False, soft_wrap=True)


class TaskProgress:
    """Bars for work done here; ``step(description)`` gives a ``progress(done, total)`` callback."""

    def __init__(self, unit: str = "bytes", *, enabled: bool = True, console: Console | None = None):
        self.console = console or _console()
        counts = (MofNCompleteColumn(), TextColumn(unit)) if unit != "bytes" else (DownloadColumn(),
                                                                                   TransferSpeedColumn())
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), *counts,
                             TimeRemainingColumn(), console=self.console,
                             disable=not (enabled and self.console.is_terminal), transient=False)

    def __enter__(self) -> "TaskProgress":
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def step(self, description: str) -> Callable[[int, int], None]:
        task = self.bars.add_task(description, total=None)

        def progress(done: int, total: int) -> None:
            self.bars.update(task, completed=done, total=total or None)

        return progress
