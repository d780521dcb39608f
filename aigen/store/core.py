"""Open the database and the queries the CLI, the pipeline and the gallery make.

Concurrency model: several processes (two `aigen generate`, a detached run,
the gallery, the notify daemon) and several threads share one file. So:
WAL (readers never block the writer), a busy timeout, one connection per
thread, and every write transaction starts with BEGIN IMMEDIATE, which takes
the write lock up front; a deferred transaction that reads and then tries to
write can fail with "database is locked" at once, whatever the busy timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from aigen.errors import (
    BadInput,
    NotFound,
    ReadOnlyHome,
    broken_database,
    describe_os_error,
    describe_sqlite_error,
    read_only_home,
)

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_S = 60.0
FINAL_ASSET_STATES = ("done", "failed")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """UTC ISO-8601 with milliseconds: sorts correctly as text."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def new_generation_id() -> str:
    import secrets  # here: it imports hmac and OpenSSL's hashlib, which reading the store never needs

    return secrets.token_hex(6)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise migrations between processes that open a fresh database together."""
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking still protects each migration
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# One write lock per database file per process. Threads of one process queue
# on it instead of on SQLite's lock: SQLite's busy handler waits by sleeping
# (1, 2, 5, ... up to 100 ms at a time), which under a burst of writers (the
# gallery's event rows, a run's asset updates) turned into tail latencies of
# hundreds of milliseconds (bench/fig4_gallery.py). Other processes are still
# kept out by BEGIN IMMEDIATE and the busy timeout.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    key = os.path.realpath(path)
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(key)
        if lock is None:
            lock = _WRITE_LOCKS[key] = threading.Lock()
        return lock


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_database_file(path: Path) -> bool:
    """Refuse a file that is not a usable database before SQLite touches it; True when it exists.

    SQLite would happily turn a 0-byte file into a new, empty database and
    some damage only shows on first use, so: a directory, a file that cannot
    be read, one that is not SQLite, one cut short, or a 0-byte file beside
    generation folders (an "emptied" database) raise BrokenDatabase, and the
    file is never opened for writing.
    """
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # no database (a bad home is the home's check)
        return False
    except OSError as e:
        raise broken_database(path, f"it cannot be read ({e.strerror or e})") from None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        raise broken_database(path, "it is a directory, not a database file")
    if not _stat.S_ISREG(st.st_mode):
        raise broken_database(path, "it is not a regular file")
    try:
        header = _read_header(path, st)
    except OSError as e:
        raise broken_database(path, f"it cannot be read ({e.strerror or e})") from None
    if st.st_size == 0:
        if _holds_generations(path.parent):
            from aigen.config import CONTENT_DIR

            raise broken_database(
                path, f"it is empty (0 bytes) although {path.parent / CONTENT_DIR} holds generations: "
                      "it looks emptied, and using it as a new database would lose them")
        return True
    if not header.startswith(SQLITE_MAGIC):
        raise broken_database(path, "it is not an SQLite database")
    if len(header) < 100:
        raise broken_database(path, "it is cut short (truncated)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise broken_database(path, "its header is damaged")
    pages = int.from_bytes(header[28:32], "big")
    valid_count = header[24:28] == header[92:96]
    if st.st_size % page_size or (valid_count and pages and st.st_size < pages * page_size
                                  and not _has_wal(path)):
        # With a write-ahead log beside it the file may be shorter than its header says: a checkpoint
        # cut short by a full disk wrote page 1 but could not extend the file, and SQLite reads the
        # missing pages from the log (real damage is then SQLite's to report).
        raise broken_database(path, "it is cut short (truncated)")
    return True


def _has_wal(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


# Closing any descriptor of a file drops every POSIX lock this process holds on
# it, SQLite's included (a Store already open in another thread would lose its
# locks): so the header is read through a descriptor that is opened once per
# file and never closed.
_HEADER_FDS: dict[str, int] = {}
_HEADER_FDS_GUARD = threading.Lock()


def _read_header(path: Path, st: os.stat_result) -> bytes:
    key = os.path.realpath(path)
    with _HEADER_FDS_GUARD:
        fd = _HEADER_FDS.get(key)
        if fd is not None:
            try:
                same = os.fstat(fd).st_ino == st.st_ino
            except OSError:
                same = False
            if not same:
                fd = None  # the file was replaced: keep the old descriptor open, see above
        if fd is None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            _HEADER_FDS[key] = fd
    return os.pread(fd, 100, 0) if hasattr(os, "pread") else _pread_fallback(fd)


def _pread_fallback(fd: int) -> bytes:  # Windows
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 100)


def _holds_generations(home: Path) -> bool:
    from aigen.config import CONTENT_DIR

    content = home / CONTENT_DIR
    try:
        for user_dir in content.iterdir():
            if user_dir.is_dir() and any(p.is_dir() for p in user_dir.iterdir()):
                return True
    except OSError:
        return False
    return False


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two processes opening a fresh database together can get "database is
    locked" at once (SQLite skips the busy handler there to avoid a deadlock): retry a while."""
    import time

    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class Database:
    """One thread's connection, with sqlite-utils' ``Database`` over it made on first use of anything but ``conn``.

    Every query of the store goes through ``.conn``; sqlite-utils is needed only to create or upgrade the
    schema and for its helpers (``db["table"]``, ``db.atomic()``, ``db.execute()``, which this forwards).
    Importing it costs tens of milliseconds (it imports click, pluggy, and numpy when installed), so a
    command that only reads an up-to-date database, such as `aigen status`, never imports it.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._db: sqlite_utils.Database | None = None

    @property
    def sqlite_utils_db(self) -> sqlite_utils.Database:
        if self._db is None:
            import sqlite_utils

            # _connect already set what Database() would (PRAGMA recursive_triggers).
            self._db = sqlite_utils.Database(self.conn, execute_plugins=False, recursive_triggers=False)
        return self._db

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_db":
            raise AttributeError(name)
        return getattr(self.sqlite_utils_db, name)

    def __getitem__(self, table_name: str) -> Any:
        return self.sqlite_utils_db[table_name]

    def close(self) -> None:
        self.conn.close()


def pending_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names of aigen's migrations not applied to this database yet, read with plain SQL.

    What sqlite-utils' ``Migrations.pending`` answers (the same table, the same set), without importing
    sqlite-utils when there is nothing to do, which is every time but the first.
    """
    from aigen.store.migrations import migrations

    names = migrations.names()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (migrations.migrations_table,)).fetchone() is None:
        return names
    applied = {r[0] for r in conn.execute(f"SELECT name FROM [{migrations.migrations_table}] "
                                          "WHERE migration_set = ?", (migrations.name,))}
    return [n for n in names if n not in applied]


