"""Sessions, CSRF tokens, exposure rules and the failed-login limiter.

The session is a signed cookie (itsdangerous, HMAC-SHA1 over a key derived
from the home's secret) holding a random session id, the user id once logged
in, how the login was made and an expiry. The expiry is inside the signed
payload, and checked against the app's clock, so tests need no sleeping.
A logged-in session is also a row in the `sessions` table (see
aigen/web/sessions.py), checked on every request: the cookie alone is not
enough once the row is revoked.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable
from urllib.parse import urlsplit

SESSION_SALT = "aigen.session"
CSRF_CONTEXT = b"aigen.csrf:"

# How a session was opened; on an address other than loopback, "id" (a
# user_id alone) is not enough, so a session opened that way on loopback does
# not carry over if the same home is later served on 0.0.0.0.
VIA_ID = "id"
VIA_CODE = "code"
VIA_LINK = "link"

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# A reverse proxy in front of a loopback server makes every request look
# local; any of these headers means the request really came from elsewhere.
FORWARDED_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_HOST")


def is_loopback_host(host: str) -> bool:
    # Asked of the peer's address and the Host header on every request: answered once per value
    # (a name can be at most 253 characters; longer values, which no cache should hold, are not kept).
    host = host or ""
    return _is_loopback_host(host) if len(host) <= 260 else _is_loopback_host.__wrapped__(host)


@functools.lru_cache(maxsize=1024)
def _is_loopback_host(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header: 'example.org:8000' -> 'example.org', '[::1]:80' -> '::1'."""
    header = (header or "").strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_port(header: str) -> tuple[str, int | None]:
    """A Host header as (name, port): 'example.org:8000' -> ('example.org', 8000), '[::1]' -> ('::1', None).

    A port that is not a number comes back as -1, which matches nothing.
    """
    header = (header or "").strip().lower()
    port: str | None
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif header.count(":") == 1:
        name, port = header.split(":")
    else:
        name, port = header, None
    if not port:
        return name, None
    return name, int(port) if port.isdigit() else -1


def url_host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return (urlsplit(url).hostname or "").lower() or None
    except ValueError:
        return None


@dataclass(frozen=True)
class Session:
    sid: str
    user_id: str | None = None
    via: str | None = None
    exp: int = 0
    login_at: int = 0
    code_at: str | None = None  # access_code_created_at when logged in by code

    @functools.cached_property
    def key(self) -> str:
        """The session's name in the database and in events: a hash, never the id itself."""
        return hashlib.sha256(self.sid.encode()).hexdigest()

    def to_payload(self) -> dict:
        d = {"s": self.sid, "e": self.exp}
        if self.user_id:
            d.update(u=self.user_id, v=self.via, t=self.login_at)
            if self.code_at:
                d["c"] = self.code_at
        return d

    @classmethod
    def from_payload(cls, d: dict) -> "Session | None":
        if not isinstance(d, dict) or not isinstance(d.get("s"), str) or not isinstance(d.get("e"), int):
            return None
        return cls(sid=d["s"], user_id=d.get("u"), via=d.get("v"), exp=d["e"], login_at=d.get("t", 0),
                   code_at=d.get("c"))


class SessionCodec:
    """Signs and checks session cookies.

    A cookie whose signature was checked once is remembered (the exact text,
    least recently used out): a video's Range requests and a page's files all
    carry the same cookie, and checking the signature and decoding the JSON
    again each time was a third of the cost of a Range request
    (bench/fig4_gallery.py). Only the decoding is remembered: the expiry is
    checked against the clock on every call, and whether the session is still
    live is the caller's database check (Gallery.session_row), never this.
    """

    DECODED_MAX = 4096

    def __init__(self, secret: bytes, clock: Callable[[], datetime]):
        from itsdangerous import URLSafeSerializer

        self._signer = URLSafeSerializer(secret, salt=SESSION_SALT)
        self._secret = secret
        self._clock = clock
        self._decoded: collections.OrderedDict = collections.OrderedDict()
        self._decoded_lock = threading.Lock()

    def new(self, ttl_s: int, **fields) -> Session:
        now = int(self._clock().timestamp())
        return Session(sid=secrets.token_urlsafe(16), exp=now + ttl_s, **fields)

    def dumps(self, session: Session) -> str:
        return self._signer.dumps(session.to_payload())

    def loads(self, text: str | None) -> Session | None:
        from itsdangerous import BadData

        if not text or len(text) > 4096:
            return None
        with self._decoded_lock:
            session = self._decoded.get(text)
            if session is not None:
                self._decoded.move_to_end(text)
        if session is None:
            try:
                payload = self._signer.loads(text)
            except BadData:
                return None
            session = Session.from_payload(payload)
            if session is None:
                return None
            with self._decoded_lock:
                self._decoded[text] = session
                while len(self._decoded) > self.DECODED_MAX:
                    self._decoded.popitem(last=False)
        if session.exp < self._clock().timestamp():
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._secret, CSRF_CONTEXT + session.sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session), token)


class LoginLimiter:
    """At most `limit` failed logins per address in a sliding `window` seconds.

    Kept in the database (table login_failures, migration 0012), so that every
    gallery process sharing it counts alike: failures on one host count on
    the others, and a restart forgets nothing. Times are the wall clock
    (`clock`, a datetime in UTC), the same on every host. Rows older than the
    window are deleted as new failures come in, so the table holds one
    window's failures at most.
    """

    def __init__(self, store, limit: int = 10, window: float = 60.0, clock: Callable[[], datetime] | None = None):
        from aigen.store.core import utcnow

        self.store = store
        self.limit = limit
        self.window = window
        self.clock = clock or utcnow

    def _cutoff(self, now: datetime) -> str:
        from aigen.store.core import iso

        return iso(now - timedelta(seconds=self.window))

    def blocked(self, address: str) -> float:
        """Seconds until the next attempt is allowed, 0 when allowed now."""
        now = self.clock()
        cutoff = self._cutoff(now)
        row = self.store.query_one("SELECT count(*) AS n FROM login_failures WHERE address = ? AND at > ?",
                                   (address, cutoff))
        n = int(row["n"]) if row else 0
        if n < self.limit:
            return 0.0
        # Allowed again once enough of these failures have left the window to bring the count below the limit.
        row = self.store.query_one(
            "SELECT at FROM login_failures WHERE address = ? AND at > ? ORDER BY at LIMIT 1 OFFSET ?",
            (address, cutoff, n - self.limit))
        if row is None:
            return 0.0
        at = datetime.fromisoformat(row["at"])
        return max(0.0, (at + timedelta(seconds=self.window) - now).total_seconds())

    def failure(self, address: str) -> None:
        from aigen.store.core import iso

        now = self.clock()
        with self.store.transaction() as db:
            db.conn.execute("DELETE FROM login_failures WHERE at <= ?", (self._cutoff(now),))
            db.conn.execute("INSERT INTO login_failures (address, at) VALUES (?, ?)", (address, iso(now)))

    def reset(self, address: str) -> None:
        with self.store.transaction() as db:
            db.conn.execute("DELETE FROM login_failures WHERE address = ?", (address,))


class ViewDedupe:
    """Remembers which (session, asset, purpose) views were already logged.

    A browser fetches one video in many Range requests, some of them in
    parallel; the lock makes "seen? else log" atomic within the server, and
    the database check (on the session_id/asset_id index) covers a restart.
    """

    MAX_KEYS = 100_000

    def __init__(self):
        self._seen: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def seen(self, key: tuple) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: tuple) -> None:
        self._seen[key] = True
        if len(self._seen) > self.MAX_KEYS:
            self._seen.popitem(last=False)
