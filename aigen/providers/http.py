"""The HTTP layer every cloud provider shares: retries, errors, sessions, downloads.

Stable API (used by openai, stability, runway and pictory):

* ``RetryPolicy`` / ``RetryPolicy.from_env(env)``: bounded retries with full-jitter
  exponential backoff that honours ``Retry-After`` / ``retry-after-ms``.
* ``with_retries(fn, policy=..., classify=..., provider=...)``: run ``fn()`` and retry
  it while the error it raised, once classified into a ``ProviderError``, says
  ``retryable``. Refusals (``Refused``) and quota errors (``QuotaExceeded``) are
  never retryable, so they are raised at once.
* ``error_for_status(...)`` / ``raise_for_response(resp, ...)``: the one mapping from an
  HTTP status and body to ``ProviderError`` / ``QuotaExceeded`` (providers refine it
  first for their own refusal shapes).
* ``error_from_requests(exc, ...)``: a ``requests`` exception as a ``ProviderError``;
  ``never_sent(exc)`` tells a connection that never opened (retried) from one lost
  after sending, and ``sent_but_lost(...)`` is the one error (and wording) for a paid
  call whose answer was lost after sending: "may have made and billed it", never retried.
* ``BodyLimits.from_env(env, deadline)`` / ``iter_body(resp, ...)``: a total deadline and
  a minimum rate for a response body, enforced on every recv (AIGEN_DOWNLOAD_DEADLINE,
  AIGEN_DOWNLOAD_MIN_RATE, AIGEN_DOWNLOAD_RATE_WINDOW).
* ``make_session(...)``: a ``requests.Session`` with default (connect, read) timeouts and
  an optional browser-like User-Agent (Pictory sits behind Cloudflare).
* ``download(url, dest, ...)``: stream a media URL to ``dest`` with a timeout, a total
  deadline, a size cap, a truncation check and a Content-Type + magic-bytes check.
  ``save_response(resp, dest, ..., paid=True)``: the same checks for a response already
  opened (an API that answers a POST with the media bytes; a cut-off answer is then
  ``sent_but_lost``, not a retryable truncation).
* ``timeout_from_env(env, default_read)``: (connect, read) timeouts, ``AIGEN_HTTP_TIMEOUT`` wins.
* ``paced_transport(httpx, limits, too_slow=...)``: the same limits for SDKs built on httpx/httpx2
  (openai, google-genai), as a transport handed to the SDK's client.
* ``sniff(head)`` / ``check_media_bytes(...)`` / ``write_media(...)``: magic-byte checks for
  bytes that arrive in a JSON body (base64) rather than from a URL.
* ``scrub(text, secrets)``: remove keys (and key-shaped tokens) from text meant for users.

Nothing here imports ``requests`` at module level: ``aigen providers`` and
``aigen --help`` import provider classes and must stay light.

Why a retry layer of our own rather than each SDK's: one bounded behaviour for
every provider (attempts *and* total time), the same messages, and a sleep that
tests can replace, so no test ever waits for real.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from aigen.errors import MediaCheckError, ProviderError, ProviderTimeout, QuotaExceeded

T = TypeVar("T")

# Looked up at call time (not bound at import), so tests can monkeypatch
# `aigen.providers.http.sleep` with a recorder and never wait for real.
sleep: Callable[[float], None] = time.sleep

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)

#: Statuses worth another attempt: request timeout, too early, rate limit, server side.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_SCALE_ENV = "AIGEN_RETRY_SCALE"
_ATTEMPTS_ENV = "AIGEN_RETRY_ATTEMPTS"
_MAX_TIME_ENV = "AIGEN_RETRY_MAX_TIME"


# --------------------------------------------------------------------------- retry policy
@dataclass
class RetryPolicy:
    """How often and how long to retry one call.

    ``max_attempts`` counts the first try. ``max_total`` bounds the whole thing in
    seconds (time spent in calls plus waits): a wait that would cross it is not
    taken. ``base``/``cap`` shape the full-jitter backoff: before attempt n+1 wait a
    random time in [0, min(cap, base * 2**n)]. A server's ``Retry-After`` replaces
    the backoff; one above ``retry_after_cap`` ends the retries (waiting less than
    the server asked only earns another 429). ``scale`` multiplies every wait
    (``AIGEN_RETRY_SCALE=0.001`` makes a test run instant).
    """

    max_attempts: int = 4
    max_total: float = 180.0
    base: float = 1.0
    cap: float = 30.0
    retry_after_cap: float = 120.0
    scale: float = 1.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    # None means the module-level `sleep`, resolved at each call.
    sleep: Callable[[float], None] | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "RetryPolicy":
        """The default policy, adjusted by AIGEN_RETRY_SCALE / _ATTEMPTS / _MAX_TIME."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for var, key, conv in (
            (_SCALE_ENV, "scale", float),
            (_ATTEMPTS_ENV, "max_attempts", int),
            (_MAX_TIME_ENV, "max_total", float),
        ):
            raw = (env.get(var) or "").strip()
            if raw:
                try:
                    value = conv(raw)
                except ValueError:
                    continue  # a malformed tuning knob must not break generation
                if value >= 0:
                    kw[key] = value
        kw.update(overrides)
        if "max_attempts" in kw:
            kw["max_attempts"] = max(1, int(kw["max_attempts"]))
        return cls(**kw)

    def backoff(self, retry_number: int) -> float:
        """Full jitter (AWS architecture blog): spreads clients that failed together."""
        ceiling = min(self.cap, self.base * (2 ** max(0, retry_number)))
        return self.rng.uniform(0, ceiling)

    def do_sleep(self, seconds: float) -> None:
        fn = self.sleep if self.sleep is not None else sleep
        fn(seconds * self.scale)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``Retry-After`` (seconds or HTTP date).

    Returns None when absent or unreadable. ``headers`` may be any mapping; lookups
    are case-insensitive. ``now`` (epoch seconds) is injectable for tests of dates.
    """
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    ra = lower.get("retry-after")
    if not ra:
        return None
    ra = ra.strip()
    try:
        value = float(ra)
        return value if value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], ProviderError | None],
    provider: str,
    what: str = "request",
    on_retry: Callable[[int, ProviderError, float], None] | None = None,
) -> T:
    """Call ``fn()`` until it returns, retrying classified-retryable errors within ``policy``.

    ``classify(exc)`` turns whatever ``fn`` raised into a ``ProviderError`` (with
    ``retryable`` and ``retry_after`` set), or returns None to let the exception
    through untouched (a bug should surface, not be retried). A ``ProviderError``
    raised by ``fn`` itself is used as is. ``on_retry(attempt, error, delay)`` is
    called before each wait (for logs or progress). When retries run out the last
    error is raised with "gave up after N attempts" added to its message.
    """
    start = policy.clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except ProviderError as e:
            err = e
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised if unknown
            err = classify(exc)
            if err is None:
                raise
            if err is not exc and err.__cause__ is None:
                err.__cause__ = exc
        if not err.retryable:
            raise err
        elapsed = policy.clock() - start
        if attempt >= policy.max_attempts:
            _give_up(err, attempt, elapsed, "")
        if err.retry_after is not None:
            if err.retry_after > policy.retry_after_cap:
                _give_up(
                    err, attempt, elapsed,
                    f"; the server asked to wait {err.retry_after:.0f} s, more than the "
                    f"{policy.retry_after_cap:.0f} s aigen waits",
                )
            delay = err.retry_after
        else:
            delay = policy.backoff(attempt - 1)
        if elapsed + delay * policy.scale > policy.max_total:
            _give_up(err, attempt, elapsed, f"; the next wait would pass the {policy.max_total:g} s limit")
        if on_retry is not None:
            on_retry(attempt, err, delay)
        policy.do_sleep(delay)


def _give_up(err: ProviderError, attempts: int, elapsed: float, why: str) -> None:
    noun = "attempt" if attempts == 1 else "attempts"
    err.message = f"{err.message} (gave up after {attempts} {noun} in {elapsed:.1f} s{why})"
    err.args = (err.message,)
    err.retryable = False
    raise err


# --------------------------------------------------------------------------- errors
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{6,}|pictai_[A-Za-z0-9_\-*]{6,}|key_[A-Za-z0-9]{16,}|AIza[A-Za-z0-9_\-]{20,}"
    r"|Bearer\s+[A-Za-z0-9._\-*]{8,})"
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Text safe to show: every given secret and anything shaped like an API key removed."""
    text = str(text)
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[redacted]")
    return _KEY_SHAPES.sub("[redacted]", text)


