"""The store on PostgreSQL (cluster mode): the same public interface as the SQLite Store.

``PgStore(url)`` is chosen by ``aigen.store.open_store`` when
``AIGEN_DATABASE_URL`` (or ``[cluster] database_url`` in config.toml) is set.
Every method of ``aigen.store.core.Store`` works unchanged on it, and so do
the callers that write SQL themselves (notify, gallery sessions, doctor):
``store.db.conn.execute(sql, params)`` takes SQLite's ``?`` and ``:name``
placeholders, rows read as ``r["col"]``, ``r[0]`` and ``dict(r)``,
``cursor.lastrowid`` is filled for inserts into tables with an ``id``
identity, and ``store.transaction()`` is one PostgreSQL transaction (nested
ones are savepoints), as in core.py.

Connections: one per thread (like the SQLite store), opened on first use and
opened again after the server dropped it. psycopg is imported here only, and
this module only when the PostgreSQL store is configured: the embedded path
imports nothing new.

Errors: an unreachable server, a wrong password, a missing database or a
connection lost mid-run come out as one AigenError (see
aigen.errors.describe_pg_error), with the URL's password never shown.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import weakref
from typing import Any, Iterator

import psycopg
from psycopg import pq

from aigen.errors import AigenError, describe_pg_error, read_only_home, redact_url
from aigen.store.core import Store

CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key for migrations: every process opening the database takes it first.
MIGRATION_LOCK_KEY = 0x616967656E  # "aigen"
# pg_advisory_xact_lock key taken by every write transaction, see PgStore.transaction.
WRITE_LOCK_KEY = 0x616967656E77  # "aigenw"
MIGRATIONS_TABLE = "_aigen_migrations"
# Tables whose `id` is an identity: an INSERT into them returns it (cursor.lastrowid, as SQLite's rowid).
_ID_TABLES = frozenset({"assets", "events", "notifications"})
_INSERT_RE = re.compile(r"^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+\"?(\w+)\"?", re.IGNORECASE)


class Row(dict):
    """A result row: a dict of its columns that is also indexable by position, like sqlite3.Row."""

    __slots__ = ("_values",)

    def __init__(self, names, values):
        super().__init__(zip(names, values))
        self._values = values

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._values[key]
        return super().__getitem__(key)

    def keys(self):  # noqa: D102 - like sqlite3.Row.keys()
        return list(super().keys())


def _row_factory(cursor):
    desc = cursor.description
    if desc is None:
        return lambda values: values
    names = [d.name for d in desc]
    return lambda values: Row(names, values)


@functools.lru_cache(maxsize=1024)
def translate(sql: str, style: str) -> str:
    """SQLite's placeholders in PostgreSQL's form: ``?`` -> ``%s``, ``:name`` -> ``%(name)s``, ``%`` -> ``%%``.

    ``style`` is "none" (no parameters: the text is sent as it is), "seq" or
    "named". Quoted text ('...', "...") and comments are left alone.
    """
    if style == "none":
        return sql
    out = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote inside
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1].replace("%", "%%"))
            i = j + 1
            continue
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
            continue
        if c == "%":
            out.append("%%")
        elif c == "?" and style == "seq":
            out.append("%s")
        elif c == ":" and style == "named" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_") \
                and (i == 0 or sql[i - 1] != ":"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            out.append(f"%({sql[i + 1:j]})s")
            i = j
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _adapt(value):
    # SQLite stores a bool as 0/1 in an INTEGER column; PostgreSQL refuses a boolean there.
    return int(value) if isinstance(value, bool) else value


class Cursor:
    """The part of sqlite3.Cursor the callers use: fetchone, fetchall, iteration, lastrowid, rowcount."""

    def __init__(self, cur, lastrowid=None):
        self._cur = cur
        self.lastrowid = lastrowid
        self.rowcount = cur.rowcount

    def _rows_ready(self) -> bool:
        return self._cur.description is not None

    def fetchone(self):
        return self._cur.fetchone() if self._rows_ready() else None

    def fetchall(self):
        return self._cur.fetchall() if self._rows_ready() else []

    def __iter__(self):
        return iter(self.fetchall())

    @property
    def description(self):
        return self._cur.description


class Connection:
    """A psycopg connection that answers like the sqlite3 connection of the SQLite store."""

    def __init__(self, store: "PgStore", raw: psycopg.Connection):
        self._store = store
        self.raw = raw

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, params: Any = None) -> Cursor:
        if params is None or (not isinstance(params, dict) and len(params) == 0):
            style, args = "none", None
        elif isinstance(params, dict):
            style, args = "named", {k: _adapt(v) for k, v in params.items()}
        else:
            style, args = "seq", [_adapt(v) for v in params]
        text = translate(sql, style)
        table = None
        m = _INSERT_RE.match(text)
        if m and m.group(1).lower() in _ID_TABLES and " returning " not in text.lower():
            table = m.group(1).lower()
            text = text.rstrip().rstrip(";") + " RETURNING id"
        try:
            cur = self.raw.execute(text, args)
        except psycopg.Error as e:
            raise self._store._translate(e) from None
        lastrowid = None
        if table is not None:
            row = cur.fetchone()
            lastrowid = row[0] if row is not None else None
        return Cursor(cur, lastrowid)

    def executemany(self, sql: str, seq) -> None:
        for params in seq:
            self.execute(sql, params)

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:
            pass


class Table:
    """``db["table"].insert(row)`` / ``.insert_all(rows)``, the two sqlite-utils calls core.py makes."""

    def __init__(self, db: "Database", name: str):
        self.db = db
        self.name = name
        self.last_pk = None

    def insert(self, row: dict) -> "Table":
        return self.insert_all([row])

    def insert_all(self, rows) -> "Table":
        rows = [dict(r) for r in rows]
        if not rows:
            return self
        cols: list[str] = []
        for r in rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c) for c in [self.name, *cols]):
            raise ValueError(f"unexpected column name in {cols!r}")
        marks = "(" + ", ".join("?" for _ in cols) + ")"
        params: list = []
        for r in rows:
            params.extend(r.get(c) for c in cols)
        sql = (f'INSERT INTO {self.name} ({", ".join(cols)}) VALUES '
               + ", ".join(marks for _ in rows))
        cur = self.db.conn.execute(sql, params)
        self.last_pk = cur.lastrowid
        return self


class Database:
    """What ``store.db`` and ``store.transaction()`` yield: ``.conn``, ``db["table"]``, ``atomic()``."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._savepoints = 0

    def __getitem__(self, name: str) -> Table:
        return Table(self, name)

    def execute(self, sql: str, params: Any = None) -> Cursor:
        return self.conn.execute(sql, params)

    @contextlib.contextmanager
    def atomic(self) -> Iterator["Database"]:
        """A savepoint inside the current transaction (or a transaction of its own outside one)."""
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN")
            try:
                yield self
            except BaseException:
                _quiet_rollback(self.conn)
                raise
            else:
                self.conn.execute("COMMIT")
            return
        self._savepoints += 1
        name = f"aigen_sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                self.conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self.conn.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._savepoints -= 1

    def close(self) -> None:
        self.conn.close()


