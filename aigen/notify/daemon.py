"""Deliver due notifications: one step (`run_once`) and the daemon loop (`run`).

Time is a parameter everywhere: `run_once(now)` takes the instant to act at,
and `run(stop, clock, wait)` takes the clock and the way to wait, so tests
drive a whole day of the daemon without sleeping.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable

from aigen.config import Home
from aigen.locks import is_held
from aigen.notify import desktop as desktop_mod
from aigen.notify import mail as mail_mod
from aigen.notify import queue
from aigen.notify.message import Notice, compose, thumbnail_jpeg
from aigen.store.core import iso, utcnow

log = logging.getLogger("aigen.notify")

# The daemon wakes at least this often, so requests made while it sleeps
# towards a far-off due time (or an empty queue) are noticed soon.
DEFAULT_MAX_SLEEP_S = 30.0
# A generation that finished moments ago is left to `aigen generate`, which
# delivers it itself in the user's terminal (see queue.plan).
DEFAULT_SETTLE = timedelta(seconds=5)
# After an unexpected error (database locked for a minute, disk full) the
# loop waits this long before trying again, rather than spinning.
ERROR_PAUSE_S = 5.0
# Desktop and console are local: a failure there is retried a few times
# only when it was an internal error, not a missing display.
INTERNAL_RETRY_FOR = timedelta(hours=1)

LOCK_DIR = "locks"
LOCK_PREFIX = "notify-daemon."
# Cluster store: how often a daemon refreshes its row in notify_daemons, and how old a row may be and
# still count as a running daemon (a long email send holds the loop for up to a couple of minutes).
HEARTBEAT_S = 30.0
DAEMON_FRESH = timedelta(minutes=5)


@dataclass
class ChannelReport:
    channel: str
    status: str  # sent | retrying | failed
    via: str | None = None
    note: str | None = None
    error: str | None = None
    recipient: str | None = None
    next_attempt_at: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Delivery:
    """What happened to the notification of one generation in one step."""

    generation_id: str
    user_id: str
    status: str  # the generation's status: Completed | Failed
    due_at: datetime
    at: datetime
    delay_s: float  # seconds after its due time
    title: str
    channels: list[ChannelReport] = field(default_factory=list)
    taken_over: bool = False  # the previous sender's lease ran out: it may have been sent before
    late: bool = False  # late enough to say so in the message
    message: dict | None = None  # title, text and link, when it was shown on the console

    @property
    def delivered(self) -> bool:
        """Whether this step delivered the notification through at least one channel."""
        return any(c.status == "sent" for c in self.channels)

    @property
    def outcome(self) -> str:
        states = {c.status for c in self.channels}
        if states == {"sent"}:
            return "sent"
        if "retrying" in states:
            return "retrying"
        return "partial" if "sent" in states else "failed"

    def to_dict(self) -> dict:
        return {
            "generation_id": self.generation_id,
            "user_id": self.user_id,
            "generation_status": self.status,
            "outcome": self.outcome,
            "due_at": iso(self.due_at),
            "delivered_at": iso(self.at),
            "delay_s": self.delay_s,
            "late": self.late,
            "title": self.title,
            "channels": [c.to_dict() for c in self.channels],
            **({"taken_over": True} if self.taken_over else {}),
            **({"message": self.message} if self.message else {}),
        }


# console_sink(notice, context): show a notice on the console; context says why
# ("console" when it was asked for, else why the desktop could not be used).
ConsoleSink = Callable[[Notice, str], None]


class Notifier:
    """Plans, claims and sends notifications of one home.

    Channels are injectable so tests can watch and break them: ``console``
    shows a notice (the CLI passes a Rich panel printer), ``desktop_detect``
    and ``desktop_send`` decide and show desktop notifications,
    ``smtp_settings`` and ``email_send`` deliver mail.
    """

    def __init__(
        self,
        store,
        home: Home,
        *,
        console: ConsoleSink,
        owner: str | None = None,
        settle: timedelta = DEFAULT_SETTLE,
        lease: timedelta = queue.DEFAULT_LEASE,
        desktop_detect: Callable[[], desktop_mod.DesktopSupport] = desktop_mod.detect,
        desktop_send: Callable[[str, str, desktop_mod.DesktopSupport], None] = desktop_mod.send,
        smtp_settings: Callable[[], "mail_mod.SmtpSettings | None"] | None = None,
        email_send: Callable[["mail_mod.SmtpSettings", object, str], None] = mail_mod.send_email,
        link_for: Callable[[str, str, datetime], str] | None = None,
        tz=None,
    ):
        self.store = store
        self.home = home
        self.console = console
        self.owner = owner or queue.make_owner("daemon")
        self.settle = settle
        self.lease = lease
        self.desktop_detect = desktop_detect
        self.desktop_send = desktop_send
        self.smtp_settings = smtp_settings or (lambda: mail_mod.load_smtp_settings(home=home.path))
        self.email_send = email_send
        self.link_for = link_for or self._magic_link
        self.tz = tz
        self._desktop: desktop_mod.DesktopSupport | None = None

    # -- the desktop decision is made once per process, and logged ----------
    def desktop_support(self) -> desktop_mod.DesktopSupport:
        if self._desktop is None:
            self._desktop = self.desktop_detect()
            if self._desktop.available:
                log.info("desktop notifications: available (%s)", self._desktop.reason)
            else:
                log.warning("desktop notifications unavailable: %s; using the console instead", self._desktop.reason)
        return self._desktop

    def _magic_link(self, user_id: str, generation_id: str, now: datetime) -> str:
        from aigen.web.links import magic_link

        return magic_link(self.home, user_id, generation_id, now=now)

    @staticmethod
    def link_validity() -> str:
        from aigen.web.links import DEFAULT_LINK_TTL

        days = DEFAULT_LINK_TTL.days
        return f"{days} days" if days != 1 else "1 day"

    # -- one step ---------------------------------------------------------------
    def run_once(self, now: datetime, *, generation_id: str | None = None,
                 stop: threading.Event | None = None,
                 clock: Callable[[], datetime] | None = None) -> list[Delivery]:
        """Plan what became final, then deliver everything due at ``now``; return what was done.

        With ``clock``, each later send in the step is stamped with its own
        time (a long batch of emails takes a while); without, all use ``now``.
        """
        settle = timedelta(0) if generation_id is not None else self.settle
        queue.plan(self.store, now, generation_id=generation_id, settle=settle)
        done: list[Delivery] = []
        while stop is None or not stop.is_set():
            c = queue.claim(self.store, now, self.owner, lease=self.lease, generation_id=generation_id)
            if c is None:
                break
            done.append(self.deliver(c, now))
            if clock is not None:
                now = max(now, clock())
        return done

    def next_wake(self, now: datetime) -> datetime | None:
        return queue.next_due(self.store, now, settle=self.settle)

    # -- the loop -------------------------------------------------------------------
    def run(self, stop: threading.Event, clock: Callable[[], datetime] = utcnow,
            wait: Callable[[float], object] | None = None, *, max_sleep: float = DEFAULT_MAX_SLEEP_S,
            on_delivery: Callable[[Delivery], None] | None = None) -> int:
        """Deliver until ``stop`` is set; return how many notifications were delivered (attempts to
        retry later and failures are not counted).

        Between steps it sleeps until the next due time, but never longer than
        ``max_sleep``, so a new request is noticed without spinning.
        """
        wait = wait or stop.wait
        count = 0
        registry = self.in_registry()
        if registry:
            # Several machines: its row in notify_daemons tells `aigen generate` anywhere that it runs.
            max_sleep = min(max_sleep, HEARTBEAT_S)
        last_beat = None
        while not stop.is_set():
            now = clock()
            try:
                if registry and (last_beat is None or (now - last_beat).total_seconds() >= HEARTBEAT_S):
                    self.heartbeat(now)
                    last_beat = now
                for d in self.run_once(now, stop=stop, clock=clock):
                    count += d.delivered  # deliveries, not attempts: a send to retry later is not one
                    if on_delivery is not None:
                        on_delivery(d)
                nxt = self.next_wake(clock())
            except Exception:
                # Keep the daemon alive through a locked or briefly unwritable
                # database; the claim leases make a retried step safe.
                log.exception("notify step failed; trying again in %.0f s", ERROR_PAUSE_S)
                wait(ERROR_PAUSE_S)
                continue
            if stop.is_set():
                break
            now = clock()
            delay = max_sleep if nxt is None else (nxt - now).total_seconds()
            wait(min(max(delay, 0.0), max_sleep))
        if registry:
            try:
                self.heartbeat(clock(), stopped=True)
            except Exception:
                log.warning("could not mark this daemon stopped in the database", exc_info=True)
        return count

    # -- the registry of running daemons (cluster store only) ---------------------------------------------
    def in_registry(self) -> bool:
        return getattr(self.store, "backend", "sqlite") == "postgresql"

    def heartbeat(self, now: datetime, *, stopped: bool = False) -> None:
        """Insert or refresh this daemon's row in notify_daemons (``stopped``: mark it stopped)."""
        now_s = iso(now)
        with self.store.transaction() as db:
            db.conn.execute(
                "INSERT INTO notify_daemons (owner, host, pid, home, started_at, seen_at, stopped_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at, "
                "stopped_at = excluded.stopped_at",
                (self.owner, queue.owner_host(self.owner) or queue.host_name(), os.getpid(), str(self.home.path),
                 now_s, now_s, now_s if stopped else None),
            )

    # -- sending one claim ---------------------------------------------------------
    def deliver(self, c: queue.Claim, now: datetime) -> Delivery:
        gen = self.store.get_generation(c.generation_id)
        due = c.due_at
        delay_s = round((now - due).total_seconds(), 3)
        report = Delivery(gen["id"], gen["user_id"], gen["status"], due, now, delay_s, "",
                          taken_over=bool(c.taken_over))
        try:
            notice = compose(
                self.home, gen, self.store.assets(gen["id"]),
                link=self.link_for(gen["user_id"], gen["id"], now), link_valid=self.link_validity(),
                due_at=due, now=now, tz=self.tz,
            )
        except Exception as exc:
            log.exception("could not prepare the notification of %s", gen["id"])
            for row in c.rows:
                outcome = self._internal_failure(row, now, f"could not prepare the message: {exc}")
                queue.record(self.store, row, outcome, now)
                report.channels.append(self._channel_report(row, outcome))
            return report
        report.title = notice.title
        report.late = notice.late_by is not None
        if notice.late_by is not None:
            log.info("generation %s: delivering late, it was due %s", gen["id"], notice.due_text)
        rows = sorted(c.rows, key=lambda r: queue.CHANNELS.index(r["channel"]) if r["channel"] in queue.CHANNELS else 9)
        # Desktop comes first: when it falls back to the console and the
        # console was asked for too, the panel is shown once, by the console row.
        console_asked = any(r["channel"] == "console" for r in rows)

        def show(context: str) -> None:
            self.console(notice, context)
            report.message = {"title": notice.title, "text": notice.text(), "link": notice.link, "context": context}

        for row in rows:
            try:
                if row["channel"] == "desktop":
                    outcome = self._send_desktop(notice, show=None if console_asked else show)
                elif row["channel"] == "email":
                    outcome = self._send_email(notice, row, now)
                elif row["channel"] == "console":
                    show("console")
                    outcome = queue.Outcome("sent", via="console")
                else:
                    outcome = queue.Outcome("failed", error=f"unknown channel {row['channel']!r}")
            except Exception as exc:
                log.exception("notification %s via %s failed unexpectedly", gen["id"], row["channel"])
                outcome = self._internal_failure(row, now, f"{type(exc).__name__}: {exc}")
            queue.record(self.store, row, outcome, now, late_s=delay_s)
            report.channels.append(self._channel_report(row, outcome))
            self._log_outcome(gen["id"], row, outcome)
        return report

    def _send_desktop(self, notice: Notice, *, show: Callable[[str], None] | None) -> queue.Outcome:
        support = self.desktop_support()
        reason = support.reason
        if support.available:
            try:
                self.desktop_send(notice.title, notice.desktop_text(), support)
                return queue.Outcome("sent", via="desktop", note=support.reason)
            except desktop_mod.DesktopError as exc:
                reason = f"the desktop notification failed: {exc}"
                log.warning("%s; using the console instead", reason)
        # Fall back to the console, honestly recorded as such.
        if show is not None:
            show(f"desktop notifications are unavailable: {reason}")
        return queue.Outcome("sent", via="console", note=f"desktop unavailable: {reason}")

    def _send_email(self, notice: Notice, row: dict, now: datetime) -> queue.Outcome:
        recipient = row.get("recipient") or (self.store.get_user(notice.user_id) or {}).get("email")
        if not recipient:
            return queue.Outcome(
                "failed",
                error=f"no email address for user {notice.user_id}: give one with `aigen generate ... --email ADDRESS`",
            )
        try:
            settings = self.smtp_settings()
        except Exception as exc:  # a broken config file: permanent until someone fixes it
            settings, problem = None, getattr(exc, "message", str(exc))
        else:
            problem = "no SMTP server is configured: set AIGEN_SMTP_HOST (see the README)"
        if settings is None:
            return self._retry_or_fail(row, now, problem, transient=True, retry_for=mail_mod.DEFAULT_RETRY_FOR_S)
        thumb = thumbnail_jpeg(notice.thumbnail) if notice.thumbnail else None
        domain = settings.sender.rsplit("@", 1)[-1].strip(">") or "aigen.local"
        msg = mail_mod.build_email(
            notice, settings, recipient, thumbnail=thumb,
            # Fixed per row: a rare duplicate after a crash carries the same
            # id, which mail clients use to fold duplicates.
            message_id=f"<aigen.{notice.generation_id}.{row['id']}@{domain}>",
        )
        unconfirmed = int(row.get("unconfirmed_sends") or 0)
        msg_id = msg["Message-ID"]
        if unconfirmed:
            log.warning("generation %s: sending the email once more (same Message-ID %s): the server may have "
                        "stored the previous one, so the recipient may get 2 copies", notice.generation_id, msg_id)
        try:
            self.email_send(settings, msg, recipient)
        except mail_mod.MailError as exc:
            if not exc.after_data:
                return self._retry_or_fail(row, now, exc.message, transient=exc.transient,
                                           retry_for=settings.retry_for)
            # The server had the whole message when it failed: it may have stored it.
            # Send again at most once (one server kept every copy of every retry).
            unconfirmed += 1
            if unconfirmed >= 2:
                log.error("generation %s: not sending the email again: the server failed after the message data "
                          "on the first send and on the one resend (Message-ID %s); it may have been delivered",
                          notice.generation_id, msg_id)
                return queue.Outcome(
                    "failed", unconfirmed_sends=unconfirmed,
                    error=f"not confirmed: {exc.message}; sent twice (the first send and one resend, Message-ID "
                          f"{msg_id}) and not again, so that no more copies arrive: check the inbox of {recipient}",
                )
            outcome = self._retry_or_fail(row, now, exc.message, transient=True, retry_for=settings.retry_for)
            outcome.unconfirmed_sends = unconfirmed
            if outcome.status == "retrying":
                log.warning("generation %s: %s; it will be sent once more, with the same Message-ID %s, at %s, "
                            "and not again", notice.generation_id, exc.message, msg_id, iso(outcome.next_attempt_at))
            return outcome
        note = f"to {recipient} via {settings.host}:{settings.port}"
        if unconfirmed:
            note += (f"; resent once after a send the server did not confirm (the recipient may see 2 copies "
                     f"with Message-ID {msg_id})")
        return queue.Outcome("sent", via="email", note=note)

    def _retry_or_fail(self, row: dict, now: datetime, error: str, *, transient: bool,
                       retry_for: float) -> queue.Outcome:
        attempts = row["attempts"] or 1
        first = queue.parse_utc(row.get("first_attempt_at")) or now
        deadline = first + timedelta(seconds=retry_for)
        if transient and now < deadline:
            nxt = min(now + timedelta(seconds=mail_mod.backoff_delay(attempts)), deadline)
            return queue.Outcome("retrying", error=error, next_attempt_at=nxt)
        if transient:
            spent = _short_duration(now - first)
            error = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} over {spent}: {error}"
        return queue.Outcome("failed", error=error)

    def _internal_failure(self, row: dict, now: datetime, error: str) -> queue.Outcome:
        return self._retry_or_fail(row, now, error, transient=True, retry_for=INTERNAL_RETRY_FOR.total_seconds())

    @staticmethod
    def _channel_report(row: dict, outcome: queue.Outcome) -> ChannelReport:
        return ChannelReport(
            channel=row["channel"], status=outcome.status, via=outcome.via, note=outcome.note, error=outcome.error,
            recipient=row.get("recipient"),
            next_attempt_at=iso(outcome.next_attempt_at) if outcome.status == "retrying" else None,
        )

    @staticmethod
    def _log_outcome(gen_id: str, row: dict, outcome: queue.Outcome) -> None:
        channel = row["channel"]
        if outcome.status == "sent":
            if outcome.via == channel:
                log.info("generation %s: %s notification sent", gen_id, channel)
            else:
                log.info("generation %s: %s notification shown on the %s instead", gen_id, channel, outcome.via)
        elif outcome.status == "retrying":
            log.warning("generation %s: %s not delivered (%s); next attempt at %s", gen_id, channel,
                        outcome.error, iso(outcome.next_attempt_at))
        else:
            log.error("generation %s: %s notification failed: %s", gen_id, channel, outcome.error)


