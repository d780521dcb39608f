"""Delete a generation: its files (in the home or in object storage) and its rows. `aigen delete` and the gallery.

A generation that some process is making is refused (`Running`): its run holds the generation's lock file (embedded
shape), or the cluster's queue holds its workflows. While the files and rows go, this process holds that same
lock, so no `aigen retry` (or Resume from the gallery) can start on it half-way.

Files first, rows second: if the storage fails part-way, the generation is still listed and deleting it again
finishes the job (a file already gone counts as deleted). Only keys under the generation's own folder,
``generated_content/<user>/<generation>/``, are touched, whatever the rows say. A line is kept in
``deleted_generations`` (id, user, when it was asked for, how many assets; no prompt) so that the daily asset
limit still counts it. Events stay: they are the record of who did what, this deletion included.
"""

from __future__ import annotations

import contextlib
import shutil
from datetime import datetime
from pathlib import Path

from aigen.config import Home
from aigen.errors import Busy, NotFound


class Running(Busy):
    """The generation is being made right now."""

    code = "running"


def running_message(gen_id: str) -> Running:
    return Running(f"generation {gen_id} is being made right now: it cannot be deleted while it runs",
                   hint="wait for it to finish (or stop it: Ctrl-C its `aigen` process, or `aigen cancel ID` in "
                        "cluster mode), then delete it")


def cluster_active(home: Home, store, gen_id: str) -> bool:
    """Whether the cluster's queues still hold work for this generation (asked only where workers ever ran)."""
    from aigen.config import database_url
    from aigen.pipeline.background import queued_anywhere

    url = database_url(None, home.path)
    if url is None or getattr(store, "backend", "sqlite") != "postgresql":
        return False
    return queued_anywhere(url, gen_id, store)


@contextlib.contextmanager
def _hold_run_lock(home: Home, gen_id: str):
    from aigen.pipeline.run import run_lock

    try:
        cm = run_lock(home, gen_id)
        cm.__enter__()
    except Busy:
        raise running_message(gen_id) from None
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


def generation_prefix(gen: dict) -> str:
    """The storage folder of a generation's files: ``generated_content/<user>/<id>/`` (checked, one segment each)."""
    from aigen.storage import content_key

    return content_key(gen["user_id"], gen["id"], "x")[:-1]


def delete_generation(home: Home, store, gen_id: str, *, storage=None, user_id: str | None = None,
                      now: datetime | None = None) -> dict:
    """Delete one generation's files and rows; return {"id", "user_id", "files", "bytes"}.

    With `user_id`, a generation of anyone else is NotFound (the gallery answers 404 to both).
    Raises Running when it is being made, StorageError when the file store fails (nothing of the rows is
    removed then; deleting again finishes).
    """
    from aigen.store.core import iso, utcnow

    row = store.query_one("SELECT * FROM generations WHERE id = ?", (gen_id,))
    if row is None or (user_id is not None and row["user_id"] != user_id):
        raise NotFound(f"unknown generation id {gen_id!r}", hint="list generations with `aigen status`")
    if storage is None:
        from aigen.storage import from_config

        storage = from_config(home.path)
    with _hold_run_lock(home, gen_id):
        if row["status"] == "Processing" and cluster_active(home, store, gen_id):
            raise running_message(gen_id)
        prefix = generation_prefix(row)
        keys = storage.list(prefix)
        sizes = {a["path"]: a["bytes"] or 0 for a in store.assets(gen_id) if a.get("path")}
        for key in keys:
            storage.delete(key)
        _remove_local_leftovers(home, storage, row)
        assets = (row.get("image_count") or 0) + (row.get("video_count") or 0)
        with store.transaction() as db:
            db.conn.execute(
                "INSERT INTO deleted_generations (id, user_id, created_at, deleted_at, assets) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (gen_id, row["user_id"], row["created_at"], iso(now or utcnow()), assets))
            db.conn.execute("DELETE FROM notifications WHERE generation_id = ?", (gen_id,))
            db.conn.execute("DELETE FROM assets WHERE generation_id = ?", (gen_id,))
            db.conn.execute("DELETE FROM generations WHERE id = ?", (gen_id,))
        # The lock file goes last, still held: a retry that opens it after this finds no generation.
        with contextlib.suppress(OSError):
            (home.path / "locks" / f"{gen_id}.lock").unlink()
    return {"id": gen_id, "user_id": row["user_id"], "prompt": row["prompt"], "files": len(keys),
            "bytes": sum(sizes.get(k, 0) for k in keys)}


def _remove_local_leftovers(home: Home, storage, row: dict) -> None:
    """The now empty folder (home storage), the scratch folder of an S3 run and the run's log: this machine's."""
    from aigen.storage.local import LocalStorage

    if isinstance(storage, LocalStorage):
        folder = storage.path_of(generation_prefix(row) + "x").parent
        # Only what list() does not show: half-written `.part` files of a killed run, then the folder.
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    from aigen.pipeline.run import SCRATCH_DIR

    scratch = home.path / SCRATCH_DIR / row["id"]
    if scratch.is_dir():
        shutil.rmtree(scratch, ignore_errors=True)
    log = home.path / "logs" / f"{row['id']}.log"
    with contextlib.suppress(OSError):
        Path(log).unlink()