def _quiet_rollback(conn: Connection) -> None:
    if conn.raw.closed:
        return
    try:
        conn.raw.execute("ROLLBACK")
    except Exception:
        pass


class PgStore(Store):
    """Thread-safe access to the PostgreSQL store; create it once per process and share it.

    Opening it connects (checking the URL, the password, that the database
    exists) and applies the pending migrations of PG_MIGRATIONS under an
    advisory lock, so several workers can open a fresh database at once.
    ``readonly=True`` never writes: no migration, and a write raises ReadOnlyHome.
    """

    DB_ERRORS = (psycopg.Error,)
    backend = "postgresql"

    def __init__(self, url: str, *, migrate: bool = True, readonly: bool = False):
        self.url = url
        self.path = redact_url(url)  # what messages name: never the password
        self.readonly = readonly
        self._local = threading.local()
        # Every thread's connection, weakly: one whose thread has ended is closed when it is freed.
        self._all: "weakref.WeakSet[Connection]" = weakref.WeakSet()
        self._all_guard = threading.Lock()
        # Connections threads gave back with release(), open, for the next thread that needs one.
        self._idle: list[Database] = []
        try:
            if readonly:
                self._check_readable()
            elif migrate:
                self.migrate()
            else:
                self.db.conn.execute("SELECT 1").fetchone()
        except BaseException:
            self.close_all()
            raise

    def __repr__(self) -> str:
        return f"PgStore({self.path!r})"

    def _translate(self, e: BaseException) -> BaseException:
        if isinstance(e, AigenError):
            return e
        return describe_pg_error(e, self.url) or e

    # -- connections ---------------------------------------------------------
    def _connect(self) -> Database:
        try:
            # Defaults only: what the URL says (?connect_timeout=3, ?application_name=...) wins.
            try:
                given = psycopg.conninfo.conninfo_to_dict(self.url)
            except psycopg.ProgrammingError as e:  # libpq cannot parse it: a bad option, a bad %-escape
                from aigen.errors import BadInput, _scrub

                raise BadInput(f"invalid database URL {self.path!r}: {_scrub(str(e), self.url)}",
                               hint="see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING"
                               ) from None
            extra = {k: v for k, v in (("connect_timeout", CONNECT_TIMEOUT_S), ("application_name", "aigen"))
                     if k not in given}
            raw = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, **extra)
        except psycopg.Error as e:
            raise self._translate(e) from None
        conn = Connection(self, raw)
        with self._all_guard:
            self._all.add(conn)
        return Database(conn)

    @property
    def db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is not None and (db.conn.raw.closed or db.conn.raw.broken):
            db.close()
            db = None
        if db is None:
            db = self._take_idle() or self._connect()
            self._local.db = db
        return db

    # Connections kept open by release() at most: what a worker's jobs at once need, well under
    # PostgreSQL's max_connections (100 by default) with several workers.
    IDLE_MAX = 8

    def _take_idle(self) -> Database | None:
        """An idle connection still open (None when there is none). One whose server ended it while it
        waited (a restart, pg_terminate_backend, an idle timeout) has something to read, the end of the
        stream, where an idle connection has nothing: that one is closed, not handed on to fail a job."""
        import select

        while True:
            with self._all_guard:
                if not self._idle:
                    return None
                db = self._idle.pop()
            raw = db.conn.raw
            if not (raw.closed or raw.broken):
                try:
                    ended = bool(select.select([raw.fileno()], [], [], 0)[0])
                except (OSError, ValueError):
                    ended = True
                if not ended:
                    return db
            db.close()

    def release(self) -> None:
        """This thread is done with the store for now: its connection goes to the next thread that needs one.

        A cluster worker's jobs run on whichever of DBOS's many threads is free; closing each job's
        connection made the next job open a new one (4 ms at the median, 17 at the 90th percentile, on
        the critical path from a freed slot to the next provider call), and keeping one per thread would
        pile up past max_connections. Up to IDLE_MAX connections stay open for the next taker; a
        connection that is not idle (a transaction left open, a broken link) is closed instead.
        """
        db = getattr(self._local, "db", None)
        if db is None:
            return
        self._local.db = None
        raw = db.conn.raw
        reusable = (not raw.closed and not raw.broken and db._savepoints == 0
                    and raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)
        if reusable:
            with self._all_guard:
                if len(self._idle) < self.IDLE_MAX:
                    self._idle.append(db)
                    return
        db.close()

    def close_all(self) -> None:
        """Close the connections of every thread, and the idle ones (the end of a process, or of a test)."""
        with self._all_guard:
            conns, self._all = list(self._all), weakref.WeakSet()
            self._idle = []
        for c in conns:
            c.close()
        self._local = threading.local()

    # -- transactions ----------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction holding the store's write lock from its start; nested calls are savepoints.

        The SQLite store lets one writer in at a time (BEGIN IMMEDIATE), and
        its callers rely on that: a transaction that reads and then writes
        what it read (the kept-path lists of complete_asset, the notify
        claims, the access-code checks) sees no other writer in between. A
        transaction-scoped advisory lock gives every write transaction the
        same guarantee across all the machines that share the database;
        readers (query, query_one) never take it and never wait.
        """
        if self.readonly:
            raise read_only_home(self.path)
        db = self.db
        if db.conn.in_transaction:
            with db.atomic():
                yield db
            return
        try:
            db.conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
            try:
                yield db
            except BaseException:
                _quiet_rollback(db.conn)
                raise
            else:
                db.conn.execute("COMMIT")
        except psycopg.Error as e:
            _quiet_rollback(db.conn)
            raise self._translate(e) from None

    # -- migrations ------------------------------------------------------------
    def _applied(self, db: Database) -> list[str] | None:
        """Names recorded in _aigen_migrations, or None when the table does not exist yet."""
        row = db.conn.execute("SELECT to_regclass(?) AS t", (MIGRATIONS_TABLE,)).fetchone()
        if row["t"] is None:
            return None
        return [r[0] for r in db.conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY id").fetchall()]

    def pending_migrations(self) -> list[str]:
        from aigen.store.pg_schema import PG_MIGRATIONS

        done = set(self._applied(self.db) or ())
        return [name for name, _ in PG_MIGRATIONS if name not in done]

    def _check_readable(self) -> None:
        from aigen.errors import ReadOnlyHome

        if self.pending_migrations():
            raise ReadOnlyHome(
                f"the PostgreSQL store at {self.path} was made by an older aigen (or is empty) and must be "
                "upgraded, which needs write access",
                hint="run any aigen command that writes once with write access, then read it here")

    def migrate(self) -> list[str]:
        from aigen.store.core import iso, utcnow
        from aigen.store.pg_schema import PG_MIGRATIONS

        db = self.db
        if not self.pending_migrations():
            return []
        applied: list[str] = []
        with self.transaction() as tx:
            # Held to the end of this transaction: a second process opening the same fresh database
            # waits here, then finds everything applied.
            tx.conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            tx.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                "name TEXT COLLATE \"C\" NOT NULL UNIQUE, applied_at TEXT COLLATE \"C\" NOT NULL)"
            )
            done = set(self._applied(tx) or ())
            for name, sql in PG_MIGRATIONS:
                if name in done:
                    continue
                tx.conn.raw.execute(sql)  # the SQL as written: no placeholders
                tx.conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                                (name, iso(utcnow())))
                applied.append(name)
        del db
        return applied

    def applied_migrations(self) -> list[str]:
        return self._applied(self.db) or []

    def tables(self) -> dict[str, list[str]]:
        """{table: [column, ...]} of the public schema, in column order."""
        out: dict[str, list[str]] = {}
        for r in self.query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY table_name, ordinal_position"
        ):
            out.setdefault(r["table_name"], []).append(r["column_name"])
        return out
