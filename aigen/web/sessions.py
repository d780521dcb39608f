"""Gallery sessions as rows in the database: opened at login, checked on every
request, ended by logout, by rotating or revoking the user's access code, or
by `aigen user sessions ID --revoke-all`.

The signed cookie carries a random session id; the row is keyed by its
SHA-256, so the database alone (or a copy of it) is not enough to build a
cookie. Kept free of the web stack so that `aigen user ...` can use it
without importing Bottle.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from aigen.store.core import Store, iso, utcnow

KIND_CODE = "code"
KIND_LOOPBACK = "loopback"
KIND_MAGIC = "magic"
KINDS = (KIND_CODE, KIND_LOOPBACK, KIND_MAGIC)

# `last_seen` is written at most this often per session, so a page that
# loads 10 files does not make 10 writes.
TOUCH_EVERY = timedelta(minutes=1)
# Ended sessions are kept this long for `aigen user sessions --all`, then
# dropped at the next login of the same user.
KEEP_ENDED = timedelta(days=30)

WHY_LOGOUT = "logout"
WHY_ROTATED = "code rotated"
WHY_CODE_REVOKED = "code revoked"
WHY_ADMIN = "revoked by admin"
WHY_REPLACED = "replaced by a new login"


def session_key(sid: str) -> str:
    """What the database keeps of a session id (and what events record)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def link_key(token: str) -> str:
    return hashlib.sha256(b"aigen.link:" + token.encode()).hexdigest()


def insert(db, key: str, user_id: str, kind: str, *, now: datetime, expires: datetime, address: str | None,
           user_agent: str | None) -> None:
    """Add a session row inside the caller's transaction (`db` from Store.transaction())."""
    now_s = iso(now)
    db.conn.execute(
        "INSERT INTO sessions (id, user_id, kind, created_at, last_seen, expires_at, address, user_agent) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (key, user_id, kind, now_s, now_s, iso(expires), address, user_agent),
    )
    # Housekeeping on a path that writes anyway: this user's long-ended rows.
    cutoff = iso(now - KEEP_ENDED)
    db.conn.execute(
        "DELETE FROM sessions WHERE user_id = ? AND (expires_at < ? OR revoked_at < ?)", (user_id, cutoff, cutoff)
    )


def lookup(store: Store, key: str) -> dict | None:
    return store.query_one(
        "SELECT id, user_id, kind, expires_at, revoked_at, last_seen FROM sessions WHERE id = ?", (key,)
    )


def is_live(row: dict | None, now: datetime) -> bool:
    return bool(row) and not row["revoked_at"] and row["expires_at"] > iso(now)


def touch(store: Store, row: dict, now: datetime) -> bool:
    """Move last_seen to now if it is more than TOUCH_EVERY old; returns whether it wrote."""
    if row["last_seen"] and row["last_seen"] > iso(now - TOUCH_EVERY):
        return False
    with store.transaction() as db:
        db.conn.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (iso(now), row["id"]))
    return True


def revoke(db, key: str, why: str, now: datetime) -> bool:
    cur = db.conn.execute(
        "UPDATE sessions SET revoked_at = ?, revoked_why = ? WHERE id = ? AND revoked_at IS NULL", (iso(now), why, key)
    )
    return cur.rowcount > 0


def revoke_user(db, user_id: str, why: str, now: datetime) -> int:
    """End every session of `user_id` inside the caller's transaction; returns how many were live.

    Expired ones are marked too: "revoked" must hold whatever clock a
    server later checks them against.
    """
    live = db.conn.execute(
        "SELECT count(*) FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?",
        (user_id, iso(now)),
    ).fetchone()[0]
    db.conn.execute(
        "UPDATE sessions SET revoked_at = ?, revoked_why = ? WHERE user_id = ? AND revoked_at IS NULL",
        (iso(now), why, user_id),
    )
    # And every magic link made until now: one still in a mailbox must not
    # open a new session afterwards (see link_cancelled).
    db.conn.execute("UPDATE users SET sessions_ended_at = ? WHERE user_id = ?", (iso(now), user_id))
    return live


def link_cancelled(user: dict | None, issued_at: float) -> bool:
    """Was a magic link made at `issued_at` (Unix seconds) cancelled by ending all the user's sessions since?"""
    ended = (user or {}).get("sessions_ended_at")
    if not ended:
        return False
    return issued_at <= datetime.fromisoformat(ended).timestamp()


def spend_link(db, token: str, user_id: str, *, session_key_: str, link_expires: datetime, now: datetime) -> bool:
    """Record a magic link as used, inside the caller's transaction.

    Returns False when it was already used: the primary key makes the check
    and the record one statement, so two POSTs of one link racing each other
    cannot both win.
    """
    db.conn.execute("DELETE FROM spent_links WHERE expires_at < ?", (iso(now),))
    # ON CONFLICT rather than catching the driver's IntegrityError: on PostgreSQL a failed
    # statement would also abort the caller's transaction (both backends read this the same).
    cur = db.conn.execute(
        "INSERT INTO spent_links (token_hash, user_id, spent_at, expires_at, session_id) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(token_hash) DO NOTHING",
        (link_key(token), user_id, iso(now), iso(link_expires), session_key_),
    )
    return cur.rowcount == 1


def link_spent(store: Store, token: str) -> dict | None:
    return store.query_one("SELECT spent_at FROM spent_links WHERE token_hash = ?", (link_key(token),))


def list_sessions(store: Store, user_id: str, *, include_ended: bool = False, now: datetime | None = None,
                  ) -> list[dict]:
    now_s = iso(now or utcnow())
    sql = ("SELECT id, kind, created_at, last_seen, expires_at, revoked_at, revoked_why, address, user_agent "
           "FROM sessions WHERE user_id = ?")
    params: list = [user_id]
    if not include_ended:
        sql += " AND revoked_at IS NULL AND expires_at > ?"
        params.append(now_s)
    rows = store.query(sql + " ORDER BY created_at DESC, id", params)
    for r in rows:
        r["state"] = ("revoked" if r["revoked_at"] else "expired" if r["expires_at"] <= now_s else "active")
    return rows
