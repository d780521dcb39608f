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
* ``error_from_requests(exc, ...)``: a ``requests`` exception as a ``ProviderError``.
* ``make_session(...)``: a ``requests.Session`` with default (connect, read) timeouts and
  an optional browser-like User-Agent (Pictory sits behind Cloudflare).
* ``download(url, dest, ...)``: stream a media URL to ``dest`` with a timeout, a total
  deadline, a size cap, a truncation check and a Content-Type + magic-bytes check.
  ``save_response(resp, dest, ...)``: the same checks for a response already opened
  (an API that answers a POST with the media bytes).
* ``timeout_from_env(env, default_read)``: (connect, read) timeouts, ``AIGEN_HTTP_TIMEOUT`` wins.
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
    r"(sk-[A-Za-z0-9_\-*]{6,}|pictai_[A-Za-z0-9_\-*]{6,}|key_[A-Za-z0-9]{16,}|Bearer\s+[A-Za-z0-9._\-*]{8,})"
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


def error_from_requests(
    exc: BaseException, *, provider: str, idempotent: bool, secrets: Iterable[str | None] = ()
) -> ProviderError | None:
    """A ``requests`` exception as a ProviderError; None for anything that is not a network error.

    A connect failure means the request never left: always safe to retry. A read
    timeout on a non-idempotent call (creating a paid generation) may mean the
    work was done and billed, so it is reported, not retried: never pay twice.
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
        return ProviderTimeout(
            f"{provider}: no answer from the server within the timeout", provider=provider,
            retryable=idempotent, provider_code="timeout",
            hint=None if idempotent else "the request may still complete on the provider's side",
        )
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        # ChunkedEncodingError / a reset mid-body is a ConnectionError too, and then
        # the request did reach the server.
        sent = isinstance(exc, requests.exceptions.ChunkedEncodingError) or "reset" in text.lower()
        return ProviderError(
            f"{provider}: connection failed ({_short(text)})", provider=provider,
            retryable=idempotent or not sent, provider_code="connection",
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
) -> Downloaded:
    """Stream ``url`` into ``dest`` (overwritten), checking everything a bad day can break.

    * ``timeout``: (connect, read) per network operation; ``deadline``: seconds for
      the whole transfer (a server that trickles bytes cannot hold a worker forever).
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

    def attempt() -> Downloaded:
        try:
            return _download_once(
                url, dest, timeout=timeout, max_bytes=max_bytes, allowed=allowed, expect=expect_kind,
                provider=provider, session=session, headers=headers, deadline=deadline,
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
    url, dest, *, timeout, max_bytes, allowed, expect, provider, session, headers, deadline,
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
                deadline=deadline, progress=progress, clock=clock, started=started, where=where,
                noun="download",
            )
    finally:
        if own:
            s.close()


def save_response(
    resp: Any,
    dest: Path,
    *,
    max_bytes: int,
    allowed_types: Iterable[str],
    expect_kind: str,
    provider: str = "",
    deadline: float | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
    where: str = "the response",
    noun: str = "answer",
) -> Downloaded:
    """Stream the body of a 2xx ``requests`` response (opened with ``stream=True``) into ``dest``.

    The checks of ``download`` without the GET: Content-Type against
    ``allowed_types``, Content-Length and received bytes against ``max_bytes``,
    magic bytes against ``expect_kind`` (checked on the first bytes, before the
    rest is read), truncation, and ``deadline`` seconds since ``started``. For
    APIs that answer a POST with the media itself (Stability). The caller removes
    ``dest`` on failure.
    """
    import requests

    allowed = tuple(t.lower() for t in allowed_types)
    started = clock() if started is None else started
    received = 0
    length: int | None = None
    try:
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in GENERIC_TYPES and not any(ctype.startswith(a) for a in allowed):
            raise MediaCheckError(
                f"{provider} {noun} has Content-Type {ctype!r}; expected {' or '.join(allowed)} "
                f"(from {where})".strip()
            )
        length = _content_length(resp.headers)
        if length is not None and length > max_bytes:
            raise MediaCheckError(
                f"{provider} {noun} is {length} bytes, over the {max_bytes}-byte cap (from {where})".strip()
            )
        fmt: str | None = None
        head = b""
        with open(dest, "wb") as fh:
            for chunk in resp.iter_content(chunk_size=64 * 1024):
                if not chunk:
                    continue
                if fmt is None:
                    head += chunk
                    if len(head) >= 16:
                        fmt = check_media_head(head, expect_kind, provider=provider, source=noun)
                received += len(chunk)
                if received > max_bytes:
                    raise MediaCheckError(
                        f"{provider} {noun} passed the {max_bytes}-byte cap (from {where})".strip()
                    )
                fh.write(chunk)
                if progress is not None:
                    progress(received, length)
                if deadline is not None and clock() - started > deadline:
                    raise ProviderTimeout(
                        f"{provider}: download took longer than {deadline:.0f} s (from {where})".strip(),
                        provider=provider, retryable=True, provider_code="download_timeout",
                    )
        if fmt is None:
            fmt = check_media_head(head, expect_kind, provider=provider, source=noun)
        if length is not None and received < length:
            raise ProviderError(
                f"{provider}: download truncated: received {received} of {length} bytes (from {where})",
                provider=provider, retryable=True, provider_code="truncated",
            )
        return Downloaded(Path(dest), received, ctype, fmt)
    except requests.exceptions.ChunkedEncodingError as exc:
        # urllib3 noticed the connection closed before Content-Length bytes arrived.
        raise ProviderError(
            f"{provider}: download truncated: the connection closed after {received} bytes"
            f"{f' of {length}' if length is not None else ''} (from {where})",
            provider=provider, retryable=True, provider_code="truncated",
        ) from exc
    except requests.exceptions.ContentDecodingError as exc:
        raise MediaCheckError(f"{provider} download could not be decoded (from {where})".strip()) from exc


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
    "scrub",
    "sniff",
    "timeout_from_env",
    "with_retries",
    "write_media",
]
