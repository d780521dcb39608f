"""Copy an embedded home (its SQLite rows and its files) into another store and storage: `aigen cluster migrate`.

What is copied, in this order:

- ``users`` (with their access-code hashes: a salted scrypt that needs no secret, so codes keep working);
- per generation, its files first (under ``generated_content/``, each checked against the size and SHA-256
  its ``assets`` row holds, uploaded, then read back and checked again), then, in one transaction, its
  ``generations``, ``assets`` and ``notifications`` rows: a generation appears in the target whole, with
  every file it names already there and verified, or not at all;
- ``events`` and ``spent_links`` (magic links already used stay used).

Not copied: gallery ``sessions``. The cluster signs cookies with its own secret (AIGEN_SECRET_KEY), so a
session of the home could not be resumed there anyway; users log in again (their access codes are copied).

Ids are kept: generation ids (hex text), and the integer ids of assets, notifications and events, so that
events keep pointing at their assets. Before writing anything, every id is checked against the target: a
target row with the same id but another identity (an asset of another generation, ...) stops the copy with
a clear message, since merging two homes with clashing ids would silently link rows to the wrong ones.

Idempotent and resumable: rows are inserted with ``ON CONFLICT DO NOTHING`` (a row already in the target is
never overwritten, so a re-run cannot undo what the cluster did since: a notification sent there stays sent);
a file already in the target with the right size and SHA-256 is not uploaded again. Run it twice: the same
counts, nothing duplicated. Killed half-way: run it again and it completes.

The source is opened read-only (``Store(path, readonly=True)``) and its files are only read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from aigen.config import CONTENT_DIR
from aigen.errors import AigenError

CHUNK = 1 << 20
ID_CHUNK = 500
# Rows of these tables are copied; the integer-id ones are checked for clashes by these identity columns.
TABLES = ("users", "generations", "assets", "notifications", "events", "spent_links")
NOT_COPIED = {"sessions": "gallery sessions: the cluster signs cookies with its own secret; users log in again"}
KEYS = {"users": "user_id", "generations": "id", "assets": "id", "notifications": "id", "events": "id",
        "spent_links": "token_hash"}
IDENTITY = {
    "generations": ("user_id", "created_at"),
    "assets": ("generation_id", "kind", "idx"),
    "notifications": ("generation_id", "channel"),
    "events": ("at", "kind"),
}
# Sequences to move past the copied ids on PostgreSQL (a new row must not reuse a copied id).
SERIAL_TABLES = ("assets", "notifications", "events")
# Test hook: SIGKILL this process after that many files were uploaded (an interruption at a chosen point).
KILL_AFTER_FILES_ENV = "AIGEN_TEST_MIGRATE_KILL_AFTER_FILES"


class MigrateError(AigenError):
    code = "migrate_failed"


class IdClash(MigrateError):
    code = "id_clash"


@dataclass
class FileItem:
    key: str
    path: Path
    size: int
    sha256: str | None  # from the assets row; None for a file no row describes (a poster)


@dataclass
class Report:
    source: dict = field(default_factory=dict)  # table -> rows in the source
    target: dict = field(default_factory=dict)  # table -> those rows now in the target
    copied: dict = field(default_factory=dict)  # table -> rows inserted by this run
    files_source: int = 0
    files_target: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_copied: dict = field(default_factory=dict)  # table -> (rows, why)

    @property
    def ok(self) -> bool:
        return (not self.problems and self.files_source == self.files_target
                and all(self.source[t] == self.target.get(t) for t in self.source))

    def to_dict(self) -> dict:
        tables = {t: {"source": self.source[t], "target": self.target.get(t), "copied_now": self.copied.get(t, 0)}
                  for t in self.source}
        return {
            "ok": self.ok,
            "tables": tables,
            "files": {"source": self.files_source, "target": self.files_target,
                      "uploaded_now": self.files_uploaded, "bytes_uploaded_now": self.bytes_uploaded},
            "not_copied": {t: {"rows": n, "why": why} for t, (n, why) in self.not_copied.items()},
            "problems": self.problems,
            "warnings": self.warnings,
        }


class Progress:
    """What the migration tells its caller as it goes (the CLI draws a Rich progress bar from it)."""

    def start(self, rows: int, files: int, nbytes: int) -> None: ...

    def rows(self, n: int) -> None: ...

    def file(self, item: FileItem, uploaded: bool) -> None: ...


def _columns(db, table: str) -> list[str]:
    cur = db.conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [d[0] for d in cur.description]


def _chunks(items: list, n: int = ID_CHUNK) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            size += len(block)
            h.update(block)
    return size, h.hexdigest()


def _hash_object(storage, key: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with storage.open(key) as stream:
        for block in stream:
            size += len(block)
            h.update(block)
    return size, h.hexdigest()


class HomeMigration:
    def __init__(self, source_home: Path, source, target, storage, *, progress: Progress | None = None,
                 env=None):
        self.home = Path(source_home)
        self.src = source
        self.dst = target
        self.storage = storage
        self.progress = progress or Progress()
        self.env = os.environ if env is None else env
        self.report = Report()
        self._uploads = 0
        self._target_cols: dict[str, list[str]] = {}
        self._source_cols: dict[str, list[str]] = {}
        self._pg = getattr(target, "backend", "sqlite") == "postgresql"

    # -- reading the source ----------------------------------------------------------------------------------------
    def _source_tables(self) -> set[str]:
        return {r["name"] for r in self.src.query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _rows(self, table: str, where: str = "", params=()) -> list[dict]:
        order = "created_at, id" if table == "generations" else KEYS[table]  # oldest generation first
        return self.src.query(f"SELECT * FROM {table} {where} ORDER BY {order}", params)

    def _cols(self, table: str) -> list[str]:
        """The columns both sides have (the target may have more, from cluster-only migrations)."""
        if table not in self._target_cols:
            self._source_cols[table] = _columns(self.src.db, table)
            self._target_cols[table] = _columns(self.dst.db, table)
            missing = [c for c in self._source_cols[table] if c not in self._target_cols[table]]
            if missing:
                raise MigrateError(
                    f"the target's {table} table has no column {', '.join(missing)}: it was made by an older aigen",
                    hint="upgrade aigen where the cluster's migrations are run, then migrate again")
        return [c for c in self._source_cols[table] if c in self._target_cols[table]]

    # -- the files of one generation -------------------------------------------------------------------------------
    def _files_of(self, gen: dict, assets: list[dict]) -> tuple[list[FileItem], list[str]]:
        problems = []
        items: dict[str, FileItem] = {}
        described = {}
        for a in assets:
            if a.get("path") and a["status"] == "done":
                described[a["path"]] = (a.get("bytes"), a.get("sha256"))
        folder = self.home / CONTENT_DIR / gen["user_id"] / gen["id"]
        on_disk = []
        if folder.is_dir():
            for p in sorted(folder.rglob("*")):
                if p.is_file() and not p.name.startswith("."):  # dot files are temporaries of a write
                    on_disk.append(p)
        for p in on_disk:
            key = p.relative_to(self.home).as_posix()
            size_sha = described.get(key)
            items[key] = FileItem(key, p, p.stat().st_size, size_sha[1] if size_sha else None)
            if size_sha and size_sha[0] is not None and size_sha[0] != items[key].size:
                problems.append(f"{key}: {items[key].size} bytes on disk, but its assets row says {size_sha[0]}")
        for key in described:
            if key not in items:
                problems.append(f"{key}: the assets row says it is done, but the file is not in {self.home}")
        for a in assets:  # a poster outside the generation's folder is still the asset's
            poster = a.get("poster_path")
            if poster and a["status"] == "done" and poster not in items:
                p = self.home / poster
                if p.is_file():
                    items[poster] = FileItem(poster, p, p.stat().st_size, None)
                else:
                    problems.append(f"{poster}: the poster of asset {a['id']} is not in {self.home}")
        return list(items.values()), problems

    def _put(self, item: FileItem, tmpdir: Path) -> bool:
        """Make ``item`` present and verified in the target storage; True when it had to be uploaded."""
        from aigen.storage import ObjectMissing

        try:
            if self.storage.exists(item.key) and self.storage.size(item.key) == item.size:
                want = item.sha256 or _hash_file(item.path)[1]
                if _hash_object(self.storage, item.key)[1] == want:
                    return False
        except ObjectMissing:
            pass
        tmp = tmpdir / f"upload-{self._uploads}"
        try:
            shutil.copyfile(item.path, tmp)  # put_file consumes its temporary: never hand it the source
            size, sha = _hash_file(tmp)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise MigrateError(f"{item.key}: cannot read {item.path}: {e.strerror or e}") from None
        if size != item.size or (item.sha256 and sha != item.sha256):
            tmp.unlink(missing_ok=True)
            raise MigrateError(f"{item.key}: the file in {self.home} does not match its assets row "
                               f"({size} bytes, SHA-256 {sha[:12]}..., expected {item.sha256 or '-'}); not copied",
                               hint=f"check the home with `aigen --home {self.home} doctor`")
        try:
            self.storage.put_file(tmp, item.key)
        finally:
            tmp.unlink(missing_ok=True)
        got_size, got_sha = _hash_object(self.storage, item.key)
        if got_size != size or got_sha != sha:
            raise MigrateError(f"{item.key}: the copy in {self.storage.describe()} reads back as {got_size} bytes, "
                               f"SHA-256 {got_sha[:12]}... instead of {size} bytes, {sha[:12]}...")
        self._uploads += 1
        self.report.files_uploaded += 1
        self.report.bytes_uploaded += size
        kill_after = (self.env.get(KILL_AFTER_FILES_ENV) or "").strip()
        if kill_after and self._uploads >= int(kill_after):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return True

    # -- writing rows ----------------------------------------------------------------------------------------------
    def _insert(self, db, table: str, rows: list[dict]) -> int:
        if not rows:
            return 0
        cols = self._cols(table)
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
               "ON CONFLICT DO NOTHING")
        n = 0
        for r in rows:
            cur = db.conn.execute(sql, [r.get(c) for c in cols])
            n += max(cur.rowcount or 0, 0)
        self.report.copied[table] = self.report.copied.get(table, 0) + n
        return n

    def _present(self, table: str, keys: list) -> dict:
        """The target's rows (key -> row) among ``keys``."""
        key = KEYS[table]
        ident = IDENTITY.get(table, ())
        cols = ", ".join([key, *ident])
        found = {}
        for chunk in _chunks(keys):
            marks = ", ".join("?" for _ in chunk)
            for r in self.dst.query(f"SELECT {cols} FROM {table} WHERE {key} IN ({marks})", chunk):
                found[r[key]] = r
        return found

    def _check_clashes(self, table: str, rows: list[dict]) -> None:
        ident = IDENTITY.get(table)
        if not ident or not rows:
            return
        key = KEYS[table]
        present = self._present(table, [r[key] for r in rows])
        for r in rows:
            t = present.get(r[key])
            if t is not None and any(_norm(t[c]) != _norm(r[c]) for c in ident):
                mine = ", ".join(f"{c}={r[c]!r}" for c in ident)
                theirs = ", ".join(f"{c}={t[c]!r}" for c in ident)
                raise IdClash(
                    f"the target already holds {table} row {r[key]!r} as another row ({theirs}; this home has "
                    f"{mine}): the ids of this home clash with rows already in the cluster; nothing was copied",
                    hint="migrate into an empty cluster database (ids are kept so that events keep pointing "
                         "at their assets)")

    # -- the whole run ---------------------------------------------------------------------------------------------
    def run(self) -> Report:
        rep = self.report
        have = self._source_tables()
        for t, why in NOT_COPIED.items():
            if t in have:
                rep.not_copied[t] = (self.src.query_one(f"SELECT count(*) AS n FROM {t}")["n"], why)
        tables = [t for t in TABLES if t in have]
        users = self._rows("users") if "users" in have else []
        gens = self._rows("generations")
        assets_by_gen: dict[str, list[dict]] = {}
        for a in self._rows("assets"):
            assets_by_gen.setdefault(a["generation_id"], []).append(a)
        notes_by_gen: dict[str, list[dict]] = {}
        if "notifications" in have:
            for n in self._rows("notifications"):
                notes_by_gen.setdefault(n["generation_id"], []).append(n)
        events = self._rows("events") if "events" in have else []
        spent = self._rows("spent_links") if "spent_links" in have else []
        all_rows = {"users": users, "generations": gens,
                    "assets": [a for v in assets_by_gen.values() for a in v],
                    "notifications": [n for v in notes_by_gen.values() for n in v],
                    "events": events, "spent_links": spent}
        for t in tables:
            rep.source[t] = len(all_rows[t])
            self._cols(t)
        processing = [g["id"] for g in gens if g["status"] not in ("Completed", "Failed")]
        if processing:
            rep.warnings.append(
                f"{len(processing)} generation(s) are not final in the home ({', '.join(processing[:5])}"
                f"{', ...' if len(processing) > 5 else ''}): copied as they are; finish them with `aigen retry`")
        # Nothing is written before every id has been checked against the target.
        for t in ("generations", "assets", "notifications", "events"):
            if t in tables:
                self._check_clashes(t, all_rows[t])

        plans = []
        total_bytes = 0
        nfiles = 0
        for g in gens:
            files, problems = self._files_of(g, assets_by_gen.get(g["id"], []))
            plans.append((g, files, problems))
            nfiles += len(files)
            total_bytes += sum(f.size for f in files)
        rep.files_source = nfiles
        self.progress.start(sum(rep.source.values()), nfiles, total_bytes)

        with self.dst.transaction() as db:
            self._insert(db, "users", users)
        self.progress.rows(len(users))
        with tempfile.TemporaryDirectory(prefix="aigen-migrate-") as tmp:
            tmpdir = Path(tmp)
            for g, files, problems in plans:
                if problems:
                    rep.problems.extend(f"generation {g['id']}: {p}" for p in problems)
                    for f in files:
                        self.progress.file(f, False)
                    continue
                try:
                    for f in files:
                        self.progress.file(f, self._put(f, tmpdir))
                except MigrateError as e:
                    rep.problems.append(f"generation {g['id']}: {e.message}")
                    continue
                with self.dst.transaction() as db:
                    self._insert(db, "generations", [g])
                    self._insert(db, "assets", assets_by_gen.get(g["id"], []))
                    self._insert(db, "notifications", notes_by_gen.get(g["id"], []))
                self.progress.rows(1 + len(assets_by_gen.get(g["id"], [])) + len(notes_by_gen.get(g["id"], [])))
        for t, rows in (("events", events), ("spent_links", spent)):
            if t not in tables:
                continue
            for chunk in _chunks(rows):
                with self.dst.transaction() as db:
                    self._insert(db, t, chunk)
                self.progress.rows(len(chunk))
        if self._pg:
            self._advance_sequences()
        self._count(all_rows, plans)
        return rep

    def _advance_sequences(self) -> None:
        """Copied rows carry their ids: move each id sequence past them, or the next new row would clash."""
        with self.dst.transaction() as db:
            for t in SERIAL_TABLES:
                seq = db.conn.execute("SELECT pg_get_serial_sequence(?, 'id') AS s", (t,)).fetchone()["s"]
                if seq is None:  # ids not drawn from a sequence: nothing to move
                    continue
                # Never backwards: past both the highest id and what the sequence already gave out.
                db.conn.execute(
                    f"SELECT setval(?::regclass, greatest((SELECT coalesce(max(id), 0) FROM {t}), "
                    "coalesce(pg_sequence_last_value(?::regclass), 0)) + 1, false)", (seq, seq))

    def _count(self, all_rows: dict, plans: list) -> None:
        rep = self.report
        for t in rep.source:
            key = KEYS[t]
            rep.target[t] = len(self._present_keys(t, [r[key] for r in all_rows[t]]))
        present = 0
        for g, files, _ in plans:
            if not files:
                continue
            stored = set(self.storage.list(f"{CONTENT_DIR}/{g['user_id']}/{g['id']}/"))
            for f in files:
                if f.key in stored or (not f.key.startswith(f"{CONTENT_DIR}/{g['user_id']}/{g['id']}/")
                                       and self.storage.exists(f.key)):
                    present += 1
        rep.files_target = present

    def _present_keys(self, table: str, keys: list) -> set:
        key = KEYS[table]
        found = set()
        for chunk in _chunks(keys):
            marks = ", ".join("?" for _ in chunk)
            found.update(r[key] for r in self.dst.query(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})", chunk))
        return found


class SourceStore:
    """Open a home's database read-only, as it is: an older schema (migrations this aigen would add) is read
    as it stands, since upgrading it would write the source. Columns it lacks get the target's defaults."""

    @staticmethod
    def open(path):
        from aigen.store.core import Store

        class _Source(Store):
            def _check_readable(self) -> None:
                self.db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

        return _Source(path, readonly=True)


def _norm(v):
    return None if v is None else str(v)


def migrate_home(source_home: Path, source, target, storage, *, progress: Progress | None = None,
                 env=None) -> Report:
    return HomeMigration(source_home, source, target, storage, progress=progress, env=env).run()


__all__ = ["SourceStore", "HomeMigration", "IdClash", "MigrateError", "Progress", "Report", "migrate_home", "NOT_COPIED"]