def body_message(body: Any, limit: int = 300) -> str:
    """The human part of a vendor error body (dict, JSON text or plain text), shortened."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        stripped = body.strip()
        try:
            body = json.loads(stripped) if stripped[:1] in "{[" else stripped
        except ValueError:
            body = stripped
    msg = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = str(err.get("message") or err.get("code") or "")
        elif isinstance(err, str):
            msg = err
        if not msg:
            errors = body.get("errors")
            if isinstance(errors, list) and errors:
                msg = "; ".join(str(x) for x in errors)
        for key in ("message", "detail", "error_message", "failure", "title", "name"):
            if msg:
                break
            val = body.get(key)
            if isinstance(val, str):
                msg = val
            elif isinstance(val, list) and val:
                msg = "; ".join(str(x.get("msg", x)) if isinstance(x, dict) else str(x) for x in val)
        data = body.get("data")
        if not msg and isinstance(data, dict):
            msg = str(data.get("error_message") or data.get("message") or "")
    elif isinstance(body, str):
        # An HTML error page says nothing useful in a terminal.
        msg = "" if body.lower().startswith(("<!doctype", "<html")) else body
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def error_for_status(
    provider: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    *,
    key_var: str | None = None,
    secrets: Iterable[str | None] = (),
    what: str = "request",
) -> ProviderError:
    """The error for a non-2xx answer; providers check their refusal shapes before calling this.

    401 -> key rejected (hint names ``key_var``), 402 -> ``QuotaExceeded``,
    408/425/429/5xx -> retryable (with Retry-After), anything else -> fatal.
    The message never contains a key: it is scrubbed with ``secrets``.
    """
    detail = scrub(body_message(body), secrets)
    suffix = f": {detail}" if detail else ""
    retry_after = parse_retry_after(headers)
    if status == 401:
        return ProviderError(
            f"{provider} rejected the API key (HTTP 401){suffix}",
            provider=provider, status=status, provider_code="auth",
            hint=(f"check {key_var} (`aigen keys list`, `aigen keys set {provider}`)" if key_var else None),
        )
    if status == 402:
        return QuotaExceeded(
            f"{provider}: out of credits or quota (HTTP 402){suffix}",
            provider=provider, status=status, provider_code="quota",
            hint=f"add credit to your {provider} account; retrying will not help until then",
        )
    if status == 429:
        return ProviderError(
            f"{provider}: rate limited (HTTP 429){suffix}",
            provider=provider, status=status, retryable=True, retry_after=retry_after,
            provider_code="rate_limited",
        )
    if status in RETRYABLE_STATUSES or status >= 500:
        what_happened = {408: "the server timed out waiting for the request", 425: "too early"}.get(
            status, "server error")
        return ProviderError(
            f"{provider}: {what_happened} (HTTP {status}){suffix}",
            provider=provider, status=status, retryable=status in RETRYABLE_STATUSES or status >= 500,
            retry_after=retry_after, provider_code=f"http_{status}",
        )
    if status == 403:
        return ProviderError(
            f"{provider}: access denied (HTTP 403){suffix}",
            provider=provider, status=status, provider_code="forbidden",
            hint=(f"check that {key_var} belongs to an account with access to this API" if key_var else None),
        )
    return ProviderError(
        f"{provider}: {what} rejected (HTTP {status}){suffix}",
        provider=provider, status=status, provider_code=f"http_{status}",
    )


def response_body(resp: Any) -> Any:
    """A requests response's body as JSON when it is JSON, else text (never raises)."""
    try:
        return resp.json()
    except Exception:  # noqa: BLE001 - any body shape is acceptable here
        try:
            return resp.text
        except Exception:  # noqa: BLE001
            return ""


