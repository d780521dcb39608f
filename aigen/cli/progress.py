"""Live progress for a run: one row per asset and an overall bar (Rich)."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.table import Table

from aigen.cli.output import escape, human_bytes

_STATE_STYLE = {"queued": "dim", "running": "cyan", "done": "green", "failed": "red"}


class RunDisplay:
    """Receives pipeline events from worker threads and renders them.

    On a terminal it is a Rich live display; otherwise (pipes, CI, tests) it
    prints one line per finished asset, which reads well in a log.
    """

    def __init__(self, console: Console, total: int, *, quiet: bool = False):
        self.console = getattr(console, "real", console)  # Rich's own, for Progress(console=...)
        self.total = total
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._lock = threading.Lock()
        self._progress = None
        self._tasks: dict[int, int] = {}
        self._overall = None
        self._final: set[int] = set()
        self.started = time.monotonic()

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                TaskProgressColumn(),
                TextColumn("{task.fields[state]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._overall = self._progress.add_task("[bold]all assets", total=self.total, state="")
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, asset: dict, state: str, fraction: float | None, error: str | None) -> None:
        with self._lock:
            aid = asset["id"]
            label = f"{asset['kind']} {asset['idx']} · {asset['provider']}"
            if state in ("done", "failed"):
                if aid in self._final:
                    return
                self._final.add(aid)
            if self._progress is not None:
                if aid not in self._tasks:
                    self._tasks[aid] = self._progress.add_task(label, total=1.0, state="")
                style = _STATE_STYLE.get(state, "")
                text = f"[{style}]{state}[/]"
                if state == "failed" and error:
                    text += f" [red]{escape(error[:60])}[/]"
                kw = {"state": text}
                if fraction is not None:
                    kw["completed"] = fraction
                if state == "done":
                    kw["completed"] = 1.0
                self._progress.update(self._tasks[aid], **kw)
                self._progress.update(self._overall, completed=len(self._final), state=f"{len(self._final)}/{self.total}")
            elif not self.quiet and state in ("done", "failed"):
                n = len(self._final)
                if state == "done":
                    self.console.print(f"[{n}/{self.total}] {label}: [green]done[/] {escape(asset.get('path') or '')}")
                else:
                    self.console.print(f"[{n}/{self.total}] {label}: [red]failed[/] {escape(error or '')}")


def files_table(assets: list[dict], home_path) -> Table:
    from pathlib import PurePosixPath

    # File names only: the folder is the same for all and goes in the caption,
    # which keeps the table readable at 80 columns.
    folders = {str(PurePosixPath(a["path"]).parent) for a in assets if a.get("path")}
    from aigen.config import stored_location

    caption = f"in {stored_location(home_path, folders.pop())}" if len(folders) == 1 else None
    table = Table(title="Files", caption=escape(caption) if caption else None, caption_justify="left",
                  show_lines=False)
    table.add_column("asset")
    table.add_column("status")
    table.add_column("file / error", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("dimensions")
    for a in assets:
        dims = f"{a['width']}x{a['height']}" if a.get("width") else ""
        if a.get("duration"):
            dims += f", {a['duration']:.1f}s"
        status = a["status"]
        style = _STATE_STYLE.get(status, "")
        if a.get("path"):
            where = PurePosixPath(a["path"]).name if caption else stored_location(home_path, a["path"])
            if a.get("note"):
                where += f" ({a['note']})"  # kept, though not as asked
        else:
            where = a.get("error") or ""
        table.add_row(
            f"{a['kind']} {a['idx']}", f"[{style}]{status}[/]", escape(where), human_bytes(a.get("bytes")), dims
        )
    return table
