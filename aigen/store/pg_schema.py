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
    ("0011_cluster_workers", """
CREATE TABLE IF NOT EXISTS workers (
    executor_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    state TEXT NOT NULL,
    providers TEXT,
    jobs INTEGER,
    recovered_by TEXT,
    recovered_at TEXT
);
CREATE INDEX IF NOT EXISTS idx_workers_state_heartbeat_at ON workers (state, heartbeat_at);
ALTER TABLE generations ADD COLUMN IF NOT EXISTS cancel_requested_at TEXT;
"""),
]
