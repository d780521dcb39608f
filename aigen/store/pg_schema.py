"""The PostgreSQL form of every migration in aigen/store/migrations.py, by the same name.

A cluster store (AIGEN_DATABASE_URL=postgresql://...) applies these in order and
records each name in ``_aigen_migrations``; the SQLite store applies the
functions of migrations.py. Every name there has its entry here (a test checks
both lists and the columns they produce), so both backends hold the same
tables with the same meaning. Timestamps stay ISO-8601 UTC text, as in SQLite,
so that queries and comparisons read the same on both.

Add-only, like migrations.py: an entry is never edited once released.
"""

from __future__ import annotations

# (name, SQL run in one transaction). Filled from 0001 on; cluster-only migrations append at the end.
PG_MIGRATIONS: list[tuple[str, str]] = [
]

# notifymig: the registry of live notify daemons (see migrations.m0013_notify_daemons).
PG_MIGRATIONS.append(("0013_notify_daemons", """
CREATE TABLE IF NOT EXISTS notify_daemons (
    owner TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT,
    home TEXT,
    started_at TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    stopped_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_notify_daemons_seen_at ON notify_daemons (seen_at);
"""))
