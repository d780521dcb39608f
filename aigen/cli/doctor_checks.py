"""The checks and mends of `aigen doctor` (the command is in aigen/cli/doctor.py).

Checking never writes: the database is opened read-only (``immutable`` when no
write-ahead log exists, else a private copy of the database and its log in a
temporary folder outside the home, so not even a ``-shm`` file appears), lock
files are only tested, files only read. Each mend is its own flag.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from aigen.cli.output import console, escape


@dataclass
class Problem:
    kind: str
    message: str
    remedy: str
    path: str | None = None
    generation_id: str | None = None
    asset_id: int | None = None
    mend: str | None = None  # the flag that mends it, when doctor can
    mended: str | None = None  # what was done, when it was

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Report:
    home: Path
    deep: bool
    database: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    thumbnails: dict | None = None  # with --thumbnails: {"made": N, "failed": N}

    def add(self, **kw) -> Problem:
        p = Problem(**kw)
        self.problems.append(p)
        return p


def _q(path) -> str:
    return shlex.quote(str(path))


def _open_read_only(db_path: Path, scratch: Path) -> "sqlite3.Connection":
    """A connection that cannot change the home, not even by creating -wal/-shm files."""
    import sqlite3

    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists():
        # What is committed may live in the log: read a private copy of both.
        import shutil

        copy = scratch / db_path.name
        shutil.copyfile(db_path, copy)
        try:
            shutil.copyfile(wal, scratch / wal.name)
        except FileNotFoundError:  # checkpointed and removed meanwhile: the file alone is complete
            pass
        uri = copy.resolve().as_uri()
    else:
        uri = db_path.resolve().as_uri() + "?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    return conn


def _pid_alive(pid: int) -> bool:
    from aigen.locks import pid_alive

    return pid == os.getpid() or pid_alive(pid)


def _temp_writer_pid(name: str, suffix: str) -> int | None:
    """The pid in a temporary name ".target.PID.HEX<suffix>" (None when it has none)."""
    parts = name[: -len(suffix)].split(".")
    # ".image_1.png.PID.HEX.part", ".keys.json.PID.HEX.tmp", and the daemon's ".notify-daemon.PID.tmp"
    for candidate in parts[-2:-1] + parts[-1:]:
        if candidate.isdigit():
            return int(candidate)
    return None


def _lock_held(path: Path) -> bool:
    try:
        from aigen.locks import is_held
    except ImportError:  # pragma: no cover
        return True
    try:
        return is_held(path)
    except ImportError:  # pragma: no cover - no fcntl: cannot tell, assume it is in use
        return True


class _EmptyDatabase(Exception):
    """Internal: aigen.db has no tables yet (nothing to check in it)."""


def _broken_database_file(db_path: Path) -> str | None:
    """Why aigen.db cannot be used at all (as every command refuses it), or None."""
    from aigen.errors import BrokenDatabase
    from aigen.store.core import check_database_file

    try:
        check_database_file(db_path)
    except BrokenDatabase as e:
        m = re.search(r"cannot be used: (.*?)\. It was not modified", e.message, re.S)
        return m.group(1) if m else e.message
    return None


def _read_pg(report: Report, url: str) -> tuple[dict | None, list[dict]]:
    from aigen.errors import AigenError
    from aigen.store import pg_store_class

    PgStore = pg_store_class()
    report.database["skipped"] = "PRAGMA quick_check and the write-ahead log (SQLite only)"
    try:
        store = PgStore(url, readonly=True)
    except AigenError as e:
        if e.code != "read_only_home":  # a fresh or older database: nothing to check in it yet
            raise
        report.database["empty"] = True
        return {}, []
    try:
        generations = {r["id"]: r for r in store.query("SELECT id, user_id, status FROM generations")}
        assets = store.query("SELECT id, generation_id, kind, idx, path, bytes, sha256 FROM assets "
                             "WHERE status = 'done' ORDER BY generation_id, kind, idx")
    finally:
        store.close_all()
    return generations, assets


def check_home(home, *, deep: bool, storage=None, env=None) -> Report:
    from aigen.pipeline.files import PART_SUFFIX, sha256_file

    report = Report(home.path, deep)
    db_path = home.db_path
    content = home.content_dir
    locks = home.path / "locks"
    generations: dict[str, dict] | None = None
    assets: list[dict] = []
    from aigen.config import database_url

    url = database_url(None, home.path)
    if url is not None:
        from aigen.errors import redact_url

        report.database = {"path": redact_url(url), "exists": True, "backend": "postgresql"}
        broken = None
    else:
        report.database = {"path": str(db_path), "exists": db_path.exists()}
        broken = _broken_database_file(db_path)
    if url is not None:
        # The PostgreSQL store: quick_check and the write-ahead log are SQLite's; the server
        # keeps its own integrity. Read what the other checks need through the store.
        generations, assets = _read_pg(report, url)
    elif broken is not None:
        # A directory, a 0-byte file beside generations, a file that is not SQLite: the same
        # refusal every other command gives, and a mend that fits it (`.recover` cannot read these).
        generations = None
        report.database["error"] = broken
        salvage = "" if not re.search(r"cut short|header is damaged", broken) else (
            f", or try to salvage it: sqlite3 {_q(db_path)} .recover | sqlite3 "
            f"{_q(db_path.with_name('aigen.recovered.db'))}")
        report.add(
            kind="database_broken",
            message=f"the database {db_path} cannot be used: {broken}",
            path=str(db_path),
            remedy=f"move it aside (mv {_q(db_path)} {_q(str(db_path) + '.broken')}) and restore it from a "
                   f"backup{salvage}",
        )
    elif db_path.exists():
        import sqlite3
        import tempfile

        with tempfile.TemporaryDirectory(prefix="aigen-doctor-") as scratch:
            conn = None
            try:
                conn = _open_read_only(db_path, Path(scratch))
                rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
                report.database["quick_check"] = rows[:20]
                if rows != ["ok"]:
                    fixed = db_path.with_name("aigen.recovered.db")
                    report.add(
                        kind="database_corrupt",
                        message=f"the database fails PRAGMA quick_check: {'; '.join(rows[:5])}",
                        path=str(db_path),
                        remedy=(f"stop every aigen process, then: sqlite3 {_q(db_path)} .recover | sqlite3 {_q(fixed)}"
                                f" && mv {_q(db_path)} {_q(str(db_path) + '.corrupt')} && mv {_q(fixed)} {_q(db_path)}"),
                    )
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables and rows == ["ok"]:
                    # A 0-byte file in a home without generations: a new database, as every command takes it.
                    report.database["empty"] = True
                    generations, assets = {}, []
                    raise _EmptyDatabase
                generations = {r["id"]: dict(r) for r in conn.execute("SELECT id, user_id, status FROM generations")}
                assets = [dict(r) for r in conn.execute(
                    "SELECT id, generation_id, kind, idx, path, bytes, sha256 FROM assets "
                    "WHERE status = 'done' ORDER BY generation_id, kind, idx"
                )]
            except _EmptyDatabase:
                pass
            except (sqlite3.Error, OSError) as e:
                generations = None
                report.database["error"] = str(e)
                report.add(
                    kind="database_unreadable",
                    message=f"the database cannot be read: {e}",
                    path=str(db_path),
                    remedy=(f"restore {_q(db_path)} from a backup, or try to salvage it: sqlite3 {_q(db_path)} "
                            f".recover | sqlite3 {_q(db_path.with_name('aigen.recovered.db'))}"),
                )
            finally:
                if conn is not None:
                    conn.close()
    else:
        generations = {}
    report.database["generations"] = len(generations) if generations is not None else None
    report.database["files_checked"] = len(assets)

    # Every file the database lists exists, with its recorded size (and sha256 with --deep).
    if storage is None:
        from aigen.storage import from_config

        storage = from_config(home.path, env)
    from aigen.storage.local import LocalStorage

    in_folder = isinstance(storage, LocalStorage)
    for a in assets:
        if not a["path"]:
            continue
        gid = a["generation_id"]
        what = f"{a['kind']} {a['idx']} of generation {gid}"
        remedy = f"aigen doctor --requeue-bad && aigen retry {gid}"
        if not in_folder:
            _check_stored(report, storage, a, what, remedy, deep)
            continue
        path = storage.root / a["path"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            report.add(kind="file_missing", message=f"{what}: {path} is missing", path=str(path),
                       generation_id=gid, asset_id=a["id"], remedy=remedy, mend="--requeue-bad")
            continue
        if a["bytes"] is not None and size != a["bytes"]:
            report.add(kind="file_size_mismatch",
                       message=f"{what}: {path} has {size} bytes, the database recorded {a['bytes']}",
                       path=str(path), generation_id=gid, asset_id=a["id"], remedy=remedy, mend="--requeue-bad")
            continue
        if deep and a["sha256"] and sha256_file(path) != a["sha256"]:
            report.add(kind="file_hash_mismatch",
                       message=f"{what}: {path} does not have its recorded sha256 (the bytes changed)",
                       path=str(path), generation_id=gid, asset_id=a["id"], remedy=remedy, mend="--requeue-bad")

    # Generations left Processing by a run that was killed.
    for gid, g in sorted((generations or {}).items()):
        if g["status"] == "Processing" and not _lock_held(locks / f"{gid}.lock"):
            report.add(kind="stalled", message=f"generation {gid} is Processing but no process works on it",
                       generation_id=gid, remedy=f"aigen retry {gid}")

    # Folders under generated_content/ that no row knows (a lost write-ahead log, a restored backup).
    if generations is not None and content.is_dir():
        known = {(g["user_id"], gid) for gid, g in generations.items()}
        for user_dir in sorted(p for p in content.iterdir() if p.is_dir()):
            for gen_dir in sorted(p for p in user_dir.iterdir() if p.is_dir()):
                if (user_dir.name, gen_dir.name) in known:
                    continue
                files = sum(1 for f in gen_dir.rglob("*") if f.is_file())
                report.add(
                    kind="orphan_folder",
                    message=f"{gen_dir} ({files} file{'s' if files != 1 else ''}) belongs to no generation in the "
                            "database",
                    path=str(gen_dir),
                    remedy=f"aigen doctor --move-orphans (moves it to {home.path / 'orphans' / user_dir.name}/)",
                    mend="--move-orphans",
                )

    # Temporary files whose writer is gone.
    # (Also in scratch/<generation>/, where files bound for object storage are checked before their upload.)
    scratch = home.path / "scratch"
    parts = sorted(content.glob(f"*/*/.*{PART_SUFFIX}")) if content.is_dir() else []
    parts += sorted(scratch.glob(f"*/.*{PART_SUFFIX}")) if scratch.is_dir() else []
    if parts:
        for part in parts:
            pid = _temp_writer_pid(part.name, PART_SUFFIX)
            if pid is not None and _pid_alive(pid):
                continue
            if _lock_held(locks / f"{part.parent.name}.lock"):
                continue
            report.add(kind="temp_file", message=f"{part} is a partial file left by a stopped run",
                       path=str(part), remedy="aigen doctor --remove-temp", mend="--remove-temp")
    # Checked files under their final name in scratch/<generation>/: paid for, their upload to object
    # storage failed; `aigen retry` uploads them without calling the provider again. Not junk.
    if scratch.is_dir():
        done = {a["path"] for a in assets if a.get("path")}
        for kept in sorted(scratch.glob("*/*")):
            if kept.name.startswith(".") or not kept.is_file():
                continue
            gid = kept.parent.name
            if _lock_held(locks / f"{gid}.lock"):
                continue  # a run is working on it (uploading it now)
            g = (generations or {}).get(gid)
            key = f"generated_content/{g['user_id']}/{gid}/{kept.name}" if g else None
            if key is not None and key in done:
                report.add(kind="temp_file", message=f"{kept} is a local copy of {key}, which is stored and recorded",
                           path=str(kept), generation_id=gid, remedy="aigen doctor --remove-temp",
                           mend="--remove-temp")
                continue
            known = "" if g or generations is None else " (its generation is not in this database: retry it " \
                                                         "where it is)"
            report.add(kind="upload_pending",
                       message=f"{kept} is waiting for upload: it was paid for and checked, but its upload to the "
                               f"storage failed{known}",
                       path=str(kept), generation_id=gid, remedy=f"aigen retry {gid}")
    for folder in (home.path, locks):
        if not folder.is_dir():
            continue
        for tmp in sorted(folder.glob(".*.tmp")):
            pid = _temp_writer_pid(tmp.name, ".tmp")
            if (pid is not None and _pid_alive(pid)) or _lock_held(tmp):
                continue
            report.add(kind="temp_file", message=f"{tmp} is a temporary file left by a stopped process",
                       path=str(tmp), remedy="aigen doctor --remove-temp", mend="--remove-temp")

    # Lock files nobody holds that mark something that is gone. (A finished
    # generation's own lock file is expected: it is reused by its next run.)
    if locks.is_dir():
        for lock in sorted(locks.glob("*.lock")):
            if lock.name.startswith("notify-daemon."):
                stale = not _lock_held(lock)
                why = "of a notify daemon that is no longer running"
            else:
                gid = lock.name[: -len(".lock")]
                stale = generations is not None and gid not in generations and not _lock_held(lock)
                why = "of a generation the database does not know"
            if stale:
                report.add(kind="stale_lock", message=f"{lock} is a lock file {why}", path=str(lock),
                           remedy="aigen doctor --clear-stale-locks", mend="--clear-stale-locks")
    return report


def _check_stored(report: Report, storage, a: dict, what: str, remedy: str, deep: bool) -> None:
    """The file check of one asset in object storage: the object exists, with its size (and sha256 when deep)."""
    import hashlib

    from aigen.storage import ObjectMissing

    gid = a["generation_id"]
    where = f"{a['path']} in {storage.describe()}"
    common = dict(path=where, generation_id=gid, asset_id=a["id"], remedy=remedy, mend="--requeue-bad")
    try:
        size = storage.size(a["path"])
    except ObjectMissing:
        report.add(kind="file_missing", message=f"{what}: {where} is missing", **common)
        return
    if a["bytes"] is not None and size != a["bytes"]:
        report.add(kind="file_size_mismatch",
                   message=f"{what}: {where} has {size} bytes, the database recorded {a['bytes']}", **common)
        return
    if deep and a["sha256"]:
        h = hashlib.sha256()
        with storage.open(a["path"]) as body:
            for chunk in body:
                h.update(chunk)
        if h.hexdigest() != a["sha256"]:
            report.add(kind="file_hash_mismatch",
                       message=f"{what}: {where} does not have its recorded sha256 (the bytes changed)", **common)


def _unique(target: Path) -> Path:
    n = 1
    candidate = target
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.name}.{n}")
    return candidate


def mend(report: Report, home, flags: set[str]) -> None:
    """Apply the mends asked for, re-checking each thing just before touching it."""
    bad_assets = []
    for p in report.problems:
        if p.mend not in flags:
            continue
        path = Path(p.path) if p.path else None
        try:
            if p.kind == "temp_file":
                pid = _temp_writer_pid(path.name, ".part" if path.name.endswith(".part") else ".tmp")
                if pid is not None and _pid_alive(pid):
                    continue
                path.unlink(missing_ok=True)
                p.mended = "removed"
            elif p.kind == "stale_lock":
                if _lock_held(path):
                    continue
                path.unlink(missing_ok=True)
                p.mended = "removed"
            elif p.kind == "orphan_folder":
                target = _unique(home.path / "orphans" / path.parent.name / path.name)
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(path, target)
                p.mended = f"moved to {target}"
            elif p.kind in ("file_missing", "file_size_mismatch", "file_hash_mismatch"):
                bad_assets.append(p)
        except OSError as e:
            p.mended = None
            report.database.setdefault("mend_errors", []).append(f"{p.path}: {e.strerror or e}")
    if bad_assets:
        _requeue(report, home, bad_assets)


def _requeue(report: Report, home, problems: list[Problem]) -> None:
    """Mark bad files' assets failed (the file, if any, kept aside) so `aigen retry` makes them again."""
    import json

    from aigen.pipeline.run import is_running
    from aigen.store import open_store
    from aigen.store.core import iso, utcnow

    store = open_store(home)
    now_s = iso(utcnow())
    for p in problems:
        if is_running(home, p.generation_id):
            continue
        path = Path(p.path)
        kept = None
        if path.exists():
            kept = _unique(path.with_name(path.name + ".bad"))
            os.replace(path, kept)
        reason = {"file_missing": "its file was missing", "file_size_mismatch": "its file had the wrong size",
                  "file_hash_mismatch": "its file's bytes had changed"}[p.kind]
        with store.transaction() as db:
            row = db.conn.execute("SELECT kind FROM assets WHERE id = ?", (p.asset_id,)).fetchone()
            db.conn.execute(
                "UPDATE assets SET status = 'failed', path = NULL, poster_path = NULL, thumb_path = NULL, thumb2x_path = NULL, error = ?, "
                "error_code = 'doctor', updated_at = ? WHERE id = ?",
                (f"{reason} (found by aigen doctor)", now_s, p.asset_id),
            )
            column = "image_paths" if row["kind"] == "image" else "video_paths"
            paths = [r[0] for r in db.conn.execute(
                "SELECT path FROM assets WHERE generation_id = ? AND kind = ? AND status = 'done' ORDER BY idx",
                (p.generation_id, row["kind"]),
            )]
            db.conn.execute(
                f"UPDATE generations SET {column} = ?, status = CASE WHEN status = 'Completed' THEN 'Failed' "
                "ELSE status END, error = coalesce(error, ?), updated_at = ? WHERE id = ?",
                (json.dumps(paths), "some files were missing or damaged (found by aigen doctor)", now_s,
                 p.generation_id),
            )
        p.mended = "marked failed; make it again with aigen retry " + p.generation_id + (
            f" (the damaged file is kept as {kept})" if kept else "")