class Store:
    """Thread-safe access to aigen.db; create it once per process and share it.

    ``Store(path, readonly=True)`` opens an existing database without ever
    writing it or its folder (a read-only mount, a backup copy, `aigen doctor`):
    no migration, no WAL switch, and any write raises ReadOnlyHome. A file that
    is not a usable database raises BrokenDatabase (exit 2) and is left as it is.
    """

    # The driver's errors, turned into aigen's by _translate (PgStore: psycopg's).
    DB_ERRORS: tuple = (sqlite3.Error,)

    backend = "sqlite"

    def __init__(self, path: str | os.PathLike, *, migrate: bool = True, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        self._write_lock = _write_lock(self.path)
        exists = check_database_file(self.path)
        if readonly:
            if not exists:
                raise broken_database(self.path, "it does not exist")
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not exists:
                    # Private from the start: it holds prompts, emails and session ids.
                    # SQLite gives its -wal and -shm files the same mode.
                    try:
                        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    except FileExistsError:
                        pass
            except OSError as e:
                raise (describe_os_error(e, self.path.parent) or e) from None
        try:
            if readonly:
                self._check_readable()
            elif migrate:
                self.migrate()
            else:
                self.db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as e:
            self.close()
            raise self._translate(e) from None

    def _translate(self, e: BaseException) -> BaseException:
        return describe_sqlite_error(e, self.path) or e

    def _check_readable(self) -> None:
        db = self.db
        db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if pending_migrations(db.conn):
            raise ReadOnlyHome(
                f"the database {self.path} was made by an older aigen and must be upgraded, "
                "which needs write access to its folder",
                hint="open it once from a writable copy (any aigen command upgrades it), then read it here",
            )

    # -- connection handling -------------------------------------------------
    def _connect_readonly(self) -> sqlite3.Connection:
        from urllib.parse import quote

        base = "file:" + quote(str(self.path.resolve())) + "?mode=ro"
        conn = sqlite3.connect(base, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as e:
            conn.close()
            if "unable to open" not in str(e) and "readonly" not in str(e):
                raise
        # A WAL database whose folder is read-only and has no -shm file cannot
        # be opened even for reading; with immutable=1 SQLite reads the main
        # file alone (a cleanly closed database has everything in it).
        return sqlite3.connect(base + "&immutable=1", uri=True, isolation_level=None)

    def _connect(self) -> Database:
        if self.readonly:
            conn = self._connect_readonly()
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA recursive_triggers = on")
            return Database(conn)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA recursive_triggers = on")
        except sqlite3.Error:
            conn.close()
            raise
        return Database(conn)

    @property
    def db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = self._connect()
            except sqlite3.Error as e:
                raise self._translate(e) from None
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction that holds the write lock from its first statement.

        A full disk, a read-only file or a damaged database comes out as
        NoSpace, ReadOnlyHome or BrokenDatabase (rolled back), not as sqlite3's error.
        """
        if self.readonly:
            raise read_only_home(self.path.parent)
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        with self._write_lock:
            try:
                db.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.conn.in_transaction:
                        try:
                            db.conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    raise
                else:
                    db.conn.execute("COMMIT")
            except sqlite3.Error as e:
                if db.conn.in_transaction:
                    try:
                        db.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise self._translate(e) from None

    def migrate(self) -> list[str]:
        db = self.db
        if not pending_migrations(db.conn):
            return []
        from aigen.store.migrations import migrations

        with _file_lock(self.path.with_name(self.path.name + ".migrate.lock")):
            pending = [m.name for m in migrations.pending(db)]
            migrations.apply(db)
        return pending

    def applied_migrations(self) -> list[str]:
        from aigen.store.migrations import migrations

        return [m.name for m in migrations.applied(self.db)]

    def query(self, sql: str, params: Any = ()) -> list[dict]:
        try:
            return [dict(r) for r in self.db.conn.execute(sql, params).fetchall()]
        except self.DB_ERRORS as e:
            raise self._translate(e) from None

    def query_one(self, sql: str, params: Any = ()) -> dict | None:
        try:
            row = self.db.conn.execute(sql, params).fetchone()
        except self.DB_ERRORS as e:
            raise self._translate(e) from None
        return dict(row) if row is not None else None

    # -- users ---------------------------------------------------------------
    def ensure_user(self, user_id: str, *, email: str | None = None, now: datetime | None = None) -> None:
        now_s = iso(now or utcnow())
        with self.transaction() as db:
            db.conn.execute(
                "INSERT INTO users (user_id, created_at) VALUES (?, ?) ON CONFLICT(user_id) DO NOTHING",
                (user_id, now_s),
            )
            if email:
                db.conn.execute("UPDATE users SET email = ? WHERE user_id = ?", (email, user_id))

    def get_user(self, user_id: str) -> dict | None:
        return self.query_one("SELECT * FROM users WHERE user_id = ?", (user_id,))

    # -- generations ---------------------------------------------------------
    def create_generation(self, gen: dict, assets: list[dict], *, now: datetime | None = None) -> str:
        """Write the generation and all its asset rows in one transaction."""
        now_s = iso(now or utcnow())
        gen = dict(gen)
        gen.setdefault("id", new_generation_id())
        gen.update(
            status="Processing",
            video_paths="[]",
            image_paths="[]",
            created_at=now_s,
            updated_at=now_s,
            generated_at=None,
        )
        for key in ("options", "notify_via"):
            if key in gen and not isinstance(gen[key], (str, type(None))):
                gen[key] = json.dumps(gen[key])
        with self.transaction() as db:
            db.conn.execute(
                "INSERT INTO users (user_id, created_at) VALUES (?, ?) ON CONFLICT(user_id) DO NOTHING",
                (gen["user_id"], now_s),
            )
            db["generations"].insert(gen)
            rows = []
            for a in assets:
                row = dict(a)
                row.update(generation_id=gen["id"], status="queued", attempts=0, created_at=now_s, updated_at=now_s)
                rows.append(row)
            if rows:
                db["assets"].insert_all(rows)
        return gen["id"]

    def resolve_generation_id(self, ident: str, *, user_id: str | None = None) -> str:
        """Accept a full id or a unique prefix of at least 4 characters, like git."""
        ident = (ident or "").strip().lower()
        if not ident or not all(c in "0123456789abcdef" for c in ident):
            raise NotFound(f"unknown generation id {ident!r}: ids are hexadecimal, see `aigen status`")
        if len(ident) < 4:
            raise BadInput(f"generation id prefix {ident!r} is too short: give at least 4 characters")
        where, params = "id >= ? AND id < ?", [ident, ident + "g"]
        if user_id is not None:
            where += " AND user_id = ?"
            params.append(user_id)
        rows = self.query(f"SELECT id FROM generations WHERE {where} LIMIT 2", params)
        if not rows:
            raise NotFound(f"unknown generation id {ident!r}", hint="list generations with `aigen status`")
        if len(rows) > 1:
            raise BadInput(f"generation id prefix {ident!r} is ambiguous: give more characters")
        return rows[0]["id"]

    def get_generation(self, gen_id: str) -> dict:
        row = self.query_one("SELECT * FROM generations WHERE id = ?", (gen_id,))
        if row is None:
            raise NotFound(f"unknown generation id {gen_id!r}", hint="list generations with `aigen status`")
        return decode_generation(row)

    def assets(self, gen_id: str) -> list[dict]:
        return self.query(
            "SELECT * FROM assets WHERE generation_id = ? ORDER BY kind = 'video', idx", (gen_id,)
        )

    def get_asset(self, asset_id: int) -> dict | None:
        return self.query_one("SELECT * FROM assets WHERE id = ?", (asset_id,))

    def list_generations(
        self, *, user_id: str | None = None, status: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[dict]:
        where, params = [], []
        if user_id is not None:
            where.append("g.user_id = ?")
            params.append(user_id)
        if status is not None:
            where.append("g.status = ?")
            params.append(status)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        # Counts come from a correlated subquery on the (generation_id, kind, idx)
        # index, so only the page of generations shown is counted.
        sql = f"""
            SELECT g.*,
              (SELECT count(*) FROM assets a WHERE a.generation_id = g.id AND a.kind = 'image' AND a.status = 'done') AS images_done,
              (SELECT count(*) FROM assets a WHERE a.generation_id = g.id AND a.kind = 'video' AND a.status = 'done') AS videos_done,
              (SELECT count(*) FROM assets a WHERE a.generation_id = g.id AND a.status = 'failed') AS assets_failed
            FROM generations g {clause}
            ORDER BY g.created_at DESC, g.id DESC
            LIMIT ? OFFSET ?"""
        return [decode_generation(r) for r in self.query(sql, params + [limit, offset])]

    def count_generations(self, *, user_id: str | None = None) -> dict[str, int]:
        """{status: number of generations} (only statuses that have some), of one user or of all.

        Read from `generation_counts` (migration 0017), which triggers keep in step with `generations`:
        a few rows per user, where counting the generations themselves walked one index entry each.
        """
        if user_id is None:
            rows = self.query("SELECT status, sum(n) AS n FROM generation_counts GROUP BY status "
                              "HAVING sum(n) > 0 ORDER BY status")
        else:
            rows = self.query("SELECT status, sum(n) AS n FROM generation_counts WHERE user_id = ? GROUP BY status "
                              "HAVING sum(n) > 0 ORDER BY status", (user_id,))
        return {r["status"]: int(r["n"]) for r in rows}

    def provider_names(self, user_id: str) -> list[str]:
        """The image and video providers this user's generations used, sorted (from `generation_counts`)."""
        rows = self.query(
            "SELECT image_provider AS p FROM generation_counts WHERE user_id = ? AND n > 0 UNION "
            "SELECT video_provider AS p FROM generation_counts WHERE user_id = ? AND n > 0", (user_id, user_id))
        return sorted(r["p"] for r in rows if r["p"])

    # -- asset lifecycle (called from worker threads) -------------------------
    def start_asset(self, asset_id: int, *, now: datetime | None = None) -> None:
        now_s = iso(now or utcnow())
        with self.transaction() as db:
            db.conn.execute(
                "UPDATE assets SET status = 'running', attempts = attempts + 1, started_at = ?, "
                "updated_at = ?, error = NULL, error_code = NULL, refused = NULL, note = NULL, progress = 0 "
                "WHERE id = ?",
                (now_s, now_s, asset_id),
            )

    def save_job_id(self, asset_id: int, job_id: str) -> None:
        """Persist an async provider's job id the moment it exists: a resumed run polls it, never pays twice."""
        with self.transaction() as db:
            db.conn.execute(
                "UPDATE assets SET provider_job_id = ?, updated_at = ? WHERE id = ?",
                (job_id, iso(utcnow()), asset_id),
            )

    def set_progress(self, asset_id: int, fraction: float) -> None:
        with self.transaction() as db:
            db.conn.execute("UPDATE assets SET progress = ? WHERE id = ?", (round(fraction, 3), asset_id))

    def complete_asset(self, asset_id: int, info: dict, *, now: datetime | None = None) -> None:
        """Record a kept file and append its path to the generation's list, atomically."""
        now_s = iso(now or utcnow())
        with self.transaction() as db:
            asset = dict(db.conn.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone())
            fields = {k: info[k] for k in (
                "path", "poster_path", "bytes", "sha256", "width", "height", "duration", "model", "cost", "fps"
            ) if k in info}
            # The previews of this file, or none (NULL: made when the gallery first shows it): never the
            # previews of a file this one replaces.
            fields.update(thumb_path=info.get("thumb_path"), thumb2x_path=info.get("thumb2x_path"))
            # `note`: how the kept file differs from the ask (None: it does not).
            fields.update(status="done", finished_at=now_s, updated_at=now_s, error=None, error_code=None,
                          refused=None, note=info.get("note"), progress=1.0)
            sets = ", ".join(f"{k} = ?" for k in fields)
            db.conn.execute(f"UPDATE assets SET {sets} WHERE id = ?", [*fields.values(), asset_id])
            column = "image_paths" if asset["kind"] == "image" else "video_paths"
            self._rebuild_path_list(db, asset["generation_id"], asset["kind"], column, now_s)

    def _rebuild_path_list(self, db, gen_id: str, kind: str, column: str, now_s: str) -> None:
        # The list is kept in index order (not completion order) so it reads
        # the same whichever thread finished first.
        paths = [
            r[0]
            for r in db.conn.execute(
                "SELECT path FROM assets WHERE generation_id = ? AND kind = ? AND status = 'done' ORDER BY idx",
                (gen_id, kind),
            )
        ]
        db.conn.execute(
            f"UPDATE generations SET {column} = ?, updated_at = ? WHERE id = ?", (json.dumps(paths), now_s, gen_id)
        )

    def requeue_asset(self, asset_id: int) -> None:
        with self.transaction() as db:
            db.conn.execute(
                "UPDATE assets SET status = 'queued', updated_at = ? WHERE id = ? AND status = 'running'",
                (iso(utcnow()), asset_id),
            )

    def fail_asset(self, asset_id: int, error: str, *, code: str | None = None, refused: bool = False,
                   now: datetime | None = None) -> None:
        """`refused`: the provider refused the prompt or the output (moderation); `aigen retry` skips it."""
        now_s = iso(now or utcnow())
        with self.transaction() as db:
            db.conn.execute(
                "UPDATE assets SET status = 'failed', error = ?, error_code = ?, refused = ?, finished_at = ?, "
                "updated_at = ? WHERE id = ?",
                (error, code, 1 if refused else None, now_s, now_s, asset_id),
            )

    def finalize_generation(self, gen_id: str, *, now: datetime | None = None) -> str:
        """Move to Completed/Failed once every asset is final; otherwise stay Processing."""
        now_s = iso(now or utcnow())
        with self.transaction() as db:
            rows = [dict(r) for r in db.conn.execute(
                "SELECT kind, idx, status, error FROM assets WHERE generation_id = ? ORDER BY kind, idx", (gen_id,)
            )]
            if any(r["status"] not in FINAL_ASSET_STATES for r in rows):
                return "Processing"
            failed = [r for r in rows if r["status"] == "failed"]
            if failed:
                status = "Failed"
                error = "; ".join(f"{r['kind']} {r['idx']}: {r['error']}" for r in failed)
                error = f"{len(failed)} of {len(rows)} assets failed: {error}"
            else:
                status, error = "Completed", None
            db.conn.execute(
                "UPDATE generations SET status = ?, error = ?, generated_at = ?, updated_at = ?, worker_pid = NULL "
                "WHERE id = ?",
                (status, error, now_s, now_s, gen_id),
            )
            return status

    def reopen_generation(self, gen_id: str, *, worker_pid: int | None = None, skip_refused: bool = False,
                          now: datetime | None = None) -> list[dict]:
        """Put every asset that is not done back in the queue; return those assets.

        With `skip_refused`, assets the provider refused stay failed: the same
        prompt would be refused again, and repeated refusals can get an account
        suspended (`aigen retry` without --include-refused).
        """
        now_s = iso(now or utcnow())
        skip = " AND (status != 'failed' OR refused IS NULL OR refused = 0)" if skip_refused else ""
        with self.transaction() as db:
            db.conn.execute(
                "UPDATE assets SET status = 'queued', updated_at = ? WHERE generation_id = ? AND status != 'done'"
                + skip,
                (now_s, gen_id),
            )
            db.conn.execute(
                "UPDATE generations SET status = 'Processing', error = NULL, generated_at = NULL, updated_at = ?, "
                "worker_pid = ? WHERE id = ?",
                (now_s, worker_pid, gen_id),
            )
            return [dict(r) for r in db.conn.execute(
                "SELECT * FROM assets WHERE generation_id = ? AND status = 'queued' ORDER BY kind = 'video', idx",
                (gen_id,),
            )]

    def set_generation_fields(self, gen_id: str, **fields) -> None:
        if not fields:
            return
        fields["updated_at"] = iso(utcnow())
        with self.transaction() as db:
            sets = ", ".join(f"{k} = ?" for k in fields)
            db.conn.execute(f"UPDATE generations SET {sets} WHERE id = ?", [*fields.values(), gen_id])

    # -- events ----------------------------------------------------------------
    def log_event(self, kind: str, *, now: datetime | None = None, **fields) -> int:
        row = {"at": iso(now or utcnow()), "kind": kind}
        row.update({k: v for k, v in fields.items() if v is not None})
        if "ok" in row:
            row["ok"] = 1 if row["ok"] else 0
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as db:
            cur = db.conn.execute(f"INSERT INTO events ({cols}) VALUES ({marks})", list(row.values()))
            return cur.lastrowid

    def list_events(self, *, user_id: str | None = None, kind: str | None = None, limit: int = 100) -> list[dict]:
        where, params = [], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self.query(f"SELECT * FROM events {clause} ORDER BY at DESC, id DESC LIMIT ?", params + [limit])


def decode_generation(row: dict) -> dict:
    g = dict(row)
    for key in ("video_paths", "image_paths", "notify_via"):
        if isinstance(g.get(key), str):
            try:
                g[key] = json.loads(g[key])
            except ValueError:
                g[key] = []
        elif g.get(key) is None and key != "notify_via":
            g[key] = []
    if isinstance(g.get("options"), str):
        try:
            g["options"] = json.loads(g["options"])
        except ValueError:
            g["options"] = {}
    return g