def _short_duration(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs < 120:
        return f"{secs} s"
    if secs < 7200:
        return f"{secs // 60} min"
    return f"{secs / 3600:.1f} h"


# -- is a daemon running? ------------------------------------------------------------
class DaemonMarker:
    """Marks this process as a running notify daemon, for `aigen generate` to see.

    Each daemon holds an exclusive lock on its own file ``locks/notify-daemon.<pid>.lock``;
    the OS drops the lock when the process dies, however it dies, so a file
    nobody holds is a leftover. Several daemons may run at once (the claims in
    the database keep them from sending anything twice).
    """

    def __init__(self, home: Home):
        self.dir = home.path / LOCK_DIR
        self.path = self.dir / f"{LOCK_PREFIX}{os.getpid()}.lock"
        self._fh = None

    def __enter__(self) -> "DaemonMarker":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no marker, `generate` says it cannot tell
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in _marker_files(self.dir):
            if stale != self.path and not is_held(stale):
                stale.unlink(missing_ok=True)
        # Lock under a temporary name, then rename: a checker never sees the
        # final name unlocked while this daemon is starting.
        tmp = self.dir / f".{LOCK_PREFIX}{os.getpid()}.tmp"
        fh = open(tmp, "w")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        os.replace(tmp, self.path)
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            self._fh.close()
            self._fh = None


def _marker_files(directory: Path) -> Iterable[Path]:
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{LOCK_PREFIX}*.lock"))


def running_daemons(home: Home) -> list[int] | None:
    """Pids of the notify daemons running on this home; None when this platform cannot tell."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover
        return None
    pids = []
    for path in _marker_files(home.path / LOCK_DIR):
        if is_held(path):
            try:
                pids.append(int(path.name[len(LOCK_PREFIX):-len(".lock")]))
            except ValueError:
                continue
    return pids


def live_daemons(store, now: datetime, *, fresh: timedelta = DAEMON_FRESH) -> list[dict]:
    """The notify daemons of a cluster store seen lately and not stopped: host, pid, seen_at (newest first)."""
    return store.query(
        "SELECT host, pid, seen_at, started_at FROM notify_daemons WHERE stopped_at IS NULL AND seen_at >= ? "
        "ORDER BY seen_at DESC", (iso(now - fresh),))
