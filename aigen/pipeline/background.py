"""Start a generation's run without waiting for it: what `generate --detach` does, for the CLI and the gallery.

Embedded shape: a detached `aigen retry ID` process in its own session (it outlives the caller, takes the run
lock, and resumes from the store like any retry). Cluster shape with a live worker: the generation is enqueued
for the workers. Nothing here imports the cluster code unless a cluster database is configured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def spawn_detached(home_path: Path, gen_id: str, *, include_refused: bool = False) -> tuple[int, Path]:
    """Start `aigen retry ID` in its own session so it outlives this process; returns (pid, log path)."""
    log_dir = Path(home_path) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{gen_id}.log"
    cmd = [sys.executable, "-m", "aigen", "--home", str(home_path), "retry", gen_id]
    if include_refused:
        cmd.append("--include-refused")
    with open(log_path, "ab") as log:
        kwargs: dict = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **kwargs)
    return proc.pid, log_path


def use_workers(store, url: str | None, *, now=None) -> bool:
    """Whether to enqueue for `aigen worker` processes: a cluster database with at least one live worker
    (a heartbeat within AIGEN_WORKER_DEAD_AFTER seconds of `now`, default the current time).

    Without one (a PostgreSQL store nobody runs workers on, or every worker stopped),
    generate and retry make the assets in this process, as in embedded mode.
    """
    if url is None:
        return False
    from datetime import datetime, timedelta, timezone

    from aigen.cluster.worker import dead_after_from
    from aigen.store.core import iso

    # The workers' own reading of the setting: a bad value is refused here too (exit 2), not replaced by 60.
    dead_after = dead_after_from(os.environ)
    cutoff = iso((now or datetime.now(timezone.utc)) - timedelta(seconds=dead_after))
    row = store.query_one("SELECT count(*) AS n FROM workers WHERE state IN ('alive', 'draining') "
                          "AND heartbeat_at >= ?", (cutoff,))
    return bool(row and row["n"])


def active_workflows(url: str, gen_id: str) -> int:
    """How many of the generation's DBOS workflows are queued or running (cluster shape)."""
    from aigen.cluster import require_dbos

    require_dbos()
    from aigen.cluster.engine import Client

    client = Client(url)
    try:
        return len(client.workflows(gen_id, active_only=True))
    finally:
        client.close()


def queued_anywhere(url: str, gen_id: str, store) -> bool:
    """Whether the generation still has workflows queued or running in DBOS (only asked where workers ever ran)."""
    if not store.query_one("SELECT count(*) AS n FROM workers")["n"]:
        return False
    return active_workflows(url, gen_id) > 0


def start_in_background(home_path: Path, store, gen_id: str, *, include_refused: bool = False) -> dict:
    """Start (or resume) a generation's run and return at once.

    Returns {"queued": True} when the cluster's workers take it, else {"queued": False, "pid": ..., "log": ...}.
    The caller has already written the generation (or reopened it for a retry).
    """
    from aigen.cluster import database_url

    url = database_url(home=Path(home_path))
    if use_workers(store, url):
        from aigen.cluster import require_dbos

        require_dbos()
        from aigen.cluster.engine import Client, first_phase

        client = Client(url)
        try:
            client.enqueue_generation(gen_id, include_refused=include_refused, first_assets=first_phase(store, gen_id))
        finally:
            client.close()
        return {"queued": True}
    pid, log_path = spawn_detached(Path(home_path), gen_id, include_refused=include_refused)
    store.set_generation_fields(gen_id, log_path=str(log_path))
    return {"queued": False, "pid": pid, "log": str(log_path)}