def raise_for_response(
    resp: Any,
    *,
    provider: str,
    key_var: str | None = None,
    secrets: Iterable[str | None] = (),
    what: str = "request",
) -> None:
    """Raise ``error_for_status`` for a ``requests`` response that is not 2xx."""
    if 200 <= resp.status_code < 300:
        return
    raise error_for_status(
        provider, resp.status_code, resp.headers, response_body(resp),
        key_var=key_var, secrets=secrets, what=what,
    )


#: The one wording for "the paid request left, its answer did not arrive whole".
BILLED_NOTE = "the provider may have made and billed it; not retried so it is not paid for twice"
BILLED_HINT = "`aigen retry ID` makes a new one when you choose to (check the provider's dashboard first)"


def sent_but_lost(
    provider: str, what_happened: str, *, code: str, timeout: bool = False, hint: str | None = None,
) -> ProviderError:
    """The error for a paid, non-idempotent call whose request was sent but whose answer was lost.

    A read timeout, a connection dropped after sending, a cut-off or unreadable
    answer: the provider may already have made (and billed) the asset, so it is
    never retried automatically. One wording for every provider: "PROVIDER:
    WHAT (the provider may have made and billed it; not retried ...)".
    """
    cls = ProviderTimeout if timeout else ProviderError
    return cls(
        f"{provider}: {what_happened} ({BILLED_NOTE})", provider=provider, retryable=False,
        provider_code=code, hint=hint or BILLED_HINT,
    )