def make_thumbnails(report: Report, home) -> None:
    """--thumbnails: the gallery's previews of every done asset without them; each that cannot be
    made is a problem (its file is not a picture or a video that decodes: --requeue-bad's kind of trouble)."""
    from aigen.pipeline.thumbs import make_missing
    from aigen.storage import from_config
    from aigen.store import open_store

    store = open_store(home)
    try:
        made, failed = make_missing(store, from_config(home.path, None))
    finally:
        store.close()
    report.thumbnails = {"made": made, "failed": len(failed)}
    for row, why in failed:
        gid = row["generation_id"]
        report.add(kind="thumbnail_failed",
                   message=f"{row['kind']} {row['idx']} of generation {gid}: no preview could be made: {why}",
                   path=row["path"], generation_id=gid, asset_id=row["id"],
                   remedy=f"aigen doctor --deep (is the file damaged?); the gallery shows the file itself meanwhile")


def print_report(report: Report, remaining: list[Problem]) -> None:
    db = report.database
    console.print(f"Home: {escape(str(report.home))}", highlight=False)
    if not db.get("exists"):
        console.print("Database: none yet.")
    elif db.get("error"):
        console.print("Database: [red]unreadable[/]", highlight=False)
    elif db.get("backend") == "postgresql":
        how = "size and sha256" if report.deep else "size; --deep also compares sha256"
        console.print(f"Database: PostgreSQL at {escape(db['path'])}; {db['generations']} generation(s); "
                      f"{db['files_checked']} file(s) checked ({how}).", highlight=False)
        console.print(f"Skipped: {escape(db['skipped'])}: the PostgreSQL server keeps its own integrity.",
                      highlight=False)
    else:
        check = "ok" if db.get("quick_check") == ["ok"] else "[red]damaged[/]"
        how = "size and sha256" if report.deep else "size; --deep also compares sha256"
        console.print(f"Database: quick_check {check}; {db['generations']} generation(s); "
                      f"{db['files_checked']} file(s) checked ({how}).", highlight=False)
    for p in report.problems:
        colour = "green" if p.mended else "red"
        console.print(f"[{colour}]-[/] {escape(p.message)}", highlight=False, soft_wrap=True)
        if p.mended:
            console.print(f"    [green]mended:[/] {escape(p.mended)}", highlight=False, soft_wrap=True)
        else:
            console.print(f"    mend: {escape(p.remedy)}", highlight=False, soft_wrap=True)
    if report.thumbnails is not None:
        t = report.thumbnails
        console.print(f"Thumbnails: made for {t['made']} file(s)"
                      + (f"; {t['failed']} could not be made." if t["failed"] else "."), highlight=False)
    for err in db.get("mend_errors") or []:
        console.print(f"[red]could not mend[/] {escape(err)}", highlight=False, soft_wrap=True)
    if not report.problems:
        console.print("[green]Healthy:[/] nothing to mend.")
    elif remaining:
        mended = len(report.problems) - len(remaining)
        head = f"{len(remaining)} problem(s) remain, {mended} mended." if mended else f"{len(remaining)} problem(s) found."
        tail = "" if mended or db.get("mend_errors") else " Nothing is changed without a mend flag."
        console.print(f"[red]{head}[/]{tail}", highlight=False)
    else:
        console.print(f"[green]All {len(report.problems)} problem(s) mended.[/]", highlight=False)


__all__ = ["check_home", "mend", "print_report"]
