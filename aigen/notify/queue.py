"""The notification queue in the database: plan, claim, record, summarise.

Delivery semantics. A notification is one row per generation and channel in
the ``notifications`` table. A sender (the daemon, or ``aigen generate`` in the
foreground) takes rows with :func:`claim`: inside one transaction it picks the
due rows of one generation and marks them ``sending`` with its own name and a
lease. On SQLite that transaction is ``BEGIN IMMEDIATE`` (one writer at a
time); on PostgreSQL (cluster mode, daemons on several machines) the rows are
picked with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent claimants
never wait for each other and never pick the same row. Only then does it
send, and it records the outcome with :func:`record`, which only applies while
the claim is still its own. So two senders never send the same row twice.

A claimant's name (:func:`make_owner`) carries its host, pid and a nonce. If a
sender dies between claiming and recording, its rows stay ``sending`` until
the lease runs out, then they are claimed again and sent. A sender on the
same host as the claimant may end the wait early when the claimant's process
is gone (a pid check); a claimant on another host is never judged by pid,
only by its lease (set ``AIGEN_NOTIFY_LEASE_S`` alike on every machine, and
keep the clocks in step: leases compare each host's own UTC time).
That choice makes delivery *at least once* across a crash in that window
(a few seconds at most: the time of one send) and *exactly once* otherwise.
The alternative, never re-sending a claimed row, would silently lose the
notification of a daemon killed mid-send, which is worse for someone waiting
for it; emails carry a Message-ID fixed per row, so a mail client can fold
the rare duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from aigen.store.core import iso

log = logging.getLogger("aigen.notify")

CHANNELS = ("desktop", "email", "console")
DEFAULT_CHANNELS = ("desktop",)
FINAL_GENERATION_STATES = ("Completed", "Failed")
# How long a claim protects a row. One send takes seconds (desktop) to a
# couple of minutes at worst (email: several SMTP steps, each with its own
# timeout), so a live sender never loses its claim to another.
DEFAULT_LEASE = timedelta(minutes=10)

# A row can be claimed when it is due, not waiting for a retry, and either
# open or held by a claim whose lease has run out; and only while its
# generation is final (a retried generation goes back to Processing).
# Three `?`, each bound to the same `now` (positional marks read the same on both backends).
_CLAIMABLE = """
    n.due_at <= ?
    AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= ?)
    AND (n.status IN ('pending', 'retrying') OR (n.status = 'sending' AND n.lease_until <= ?))
    AND g.status IN ('Completed', 'Failed') AND g.generated_at IS NOT NULL