def never_sent(exc: BaseException) -> bool:
    """True when a connection error happened before the request left (refused, DNS, connect timeout).

    Walks the exception chain for urllib3's / httpx's connect-phase errors; any
    other connection failure (reset, remote closed, cut-off body) may have
    happened after the server got the request.
    """
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 12:
        name = type(cur).__name__
        if name in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ConnectTimeout",
                    "ConnectError", "ConnectionRefusedError", "gaierror"):
            return True
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException) and reason is not cur:
            cur = reason
        elif cur.args and isinstance(cur.args[0], BaseException):
            cur = cur.args[0]
        else:
            cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def error_from_requests(
    exc: BaseException, *, provider: str, idempotent: bool, secrets: Iterable[str | None] = ()
) -> ProviderError | None:
    """A ``requests`` exception as a ProviderError; None for anything that is not a network error.

    A connect failure means the request never left: always safe to retry ("could
    not reach"). Anything after sending (a read timeout, a reset, a cut-off body) on
    a non-idempotent call (creating a paid generation) may mean the work was done
    and billed, so it is reported with ``sent_but_lost``, not retried: never pay twice.
    """
    import requests

    if isinstance(exc, ProviderError):
        return exc
    text = scrub(str(exc), secrets)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ProviderTimeout(
            f"{provider}: timed out connecting to the server", provider=provider, retryable=True,
            provider_code="connect_timeout",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        if not idempotent:
            return sent_but_lost(provider, "no answer within the timeout", code="timeout", timeout=True,
                                 hint=f"raise the read timeout with {TIMEOUT_ENV}=SECONDS if it takes long; "
                                      + BILLED_HINT)
        return ProviderTimeout(
            f"{provider}: no answer from the server within the timeout", provider=provider,
            retryable=True, provider_code="timeout",
        )
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        # ChunkedEncodingError / a reset mid-body is a ConnectionError too, and then
        # the request did reach the server.
        sent = isinstance(exc, requests.exceptions.ChunkedEncodingError) or not never_sent(exc)
        if sent and not idempotent:
            return sent_but_lost(provider, f"the connection broke after the request was sent ({_short(text)})",
                                 code="connection_lost")
        if not sent:
            return ProviderError(
                f"{provider}: could not reach the server ({_short(text)})", provider=provider,
                retryable=True, provider_code="connection",
            )
        return ProviderError(
            f"{provider}: connection failed ({_short(text)})", provider=provider,
            retryable=True, provider_code="connection",
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return ProviderError(f"{provider}: request failed ({_short(text)})", provider=provider,
                             provider_code="request")
    return None


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------- sessions
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 120.0)


TIMEOUT_ENV = "AIGEN_HTTP_TIMEOUT"


def timeout_from_env(
    env: Mapping[str, str] | None, default_read: float, *, connect: float = 10.0
) -> tuple[float, float]:
    """(connect, read) seconds: ``AIGEN_HTTP_TIMEOUT`` (read seconds) overrides ``default_read``.

    The connect timeout never exceeds the read timeout, so a tiny test value
    stays tiny everywhere.
    """
    env = os.environ if env is None else env
    read = default_read
    raw = (env.get(TIMEOUT_ENV) or "").strip()
    if raw:
        try:
            value = float(raw)
            if value > 0:
                read = value
        except ValueError:
            pass
    return (min(connect, read), read)


def make_session(
    *,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    user_agent: str | None = None,
    browser_like: bool = False,
    headers: Mapping[str, str] | None = None,
):
    """A ``requests.Session`` whose every request has a (connect, read) timeout by default.

    ``browser_like=True`` sends a browser User-Agent (Cloudflare in front of some
    APIs rejects library agents); otherwise ``user_agent`` or "aigen/<version>".
    A per-call ``timeout=`` still wins. Use it as a context manager or close it.
    """
    import requests

    from aigen import __version__

    class _TimeoutSession(requests.Session):
        def request(self, method, url, **kw):  # type: ignore[override]
            kw.setdefault("timeout", timeout)
            return super().request(method, url, **kw)

    s = _TimeoutSession()
    s.headers["User-Agent"] = BROWSER_USER_AGENT if browser_like else (user_agent or f"aigen/{__version__}")
    if headers:
        s.headers.update(headers)
    return s


# --------------------------------------------------------------------------- media checks
IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
VIDEO_FORMATS = frozenset({"mp4", "mov", "webm"})


def sniff(head: bytes) -> str | None:
    """The format named by a file's first bytes (at least 16), or None.

    aigen.media.probe.sniff_kind reads a path; this works on bytes in memory, so
    a download is judged by its first chunk before the rest is fetched.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "mov" if brand == b"qt  " else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"free", b"wide"):
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return None


def _kind_of(fmt: str | None) -> str | None:
    if fmt in IMAGE_FORMATS:
        return "image"
    if fmt in VIDEO_FORMATS:
        return "video"
    return None


def check_media_head(head: bytes, expect: str, *, provider: str = "", source: str = "file") -> str:
    """Check the first bytes against ``expect`` ("image", "video" or a format such as "png").

    Returns the sniffed format; raises MediaCheckError naming what was found.
    """
    fmt = sniff(head)
    ok = fmt is not None and (fmt == expect or _kind_of(fmt) == expect)
    if not ok:
        found = fmt or _describe_unknown(head)
        who = f"{provider} " if provider else ""
        raise MediaCheckError(f"{who}{source} is not {_article(expect)} (its first bytes look like {found})")
    return fmt  # type: ignore[return-value]


def _article(expect: str) -> str:
    if expect in ("image", "video"):
        return f"an {expect}" if expect == "image" else "a video"
    return f"a {expect.upper()} file"


def _describe_unknown(head: bytes) -> str:
    text = head[:64].lstrip().lower()
    if text.startswith((b"<!doctype", b"<html")):
        return "an HTML page"
    if text[:1] in (b"{", b"["):
        return "JSON"
    if not head:
        return "nothing (empty)"
    return "unknown data"


def write_media(
    data: bytes, dest: Path, *, expect: str, max_bytes: int, provider: str = "", source: str = "image"
) -> str:
    """Check decoded bytes (magic, size cap) and write them to ``dest``; returns the format."""
    if len(data) > max_bytes:
        raise MediaCheckError(f"{provider} {source} is {len(data)} bytes, over the {max_bytes}-byte cap".strip())
    fmt = check_media_head(data[:64], expect, provider=provider, source=source)
    with open(dest, "wb") as fh:
        fh.write(data)
    return fmt


# --------------------------------------------------------------------------- downloads
@dataclass(frozen=True)
class Downloaded:
    path: Path
    bytes: int
    content_type: str
    format: str  # what the magic bytes say: "png", "jpeg", "mp4", ...


GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})
DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 1024 * 1024 * 1024


def download(
    url: str,
    dest: Path,
    *,
    timeout: float | tuple[float, float] = (10.0, 60.0),
    max_bytes: int,
    allowed_types: Iterable[str],
    expect_kind: str,
    provider: str = "",
    session: Any = None,
    headers: Mapping[str, str] | None = None,
    deadline: float | None = 600.0,
    policy: RetryPolicy | None = None,
    secrets: Iterable[str | None] = (),
    progress: Callable[[int, int | None], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    env: Mapping[str, str] | None = None,
    limits: BodyLimits | None = None,
) -> Downloaded:
    """Stream ``url`` into ``dest`` (overwritten), checking everything a bad day can break.

    * ``timeout``: (connect, read) per network operation; ``deadline``: seconds for
      the whole transfer, and a minimum rate (``BodyLimits.from_env(env, deadline)``:
      ``AIGEN_DOWNLOAD_DEADLINE`` / ``_MIN_RATE`` / ``_RATE_WINDOW`` override), both
      enforced on every recv, so a server that trickles bytes cannot hold a worker.
    * ``max_bytes``: refused up front from Content-Length, and enforced while reading.
    * Truncation: fewer bytes than Content-Length is a retryable ProviderError.
    * ``allowed_types``: Content-Type prefixes such as ``("image/",)`` or
      ``("video/mp4",)``; a generic ``application/octet-stream`` or a missing type is
      accepted only because the magic bytes are then checked anyway.
    * ``expect_kind``: "image", "video" or a format ("png", "mp4"): checked on the
      first bytes before the rest is read.
    * HTTP errors go through ``error_for_status`` (a 403/404 on an expired signed URL
      keeps its ``status`` so the caller can fetch a fresh URL).

    With ``policy``, retryable failures (5xx, 429, resets, truncation) are retried.
    The URL is never put in messages whole: signed URLs carry credentials.
    On failure ``dest`` is removed.
    """
    allowed = tuple(t.lower() for t in allowed_types)
    where = _url_for_messages(url)
    if limits is None:
        limits = BodyLimits.from_env(env, deadline)

    def attempt() -> Downloaded:
        try:
            return _download_once(
                url, dest, timeout=timeout, max_bytes=max_bytes, allowed=allowed, expect=expect_kind,
                provider=provider, session=session, headers=headers, limits=limits,
                secrets=secrets, progress=progress, clock=clock, where=where,
            )
        except BaseException:
            Path(dest).unlink(missing_ok=True)
            raise

    if policy is None:
        try:
            return attempt()
        except ProviderError:
            raise
        except MediaCheckError:
            raise
        except Exception as exc:  # noqa: BLE001
            err = error_from_requests(exc, provider=provider, idempotent=True, secrets=secrets)
            if err is None:
                raise
            raise err from exc
    return with_retries(
        attempt, policy=policy, provider=provider, what="download",
        classify=lambda e: error_from_requests(e, provider=provider, idempotent=True, secrets=secrets),
    )


def _url_for_messages(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else "the URL"


def _download_once(
    url, dest, *, timeout, max_bytes, allowed, expect, provider, session, headers, limits,
    secrets, progress, clock, where,
) -> Downloaded:
    own = session is None
    s = session if session is not None else make_session(timeout=timeout)
    started = clock()
    try:
        resp = s.get(url, stream=True, timeout=timeout, headers=dict(headers or {}), allow_redirects=True)
        with resp:
            if not 200 <= resp.status_code < 300:
                err = error_for_status(
                    provider, resp.status_code, resp.headers, _small_body(resp),
                    secrets=secrets, what="download",
                )
                err.message = f"{err.message} (downloading {where})"
                err.args = (err.message,)
                raise err
            return save_response(
                resp, dest, max_bytes=max_bytes, allowed_types=allowed, expect_kind=expect, provider=provider,
                limits=limits, progress=progress, clock=clock, started=started, where=where,
                noun="download",
            )
    finally:
        if own:
            s.close()


DEADLINE_ENV = "AIGEN_DOWNLOAD_DEADLINE"
MIN_RATE_ENV = "AIGEN_DOWNLOAD_MIN_RATE"
RATE_WINDOW_ENV = "AIGEN_DOWNLOAD_RATE_WINDOW"
DEFAULT_MIN_RATE = 1024.0  # bytes/s: a server slower than 1 KiB/s over a whole window is stuck, not slow
DEFAULT_RATE_WINDOW = 30.0  # seconds


@dataclass(frozen=True)
class BodyLimits:
    """How long a body may take: ``deadline`` seconds in all, at least ``min_rate`` bytes/s per ``window``.

    Both are enforced inside the read loop, on every ``recv`` (not between big
    chunks), and the socket's own timeout is shortened so a read never blocks
    past the deadline, however few bytes trickle in.
    """

    deadline: float | None = 600.0
    min_rate: float = DEFAULT_MIN_RATE
    window: float = DEFAULT_RATE_WINDOW

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None, deadline: float | None = 600.0) -> "BodyLimits":
        """``AIGEN_DOWNLOAD_DEADLINE`` (seconds) overrides ``deadline``; ``AIGEN_DOWNLOAD_MIN_RATE``
        (bytes/s, 0 turns the check off) and ``AIGEN_DOWNLOAD_RATE_WINDOW`` (seconds) the rate floor."""
        env = os.environ if env is None else env

        def num(var: str, default: float | None) -> float | None:
            raw = (env.get(var) or "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                return default  # a malformed tuning knob must not break generation
            return value if value >= 0 else default

        dl = num(DEADLINE_ENV, deadline)
        window = num(RATE_WINDOW_ENV, DEFAULT_RATE_WINDOW) or DEFAULT_RATE_WINDOW
        return cls(deadline=dl if dl else deadline, min_rate=num(MIN_RATE_ENV, DEFAULT_MIN_RATE) or 0.0,
                   window=window)


class _BodyTooSlow(Exception):
    """Internal: the deadline or the rate floor was crossed while reading a body."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _socket_of(resp: Any):
    raw = getattr(resp, "raw", None)
    conn = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:  # the connection was already released: reach it through the file object
        fp = getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(fp, "_sock", None)
    return sock if hasattr(sock, "settimeout") and hasattr(sock, "gettimeout") else None


def iter_body(
    resp: Any,
    *,
    limits: BodyLimits,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
    chunk_size: int = 64 * 1024,
):
    """Yield the decoded body of a ``stream=True`` requests response, chunk by chunk as bytes arrive.

    Each read is one ``recv`` (urllib3 ``read1``), so a server that trickles
    64 bytes a second is seen 64 bytes at a time, and the socket timeout is cut to
    what is left of the deadline (or of a rate window that is falling short), so
    even one byte a minute cannot hold the reader past ``limits.deadline``.
    Raises ``_BodyTooSlow`` (the caller words it) or what urllib3 raises.
    """
    started = clock() if started is None else started
    raw = getattr(resp, "raw", None)
    if raw is None or not hasattr(raw, "read1"):
        for chunk in resp.iter_content(chunk_size=chunk_size):  # pragma: no cover - non-urllib3 adapters
            yield chunk
            _check_pace(limits, clock() - started, None, None)
        return
    sock = _socket_of(resp)
    base_timeout = sock.gettimeout() if sock is not None else None
    received = 0
    # Windows start when the body does: waiting for the headers is the read timeout's business.
    window_start, window_bytes = clock(), 0
    try:
        while True:
            now = clock()
            elapsed = now - started
            if now - window_start >= limits.window:
                _check_pace(limits, elapsed, window_bytes, now - window_start, received)
                window_start, window_bytes = now, 0
            _check_pace(limits, elapsed, None, None, received)
            if sock is not None:
                waits = [w for w in (base_timeout,) if w]
                if limits.deadline is not None:
                    waits.append(max(0.01, limits.deadline - elapsed))
                if limits.min_rate > 0 and window_bytes < limits.min_rate * limits.window:
                    # Short of the floor: if nothing more comes before the window ends, that is a failure.
                    waits.append(max(0.01, window_start + limits.window - now))
                try:
                    sock.settimeout(min(waits) if waits else None)
                except OSError:
                    pass
            try:
                data = raw.read1(chunk_size, decode_content=True)
            except Exception as exc:  # noqa: BLE001 - a socket timeout we set ourselves is worded here
                now = clock()
                if _is_timeout(exc):
                    if limits.deadline is not None and now - started >= limits.deadline - 0.05:
                        raise _deadline_error(limits, now - started, received) from exc
                    if limits.min_rate > 0 and now - window_start >= limits.window - 0.05:
                        raise _rate_error(limits, window_bytes, now - window_start, received) from exc
                raise
            if not data:
                return  # end of the body (urllib3 checks Content-Length and raises if short)
            received += len(data)
            window_bytes += len(data)
            yield data
    finally:
        if sock is not None and base_timeout is not None:
            try:
                sock.settimeout(base_timeout)
            except OSError:
                pass


def paced_transport(httpx: Any, limits: "BodyLimits", *, too_slow: Callable[[Any, "_BodyTooSlow"], ProviderError],
                    **transport_kw: Any):
    """An ``httpx`` (or ``httpx2``) transport whose response bodies obey ``limits`` (deadline, minimum rate).

    For SDKs built on httpx (openai, google-genai), which read answers with a
    per-recv read timeout only, so a server trickling bytes could hold a worker
    for ever. httpcore yields each ``recv`` as a chunk, so the pace is checked as
    bytes arrive; a watchdog shuts the socket down at the deadline, so a stall
    cannot hold the worker up to the (long) read timeout. ``httpx`` is the module
    the SDK uses; ``too_slow(request, err)`` words the error raised (``err.message``
    says what was too slow): ``sent_but_lost`` for a paid answer, a retryable
    timeout for an idempotent one. The error propagates out of the SDK call as is.
    """
    import socket
    import threading

    class _PacedStream(httpx.SyncByteStream):
        def __init__(self, inner, sock, request):
            self.inner, self.sock, self.request = inner, sock, request
            self.fired = threading.Event()

        def _fire(self):
            self.fired.set()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def __iter__(self):
            started = time.monotonic()
            window_start, window_bytes, received = started, 0, 0
            timer = None
            if self.sock is not None and limits.deadline is not None:
                timer = threading.Timer(limits.deadline, self._fire)
                timer.daemon = True
                timer.start()
            try:
                try:
                    for chunk in self.inner:
                        received += len(chunk)
                        window_bytes += len(chunk)
                        now = time.monotonic()
                        if limits.deadline is not None and now - started > limits.deadline:
                            raise too_slow(self.request, _deadline_error(limits, now - started, received))
                        if now - window_start >= limits.window:
                            if limits.min_rate > 0 and window_bytes < limits.min_rate * limits.window:
                                raise too_slow(self.request, _rate_error(limits, window_bytes, now - window_start,
                                                                         received))
                            window_start, window_bytes = now, 0
                        yield chunk
                except ProviderError:
                    raise
                except Exception:
                    if self.fired.is_set():
                        raise too_slow(self.request, _deadline_error(limits, time.monotonic() - started,
                                                                     received)) from None
                    raise
                if self.fired.is_set():
                    raise too_slow(self.request, _deadline_error(limits, time.monotonic() - started, received))
            finally:
                if timer is not None:
                    timer.cancel()

        def close(self):
            self.inner.close()

    class _PacedTransport(httpx.HTTPTransport):
        def handle_request(self, request):
            resp = super().handle_request(request)
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            resp.stream = _PacedStream(resp.stream, sock, request)
            return resp

    return _PacedTransport(**transport_kw)


def _is_timeout(exc: BaseException) -> bool:
    import socket

    cur: BaseException | None = exc
    for _ in range(8):
        if cur is None:
            return False
        if isinstance(cur, (socket.timeout, TimeoutError)) or "timeout" in type(cur).__name__.lower():
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _check_pace(limits: BodyLimits, elapsed: float, window_bytes: int | None, window_len: float | None,
                received: int = 0) -> None:
    if limits.deadline is not None and elapsed > limits.deadline:
        raise _deadline_error(limits, elapsed, received)
    if (window_bytes is not None and window_len and limits.min_rate > 0
            and window_bytes < limits.min_rate * limits.window):
        raise _rate_error(limits, window_bytes, window_len, received)


def _deadline_error(limits: BodyLimits, elapsed: float, received: int) -> _BodyTooSlow:
    return _BodyTooSlow(f"took {elapsed:.1f} s, over its {limits.deadline:g} s deadline "
                        f"({received} bytes received)")


def _rate_error(limits: BodyLimits, window_bytes: int, window_len: float, received: int) -> _BodyTooSlow:
    rate = window_bytes / window_len if window_len > 0 else 0.0
    return _BodyTooSlow(f"is too slow: {rate:.0f} bytes/s over the last {window_len:.1f} s, under the "
                        f"{limits.min_rate:g} bytes/s minimum ({received} bytes received)")


def save_response(
    resp: Any,
    dest: Path,
    *,
    max_bytes: int,
    allowed_types: Iterable[str],
    expect_kind: str | None,
    provider: str = "",
    deadline: float | None = None,
    limits: BodyLimits | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
    where: str = "the response",
    noun: str = "answer",
    paid: bool = False,
) -> Downloaded:
    """Stream the body of a 2xx ``requests`` response (opened with ``stream=True``) into ``dest``.

    The checks of ``download`` without the GET: Content-Type against
    ``allowed_types``, Content-Length and received bytes against ``max_bytes``,
    magic bytes against ``expect_kind`` (checked on the first bytes, before the
    rest is read; None skips it, for a JSON answer), truncation, and ``limits`` (deadline since ``started`` and a
    minimum rate, enforced on every recv; ``deadline`` alone is a shortcut). For
    APIs that answer a POST with the media itself (Stability) pass ``paid=True``:
    a cut-off, too slow or unreadable answer then is a ``sent_but_lost`` error
    (never retried: the image may have been billed) instead of a retryable one.
    The caller removes ``dest`` on failure.
    """
    import requests
    import urllib3.exceptions as u3

    if limits is None:
        limits = BodyLimits(deadline=deadline, min_rate=0.0) if deadline is not None else BodyLimits(
            deadline=None, min_rate=0.0)
    allowed = tuple(t.lower() for t in allowed_types)
    started = clock() if started is None else started
    received = 0
    length: int | None = None
    of_length = ""

    def cut_off(what: str, code: str, *, timeout: bool = False) -> ProviderError:
        if paid:
            return sent_but_lost(provider, f"the {noun} {what} (from {where})", code=code, timeout=timeout)
        cls = ProviderTimeout if timeout else ProviderError
        return cls(f"{provider}: {noun} {what} (from {where})".strip(), provider=provider, retryable=True,
                   provider_code=code)

    try:
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in GENERIC_TYPES and not any(ctype.startswith(a) for a in allowed):
            raise MediaCheckError(
                f"{provider} {noun} has Content-Type {ctype!r}; expected {' or '.join(allowed)} "
                f"(from {where})".strip()
            )
        length = _content_length(resp.headers)
        of_length = f" of {length}" if length is not None else ""
        if length is not None and length > max_bytes:
            raise MediaCheckError(
                f"{provider} {noun} is {length} bytes, over the {max_bytes}-byte cap (from {where})".strip()
            )
        fmt: str | None = None
        head = b""
        with open(dest, "wb") as fh:
            for chunk in iter_body(resp, limits=limits, clock=clock, started=started):
                if fmt is None:
                    head += chunk
                    if len(head) >= 16:
                        fmt = check_media_head(head, expect_kind, provider=provider, source=noun) \
                            if expect_kind else ""
                received += len(chunk)
                if received > max_bytes:
                    raise MediaCheckError(
                        f"{provider} {noun} passed the {max_bytes}-byte cap (from {where})".strip()
                    )
                fh.write(chunk)
                if progress is not None:
                    progress(received, length)
        if fmt is None:
            fmt = check_media_head(head, expect_kind, provider=provider, source=noun) if expect_kind else ""
        if length is not None and received < length:
            raise cut_off(f"was truncated: received {received} of {length} bytes", "truncated")
        if paid and fmt and not media_is_complete(Path(dest), fmt):
            raise cut_off(f"is cut off: the {fmt.upper()} data ends early ({received} bytes)", "truncated")
        return Downloaded(Path(dest), received, ctype, fmt)
    except _BodyTooSlow as exc:
        raise cut_off(exc.message, "download_timeout", timeout=True) from None
    except (requests.exceptions.ChunkedEncodingError, u3.ProtocolError) as exc:
        # urllib3 noticed the connection closed before Content-Length bytes arrived.
        raise cut_off(f"was truncated: the connection closed after {received}{of_length} bytes",
                      "truncated") from exc
    except (requests.exceptions.ContentDecodingError, u3.DecodeError) as exc:
        if paid:
            raise cut_off("could not be decoded", "bad_answer") from exc
        raise MediaCheckError(f"{provider} {noun} could not be decoded (from {where})".strip()) from exc
    except (u3.ReadTimeoutError, u3.SSLError, ConnectionError, TimeoutError) as exc:
        # (Disk errors such as ENOSPC are OSErrors too, but not these: they pass through.)
        if _is_timeout(exc):
            raise cut_off(f"stopped arriving: no data within the read timeout after {received}{of_length} bytes",
                          "timeout", timeout=True) from exc
        raise cut_off(f"broke off after {received}{of_length} bytes ({type(exc).__name__})", "truncated") from exc


def read_answer(
    resp: Any,
    *,
    limits: BodyLimits,
    provider: str,
    idempotent: bool,
    what: str = "request",
    max_bytes: int = 8 * 1024 * 1024,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Read the whole body of a ``stream=True`` API answer (JSON, small) within ``limits``.

    A JSON answer can trickle like a download; read through ``iter_body`` it cannot
    hold a worker past the deadline or under the minimum rate. The bytes are kept
    on the response (``resp.json()`` / ``resp.text`` / ``response_body`` work after).
    Too slow: ``sent_but_lost`` (timeout) for a paid, non-idempotent call, else a
    retryable ``ProviderTimeout``. urllib3 errors are raised as the ``requests``
    exceptions ``error_from_requests`` classifies (a cut-off body, a read timeout).
    """
    import requests
    import urllib3.exceptions as u3

    chunks: list[bytes] = []
    received = 0
    try:
        for chunk in iter_body(resp, limits=limits, clock=clock):
            received += len(chunk)
            if received > max_bytes:
                raise ProviderError(f"{provider}: the {what} answer passed the {max_bytes}-byte cap",
                                    provider=provider, provider_code="bad_response")
            chunks.append(chunk)
    except _BodyTooSlow as exc:
        resp.close()
        if not idempotent:
            raise sent_but_lost(provider, f"the {what} answer {exc.message}", code="timeout",
                                timeout=True) from None
        raise ProviderTimeout(f"{provider}: the {what} answer {exc.message}", provider=provider,
                              retryable=True, provider_code="timeout") from None
    except u3.ReadTimeoutError as exc:
        resp.close()
        raise requests.exceptions.ReadTimeout(str(exc)) from exc
    except (u3.ProtocolError, u3.IncompleteRead) as exc:
        resp.close()
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from exc
    except u3.DecodeError as exc:
        resp.close()
        raise requests.exceptions.ContentDecodingError(str(exc)) from exc
    except BaseException:
        resp.close()
        raise
    resp._content = b"".join(chunks)
    resp._content_consumed = True
    resp.close()
    return response_body(resp)


def media_is_complete(path: Path, fmt: str | None) -> bool:
    """Whether a PNG or JPEG file has its end marker (a body cut short without Content-Length has not)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except OSError:
        return False
    if fmt == "png":
        return b"IEND" in tail[-12:]
    if fmt == "jpeg":
        return tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    return True


def _content_length(headers: Mapping[str, str]) -> int | None:
    # A compressed body's Content-Length counts compressed bytes, not what we read.
    if (headers.get("Content-Encoding") or "identity").lower() not in ("identity", ""):
        return None
    raw = headers.get("Content-Length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _small_body(resp: Any, limit: int = 4096) -> str:
    try:
        data = resp.raw.read(limit, decode_content=True)
    except Exception:  # noqa: BLE001
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


__all__ = [
    "BROWSER_USER_AGENT",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_VIDEO_BYTES",
    "DEFAULT_TIMEOUT",
    "BILLED_NOTE",
    "BodyLimits",
    "Downloaded",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "body_message",
    "check_media_head",
    "download",
    "error_for_status",
    "error_from_requests",
    "make_session",
    "parse_retry_after",
    "raise_for_response",
    "response_body",
    "save_response",
    "read_answer",
    "sent_but_lost",
    "never_sent",
    "iter_body",
    "paced_transport",
    "scrub",
    "sniff",
    "timeout_from_env",
    "with_retries",
    "write_media",
]