"""


def _is_pg(store) -> bool:
    return getattr(store, "backend", "sqlite") == "postgresql"


def parse_notify_via(text: str) -> list[str]:
    """Read ``--notify-via``: comma-separated channels, or ``none``; an empty list means no notification."""
    from aigen.errors import BadInput

    items = [part.strip().lower() for part in (text or "").split(",")]
    items = [i for i in items if i]
    rule = "choose one or more of desktop, email, console, separated by commas (or none)"
    if not items:
        raise BadInput(f"invalid --notify-via {text!r}: it names no channel; {rule}")
    if "none" in items:
        if len(items) > 1:
            raise BadInput(f"invalid --notify-via {text!r}: 'none' cannot be combined with channels")
        return []
    out: list[str] = []
    for item in items:
        if item not in CHANNELS:
            raise BadInput(f"invalid --notify-via {text!r}: unknown channel {item!r}; {rule}")
        if item not in out:
            out.append(item)
    return out


def parse_utc(text: str | None) -> datetime | None:
    """Read a stored time; stored times are UTC, and a naive one is read as UTC."""
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


HOST_ENV = "AIGEN_HOST_NAME"
LEASE_ENV = "AIGEN_NOTIFY_LEASE_S"


def host_name(env=None) -> str:
    """This machine's name in claims: ``AIGEN_HOST_NAME`` if set, else the OS host name.

    Two machines must not share a name (a pid check would then judge one's
    claimant by the other's processes): set AIGEN_HOST_NAME where host names
    repeat (containers started from one image, tests simulating machines).
    """
    env = os.environ if env is None else env
    name = (env.get(HOST_ENV) or "").strip() or socket.gethostname() or "localhost"
    # '@' and ':' separate the parts of an owner; keep the name one part.
    return name.replace("@", "_").replace(":", "_")


def lease_from_env(env=None) -> timedelta:
    """The claim lease of a daemon: ``AIGEN_NOTIFY_LEASE_S`` seconds (default 600)."""
    from aigen.errors import BadInput

    env = os.environ if env is None else env
    raw = (env.get(LEASE_ENV) or "").strip()
    if not raw:
        return DEFAULT_LEASE
    try:
        secs = float(raw)
    except ValueError:
        raise BadInput(f"{LEASE_ENV}={raw!r} is not a number of seconds") from None
    if not 0.5 <= secs <= 86400:
        raise BadInput(f"{LEASE_ENV}={raw!r} must be between 0.5 and 86400 seconds",
                       hint="it must be longer than one send takes (an email: up to a couple of minutes)")
    return timedelta(seconds=secs)


def make_owner(role: str = "daemon") -> str:
    """A claimant's name: host and pid (to tell a dead claimant) plus a nonce (pids are reused)."""
    return f"{role}@{host_name()}:{os.getpid()}:{secrets.token_hex(3)}"


def owner_host(owner: str | None) -> str | None:
    """The host part of a claimant's name (None when it cannot be read)."""
    try:
        return owner.split("@", 1)[1].rsplit(":", 2)[0]
    except (AttributeError, IndexError, ValueError):
        return None


def _owner_is_dead(owner: str | None) -> bool:
    """True only when the claimant ran on this machine and its process is gone.

    A claimant on another host is never judged here: only its lease can end its claim.
    """
    if not owner or os.name != "posix":
        return False
    try:
        host_pid = owner.split("@", 1)[1]
        host, pid_text, _ = host_pid.rsplit(":", 2)
        pid = int(pid_text)
    except (IndexError, ValueError):
        return False
    if host != host_name() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


@dataclass
class Claim:
    """The due rows of one generation, now held by ``owner``."""

    generation_id: str
    rows: list[dict]
    owner: str
    claimed_at: datetime
    taken_over: list[str] = field(default_factory=list)  # previous owners whose lease ran out

    @property
    def due_at(self) -> datetime:
        return min(parse_utc(r["due_at"]) for r in self.rows)


def channels_of(gen: dict) -> list[str]:
    """The channels a generation asked for; NULL (not given) means the default."""
    via = gen.get("notify_via")
    if isinstance(via, str):
        try:
            via = json.loads(via)
        except ValueError:
            via = None
    if via is None:
        return list(DEFAULT_CHANNELS)
    return [c for c in via if isinstance(c, str)]


def plan(store, now: datetime, *, generation_id: str | None = None, settle: timedelta = timedelta(0)) -> int:
    """Create the rows of every final generation that has none yet; return how many generations.

    ``settle`` leaves generations that finished less than that long ago to
    the process that ran them: ``aigen generate`` in the foreground delivers
    its own notification a moment after completion, and would otherwise race
    the daemon for it (the claim keeps it exactly-once either way, but the
    console panel belongs in the user's terminal).
    """
    now_s = iso(now)
    pg = _is_pg(store)
    sql = (
        "SELECT g.id, g.user_id, g.notify_at, g.notify_via, g.notify_email, g.generated_at, u.email AS user_email "
        # INDEXED BY (SQLite): left to itself the planner walks every Completed
        # generation through the (status, notify_at) index; the partial index
        # holds only the unplanned ones (0.04 ms instead of 33 ms at 200k rows).
        # PostgreSQL's planner picks the partial index by itself.
        "FROM generations g " + ("" if pg else "INDEXED BY idx_generations_notify_unplanned ")
        + "LEFT JOIN users u ON u.user_id = g.user_id "
        "WHERE g.notify_status IS NULL AND g.status IN ('Completed', 'Failed') AND g.generated_at IS NOT NULL"
    )
    if generation_id is not None:
        sql += " AND g.id = ?"
        params: list = [generation_id]
    else:
        sql += " AND g.generated_at <= ?"
        params = [iso(now - settle)]
    if pg:
        # Daemons on several machines plan at once: each takes the generations
        # no other planner holds, in one order (no deadlock between them).
        sql += " ORDER BY g.generated_at, g.id FOR UPDATE OF g SKIP LOCKED"
    planned = 0
    with store.transaction() as db:
        for gen in [dict(r) for r in db.conn.execute(sql, params)]:
            generated = parse_utc(gen["generated_at"])
            asked = parse_utc(gen["notify_at"]) if gen["notify_at"] else None
            due = max(asked, generated) if asked else generated
            channels = []
            for c in channels_of(gen):
                if c not in channels:
                    channels.append(c)
            for channel in channels:
                row = {
                    "generation_id": gen["id"],
                    "channel": channel,
                    "due_at": iso(due),
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now_s,
                    "updated_at": now_s,
                }
                if channel == "email":
                    row["recipient"] = gen["notify_email"] or gen["user_email"]
                if channel not in CHANNELS:
                    row.update(status="failed", error=f"unknown channel {channel!r}")
                cols = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                db.conn.execute(
                    f"INSERT INTO notifications ({cols}) VALUES ({marks}) "
                    "ON CONFLICT(generation_id, channel) DO NOTHING",
                    list(row.values()),
                )
            if channels:
                _summarize(db, gen["id"], now_s)
            else:
                db.conn.execute(
                    "UPDATE generations SET notify_status = 'none' WHERE id = ?", (gen["id"],)
                )
            planned += 1
    return planned


def claim(store, now: datetime, owner: str, *, lease: timedelta = DEFAULT_LEASE,
          generation_id: str | None = None) -> Claim | None:
    """Atomically take the due rows of the generation that has waited longest.

    On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED``: a row
    another claimant is taking at this moment is skipped, not waited for, and
    once that claimant commits the row is ``sending`` under a live lease, so
    it no longer matches. On SQLite ``BEGIN IMMEDIATE`` makes claims one at a time.
    """
    now_s = iso(now)
    pg = _is_pg(store)
    lock = " FOR UPDATE OF n SKIP LOCKED" if pg else ""
    only, only_params = "", []
    if generation_id is not None:
        only, only_params = " AND n.generation_id = ?", [generation_id]
    with store.transaction() as db:
        # A claimant on this machine whose process is gone cannot finish its
        # send: expire its lease now rather than making the user wait it out.
        # (A claimant on another host is left to its lease: see _owner_is_dead.)
        for r in db.conn.execute(
            "SELECT id, claimed_by FROM notifications WHERE status = 'sending' AND lease_until > ? ORDER BY id", (now_s,)
        ).fetchall():
            if _owner_is_dead(r["claimed_by"]):
                db.conn.execute(
                    "UPDATE notifications SET lease_until = ? WHERE id = ? AND claimed_by = ? AND status = 'sending'",
                    (now_s, r["id"], r["claimed_by"]),
                )
        first = db.conn.execute(
            "SELECT n.generation_id FROM notifications n JOIN generations g ON g.id = n.generation_id "
            f"WHERE {_CLAIMABLE}{only} ORDER BY n.due_at, n.id LIMIT 1{lock}",
            [now_s, now_s, now_s, *only_params],
        ).fetchone()
        if first is None:
            return None
        gid = first["generation_id"]
        rows = [dict(r) for r in db.conn.execute(
            "SELECT n.* FROM notifications n JOIN generations g ON g.id = n.generation_id "
            f"WHERE {_CLAIMABLE} AND n.generation_id = ? ORDER BY n.id{lock}",
            [now_s, now_s, now_s, gid],
        )]
        if not rows:  # PostgreSQL: another claimant took them between the two statements
            return None
        taken_over = [r["claimed_by"] for r in rows if r["status"] == "sending"]
        lease_s = iso(now + lease)
        for r in rows:
            db.conn.execute(
                "UPDATE notifications SET status = 'sending', claimed_by = ?, claimed_at = ?, lease_until = ?, "
                "attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, ?), updated_at = ? "
                "WHERE id = ?",
                (owner, now_s, lease_s, now_s, now_s, r["id"]),
            )
            r.update(status="sending", claimed_by=owner, claimed_at=now_s, lease_until=lease_s,
                     attempts=(r["attempts"] or 0) + 1, first_attempt_at=r["first_attempt_at"] or now_s)
        _summarize(db, gid, now_s)
    for prev in taken_over:
        log.warning(
            "generation %s: took over a claim by %s whose lease ran out; it may have been delivered "
            "already before that sender stopped", gid, prev,
        )
    return Claim(gid, rows, owner, now, taken_over)


@dataclass
class Outcome:
    """What one channel did: sent (possibly through another channel), retry later, or failed."""

    status: str  # sent | retrying | failed
    via: str | None = None
    note: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    # Email: how many sends so far may have been stored by the server (None: unchanged).
    unconfirmed_sends: int | None = None


def record(store, row: dict, outcome: Outcome, now: datetime, *, late_s: float | None = None) -> bool:
    """Store the outcome of a claimed row; False when the claim was no longer ours."""
    now_s = iso(now)
    sent = outcome.status == "sent"
    with store.transaction() as db:
        cur = db.conn.execute(
            "UPDATE notifications SET status = ?, sent_at = ?, delivered_via = ?, note = ?, error = ?, "
            "next_attempt_at = ?, late_s = ?, lease_until = NULL, updated_at = ?, "
            "unconfirmed_sends = coalesce(?, unconfirmed_sends) "
            "WHERE id = ? AND claimed_by = ? AND status = 'sending'",
            (
                outcome.status,
                now_s if sent else None,
                outcome.via if sent else None,
                outcome.note,
                outcome.error,
                iso(outcome.next_attempt_at) if outcome.status == "retrying" else None,
                late_s if sent else None,
                now_s,
                outcome.unconfirmed_sends,
                row["id"],
                row["claimed_by"],
            ),
        )
        if cur.rowcount != 1:
            log.warning(
                "notification %s (%s of generation %s): the claim was taken over before the outcome "
                "(%s) could be recorded", row["id"], row["channel"], row["generation_id"], outcome.status,
            )
            return False
        _summarize(db, row["generation_id"], now_s)
    return True


def _summarize(db, gen_id: str, now_s: str) -> None:
    """Keep the generation's notify_* columns in step with its rows (what `aigen status` shows)."""
    rows = [dict(r) for r in db.conn.execute(
        "SELECT channel, status, sent_at, delivered_via, note, error, attempts, next_attempt_at "
        "FROM notifications WHERE generation_id = ? ORDER BY id", (gen_id,)
    )]
    states = {r["status"] for r in rows}
    sent = [r for r in rows if r["status"] == "sent"]
    if not rows:
        status = "none"
    elif "sending" in states:
        status = "sending"
    elif "retrying" in states:
        status = "retrying"
    elif "pending" in states:
        status = "pending"
    elif len(sent) == len(rows):
        status = "sent"
    elif sent:
        status = "partial"
    else:
        status = "failed"
    used = []
    for r in sent:
        via = r["delivered_via"] or r["channel"]
        label = via if via == r["channel"] else f"{via} (instead of {r['channel']})"
        if label not in used:
            used.append(label)
    errors = []
    for r in rows:
        if r["error"] and r["status"] in ("retrying", "failed"):
            text = f"{r['channel']}: {r['error']}"
            if r["status"] == "retrying":
                text += f" (attempt {r['attempts']}; retrying at {r['next_attempt_at']})"
            errors.append(text)
    notified = min((r["sent_at"] for r in sent), default=None)
    db.conn.execute(
        "UPDATE generations SET notify_status = ?, notified_at = ?, notify_channel = ?, notify_error = ? "
        "WHERE id = ?",
        (status, notified, ", ".join(used) or None, "; ".join(errors) or None, gen_id),
    )


def next_due(store, now: datetime, *, settle: timedelta = timedelta(0)) -> datetime | None:
    """The earliest time something may become claimable (None: nothing is scheduled)."""
    candidates = []
    pg = _is_pg(store)
    row = store.query_one(
        "SELECT min(" + ("greatest" if pg else "max") + "(n.due_at, coalesce(n.next_attempt_at, ''))) AS t "
        "FROM notifications n JOIN generations g ON g.id = n.generation_id "
        "WHERE n.status IN ('pending', 'retrying') "
        "AND g.status IN ('Completed', 'Failed') AND g.generated_at IS NOT NULL"
    )
    if row and row["t"]:
        candidates.append(parse_utc(row["t"]))
    row = store.query_one("SELECT min(lease_until) AS t FROM notifications WHERE status = 'sending'")
    if row and row["t"]:
        candidates.append(parse_utc(row["t"]))
    row = store.query_one(
        "SELECT min(generated_at) AS t FROM generations "
        + ("" if pg else "INDEXED BY idx_generations_notify_unplanned ") +
        "WHERE notify_status IS NULL "
        "AND status IN ('Completed', 'Failed') AND generated_at IS NOT NULL"
    )
    if row and row["t"]:
        candidates.append(parse_utc(row["t"]) + settle)
    return min(candidates) if candidates else None


def rows_for(store, generation_id: str) -> list[dict]:
    return store.query("SELECT * FROM notifications WHERE generation_id = ? ORDER BY id", (generation_id,))


def pending_count(store) -> int:
    row = store.query_one(
        "SELECT count(*) AS n FROM notifications WHERE status IN ('pending', 'retrying', 'sending')"
    )
    return row["n"] if row else 0
