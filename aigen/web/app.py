"""The gallery as a WSGI app: `make_app(settings)` returns an explicit Bottle app.

Routes (no route builds a file path from the URL: media is looked up by
asset id in the database and checked against the logged-in user):

    GET  /                         the gallery of the logged-in user, newest first (?page=N; search: ?q=words
                                   &status=S&provider=P&sort=oldest, see aigen.store.search)
    GET  /login  POST /login       log in with a user_id (and an access code off loopback)
    POST /logout                   ends the session on the server too
    GET  /login/link/<token>       a signed magic link: a page with a button; GET never spends the link
    POST /login/link/<token>       spend it (once): log in, land on one generation
    GET  /g/<id>                   one generation
    GET  /g/<id>/section           its section alone, for the page's live refresh
    POST /g/<id>/retry             Resume a stalled run or Retry a failed one (CSRF; owner only; logged)
    GET  /media/<asset_id>         the file (Range, ETag); ?download=1 to save it
    GET  /media/<asset_id>/poster  the poster frame of a video
    GET  /media/<asset_id>/thumb   its tile's preview, WebP 256 px (thumb2x: 512 px), made on first ask if missing
    GET  /api/generations[?page=N&q=&status=&provider=&sort=], /api/generations/<id>, /api/generations/<id>/status
    GET  /api/live[?page=N|?g=ID]  what the live page polls: counts, statuses, asset progress (ETag; not logged)
    GET  /new, POST /new, POST /api/generations, /g/<id>/again, /g/<id>/delete, /g/<id>/download.zip:
                                   asking for content, Make again, Delete, Download all (aigen/web/actions.py)
    GET  /static/<name>            style.css, gallery.js, viewer.js, actions.js, tiles.js, favicon.svg (a fixed list)

Every login attempt and every view is written to the `events` table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import bottle
from bottle import Bottle, HTTPError, HTTPResponse, SimpleTemplate, request, response

from aigen.config import Home, validate_user_id
from aigen.errors import AigenError, BadInput, Busy
from aigen.store import Store
from aigen.store.core import iso, utcnow
from aigen.web import access, links, sessions, views
from aigen.web.auth import (
    FORWARDED_HEADERS,
    VIA_CODE,
    VIA_ID,
    VIA_LINK,
    LoginLimiter,
    Session,
    SessionCodec,
    ViewDedupe,
    host_name,
    host_port,
    is_loopback_host,
    url_host,
)
from aigen.web.media import Grant, MediaGrants, file_response, real_path_in_home, safe_download_name

log = logging.getLogger("aigen.web")

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
# The only files /static serves: a fixed list, never a path taken from the URL.
STATIC_FILES = {
    "style.css": "text/css; charset=utf-8",
    "gallery.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "actions.js": "text/javascript; charset=utf-8",
    "tiles.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
COOKIE = "aigen_session"
GEN_ID = r"[0-9a-f]{4,32}"
# At most 18 digits: always below 2**63, so any id in a URL fits an SQLite
# INTEGER (a longer one is a 404, not an OverflowError and a 500).
ASSET_ID = r"[0-9]{1,18}"
_GEN_ID_RE = re.compile(GEN_ID)
# Where a login may send the user on to: the gallery or one generation's page,
# matched in full. Nothing else: no other host ("//evil.com", "/\\evil.com",
# "http://..."), and no control character (with "$" a trailing newline passed,
# and Bottle then refused the Location header: a 500 after a login_ok event).
_NEXT_RE = re.compile(r"/(g/[0-9a-f]{4,32})?")
UA_MAX = 400
# Where a cached section's forms take the page's CSRF token (a value no escaped prompt can contain).
CSRF_SLOT = "@csrf@"
CSRF_SLOT_ATTR = f'value="{CSRF_SLOT}"'

CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# A file opened on its own is shown in the browser's built-in viewer, which
# styles itself inline; no markup of ours (or of any user) is in that page.
MEDIA_CSP = CSP + "; style-src 'self' 'unsafe-inline'"
# How long a presigned media URL lives (AIGEN_MEDIA_URL_TTL): long enough to watch a video and seek in it
# (the browser fetches its later ranges from the URL it was sent to), short enough not to be shared for long.
MEDIA_URL_TTL = 900
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


@dataclass
class WebSettings:
    home: Home
    host: str = "127.0.0.1"
    port: int = 8000
    # Base URL for links the gallery prints; AIGEN_PUBLIC_URL wins when set.
    public_url: str | None = None
    page_size: int = 10
    session_ttl: timedelta = timedelta(hours=24)
    login_limit: int = 10
    login_window_s: float = 60.0
    # How often a page with work in progress asks whether it is done.
    poll_ms: int = 3000
    # How often a page with nothing in progress asks whether something new started (a conditional request,
    # answered 304 when nothing changed); 0: only when the tab is shown again.
    idle_poll_ms: int = 20000
    # The wall clock: sessions, links and the login limiter (kept in the database, the same on every host).
    clock: Callable[[], datetime] = utcnow
    # How long what /media found about an asset is kept for a session (MediaGrants, a few seconds).
    monotonic: Callable[[], float] = time.monotonic
    store: Store | None = field(default=None, repr=False)
    # Where the files are (aigen.storage): None is the configured one (AIGEN_STORAGE_URL, else the home).
    storage: object | None = field(default=None, repr=False)
    # With object storage: "redirect" (a 302 to a presigned URL) or "stream" (through this server);
    # None reads AIGEN_MEDIA_DELIVERY (default redirect). And how long a presigned URL lives (AIGEN_MEDIA_URL_TTL).
    media_delivery: str | None = None
    media_url_ttl: int | None = None
    # How a generation asked for from the page is started: None is aigen.pipeline.background.start_in_background
    # (a detached `aigen retry ID`, or an enqueue for live cluster workers); tests pass their own.
    start: Callable | None = field(default=None, repr=False)
    # The fairness limits (aigen.pipeline.limits.Limits): None reads [limits] of config.toml on each request.
    limits: object | None = None

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)


class GalleryApp(Bottle):
    """A Bottle app whose every response, errors included, carries the security headers.

    They are added at the WSGI boundary rather than in an after_request hook,
    because Bottle builds the response of an unhandled exception after the
    hooks have run.
    """

    security_headers = SECURITY_HEADERS

    def wsgi(self, environ, start_response):
        def start(status, headers, exc_info=None):
            present = {k.lower() for k, _ in headers}
            extra = [(k, v) for k, v in self.security_headers if k.lower() not in present]
            if "cache-control" not in present:
                # Pages are personal: never cached by anyone.
                extra.append(("Cache-Control", "no-store"))
            return start_response(status, headers + extra, exc_info)

        bad = header_problem(environ)
        if bad:
            body = f"Bad request: the {bad} header is not valid.\n".encode()
            start("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        gallery = getattr(self, "gallery", None)
        fast = gallery.media_fast(environ) if gallery is not None and gallery.fast_media else None
        if fast is not None:
            status, headers, content = fast
            start(f"{status} {bottle.HTTP_CODES[status]}", list(headers.items()))
            if hasattr(content, "read"):  # the open file, for waitress to send (media.file_response)
                return environ["wsgi.file_wrapper"](content)
            return [content] if isinstance(content, bytes) else content
        return super().wsgi(environ, start)


_RENDERING = threading.local()


class AcyclicTemplate(SimpleTemplate):
    """bottle's SimpleTemplate, whose renders leave no reference cycles behind.

    bottle runs each template (and each one it includes or rebases on) in a fresh
    namespace that refers to itself (``include``, ``rebase`` and ``get`` are bound
    to it), so every page's whole namespace (its rows, filters, strings) stayed
    alive until the garbage collector found the cycle: under load the pages piled
    up into the oldest generation, whose full collections then stopped every
    request for 13-16 ms (bench/fig4_gallery.py's p99). Each namespace is noted
    as it is made (the one ``execute`` returns, the one ``rebase`` is called from)
    and emptied once the outermost render has its text, which breaks the cycles:
    reference counting frees the page at once.
    """

    def render(self, *args, **kwargs):
        outer = getattr(_RENDERING, "envs", None)
        envs: list[dict] = []
        _RENDERING.envs = envs
        try:
            return super().render(*args, **kwargs)
        finally:
            _RENDERING.envs = outer
            for env in envs:
                env.clear()

    @staticmethod
    def _note(env) -> None:
        envs = getattr(_RENDERING, "envs", None)
        if envs is not None and isinstance(env, dict):
            envs.append(env)

    def execute(self, _stdout, kwargs):
        env = super().execute(_stdout, kwargs)
        self._note(env)
        return env

    def _rebase(self, _env, _name=None, **kwargs):
        self._note(_env)  # its namespace is not the one execute returns: the rebased template's is
        return super()._rebase(_env, _name, **kwargs)


class Templates:
    """SimpleTemplate files from the package directory, found through an explicit lookup path.

    `{{value}}` escapes HTML; the templates never use `{{!value}}` on data,
    only on `base`, the already-rendered (and already escaped) page body.
    """

    def __init__(self, directory: Path = TEMPLATE_DIR):
        self.lookup = [str(directory)]
        self._cache: dict[str, SimpleTemplate] = {}

    def render(self, name: str, **kw) -> str:
        tpl = self._cache.get(name)
        if tpl is None:
            tpl = AcyclicTemplate(name=name, lookup=self.lookup)
            self._cache[name] = tpl
        return tpl.render(**kw)


class SectionCache:
    """Rendered HTML of the sections of final generations, least recently used out.

    A Completed or Failed generation's section changes only when the row
    does (a retry moves `updated_at` and the status), so it is rendered once
    and reused: template escaping and shaping 100 files were most of the cost
    of a gallery page (bench/fig4_gallery.py). Nothing in a section depends on
    the session (the CSRF token lives in the page around it).
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(g: dict, eager: bool):
        if g["status"] not in ("Completed", "Failed"):
            return None
        return (g["id"], g.get("updated_at"), g["status"], eager)

    def get(self, key):
        if key is None:
            return None
        with self._lock:
            html = self._items.get(key)
            if html is not None:
                self._items.move_to_end(key)
            return html

    def put(self, key, html: str) -> None:
        if key is None:
            return
        with self._lock:
            self._items[key] = html
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Gallery:
    def __init__(self, settings: WebSettings):
        self.settings = settings
        self.home = settings.home
        if not getattr(settings.store, "readonly", False):  # a read-only home is only viewed
            self.home.ensure()
        if settings.store is None:
            from aigen.store import open_store

            self.store = open_store(self.home)  # aigen.db in the home, or PostgreSQL (cluster mode)
        else:
            self.store = settings.store
        self.readonly = bool(getattr(self.store, "readonly", False))
        if self.readonly:
            # A read-only home (a backup, a read-only mount) is only viewed: its
            # sessions live in a private scratch database for the life of this
            # process (logout still ends them at once), and no event is recorded.
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="aigen-sessions-")
            self.session_store = Store(Path(self._scratch.name) / "sessions.db")
            log.warning("the home %s is read-only: logins and views are not recorded", self.home.path)
        else:
            self.session_store = self.store
        self._setup_media(settings)
        self.secret = self._secret()
        self.codec = SessionCodec(self.secret, settings.clock)
        self.limiter = LoginLimiter(self.session_store, settings.login_limit, settings.login_window_s, settings.clock)
        self.dedupe = ViewDedupe()
        self.grants = MediaGrants(settings.monotonic)
        self._cookies: dict[str, str | None] = {}
        self._cookies_lock = threading.Lock()
        self.templates = Templates()
        self.sections = SectionCache()
        self._wf_client = None
        self._wf_lock = threading.Lock()
        self._thumb_locks: dict[int, threading.Lock] = {}
        self._thumb_locks_guard = threading.Lock()
        self.static = {}
        for name in STATIC_FILES:
            data = (STATIC_DIR / name).read_bytes()
            self.static[name] = (data, '"' + hashlib.sha256(data).hexdigest()[:24] + '"')
        self.allowed_hosts = {"localhost", "127.0.0.1", "::1", settings.host.lower().strip("[]")}
        for url in (settings.public_url, links.public_base_url(settings.public_url)):
            h = url_host(url)
            if h:
                self.allowed_hosts.add(h)

    def _setup_media(self, settings: WebSettings) -> None:
        """Where media come from, how they are delivered, and the Content-Security-Policy that allows it."""
        from aigen.storage import from_config
        from aigen.storage.local import LocalStorage

        self.storage = settings.storage if settings.storage is not None else from_config(self.home.path, os.environ)
        self.local_files = isinstance(self.storage, LocalStorage)
        delivery = (settings.media_delivery or os.environ.get("AIGEN_MEDIA_DELIVERY") or "redirect").strip().lower()
        if delivery not in ("redirect", "stream"):
            raise BadInput(f"AIGEN_MEDIA_DELIVERY={delivery!r} is not understood",
                           hint="use redirect (a presigned URL, the default) or stream (through the gallery)")
        self.delivery = delivery
        ttl = settings.media_url_ttl
        if ttl is None:
            raw = (os.environ.get("AIGEN_MEDIA_URL_TTL") or "").strip()
            try:
                ttl = int(raw) if raw else MEDIA_URL_TTL
            except ValueError:
                raise BadInput(f"AIGEN_MEDIA_URL_TTL={raw!r} is not a whole number of seconds") from None
        if not 60 <= ttl <= 7 * 86400:
            raise BadInput(f"AIGEN_MEDIA_URL_TTL={ttl}: a presigned URL must live 60 s to 7 days")
        self.url_ttl = ttl
        self.csp, self.media_csp = CSP, MEDIA_CSP
        self.media_origin = None
        if not self.local_files and delivery == "redirect":
            # The browser follows the 302 to the object store: the page's <img> and <video> must be allowed
            # to load from there (a CSP checks the URL after a redirect too). Signing is local: no request.
            probe = urlsplit(self.storage.presigned_url("generated_content/origin/check/x", 60))
            self.media_origin = f"{probe.scheme}://{probe.netloc}"
            extra = f"; img-src 'self' {self.media_origin}; media-src 'self' {self.media_origin}"
            self.csp, self.media_csp = CSP + extra, MEDIA_CSP + extra

    def _secret(self) -> bytes:
        """The home's signing secret; on a read-only home without one (a backup
        that left `secret.key` out), a secret for the life of this process:
        sessions then work as usual, and no magic link is valid. AIGEN_SECRET_KEY
        or AIGEN_SECRET_KEY_FILE, when set, wins in every case."""
        configured = links.configured_secret()
        if configured is not None:
            return configured
        if not self.readonly:
            return links.secret_key(self.home)
        try:
            data = (self.home.path / links.SECRET_FILE).read_bytes().strip()
            if len(data) >= 32:
                return data
        except OSError:
            pass
        import secrets

        log.warning("the read-only home %s has no %s: magic links cannot be checked, and sessions last "
                    "only while this server runs", self.home.path, links.SECRET_FILE)
        return secrets.token_hex(32).encode()

    # -- request facts -------------------------------------------------------
    @staticmethod
    def address() -> str:
        # REMOTE_ADDR, never X-Forwarded-For: a client can write that header,
        # and the login limiter must not be dodged by changing it.
        return request.environ.get("REMOTE_ADDR") or "unknown"

    @staticmethod
    def user_agent() -> str:
        return (request.environ.get("HTTP_USER_AGENT") or "")[:UA_MAX]

    def id_only_allowed(self) -> bool:
        """May a user_id alone log in? Only on a loopback server, to a local, unproxied client."""
        env = request.environ
        if not self.settings.loopback:
            return False
        if any(env.get(h) for h in FORWARDED_HEADERS):
            return False
        return is_loopback_host(env.get("REMOTE_ADDR", ""))

    def check_host(self) -> None:
        # A loopback server answers only to loopback names (and the public
        # URL's host): a page on another site that rebinds its DNS name to
        # 127.0.0.1 must not be able to log in by user_id and read the gallery.
        if not self.settings.loopback:
            return
        name = host_name(request.environ.get("HTTP_HOST") or "")
        if not name or name in self.allowed_hosts or is_loopback_host(name):
            return
        raise HTTPError(400, "This gallery only answers to its own address (Host header not allowed).")

    # -- sessions --------------------------------------------------------------
    VIA_KIND = {VIA_ID: sessions.KIND_LOOPBACK, VIA_CODE: sessions.KIND_CODE, VIA_LINK: sessions.KIND_MAGIC}

    def session_row(self, s: Session) -> dict | None:
        """The live database row of a logged-in session, looked up once per request; None if ended."""
        env = request.environ
        if "aigen.session_row" not in env:
            now = self.settings.clock()
            row = sessions.lookup(self.session_store, s.key)
            if not sessions.is_live(row, now) or row["user_id"] != s.user_id:
                row = None
                # Ended (here or by another process): what /media kept for it goes too.
                self.grants.drop_session(s.key)
            else:
                try:
                    sessions.touch(self.session_store, row, now)
                except Exception:
                    # A read-only or busy database must not log everyone out.
                    log.warning("could not record the last use of a session", exc_info=True)
            env["aigen.session_row"] = row
        return env["aigen.session_row"]

    def session(self) -> Session | None:
        env = request.environ
        if "aigen.session" not in env:
            env["aigen.session"] = self.codec.loads(self._session_cookie(env.get("HTTP_COOKIE") or ""))
        return env["aigen.session"]

    def _session_cookie(self, header: str) -> str | None:
        """The session cookie's value in a Cookie header, as Bottle reads it; the header parsed once per
        distinct header (http.cookies is slow, and a video's Range requests all carry the same one)."""
        value = self._cookies.get(header, self)
        if value is self:
            value = request.get_cookie(COOKIE)
            with self._cookies_lock:
                self._cookies[header] = value
                while len(self._cookies) > 4096:
                    self._cookies.pop(next(iter(self._cookies)))
        return value

    def set_session(self, s: Session) -> None:
        request.environ["aigen.session"] = s
        request.environ.pop("aigen.session_row", None)
        response.set_cookie(
            COOKIE,
            self.codec.dumps(s),
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.urlparts.scheme == "https",
            max_age=max(0, s.exp - int(self.settings.clock().timestamp())),
        )

    def ensure_session(self) -> Session:
        s = self.session()
        if s is None:
            s = self.codec.new(int(self.settings.session_ttl.total_seconds()))
            self.set_session(s)
        return s

    def current_user(self) -> str | None:
        s = self.session()
        if s is None or not s.user_id:
            return None
        # Logged out, revoked, or expired on the server: the cookie is not enough.
        if self.session_row(s) is None:
            return None
        if self.id_only_allowed():
            return s.user_id
        # Off loopback a user_id alone is not enough, so a session opened that
        # way does not count here; a code session ends when the code changes.
        if s.via == VIA_ID:
            return None
        if s.via == VIA_CODE:
            user = self.store.get_user(s.user_id)
            if not user or not user.get("access_code_hash") or user.get("access_code_created_at") != s.code_at:
                return None
        return s.user_id

    def basic_user(self, *, api: bool) -> str | None:
        """HTTP Basic (user_id and access code) for scripts on /api and /media; None when not given."""
        header = request.environ.get("HTTP_AUTHORIZATION") or ""
        if not header.lower().startswith("basic "):
            return None
        self.refuse_if_limited(json_body=api)
        parsed = bottle.parse_auth(header)
        user_id, code = parsed if parsed else ("", "")
        reason = self._credentials_problem(user_id, code or "")
        if reason:
            self.login_failed(reason, user_id, detail="basic auth")
            raise self.http_error(401, "user_id or access code is wrong", api=api,
                                  headers={"WWW-Authenticate": 'Basic realm="aigen"'} if api else None)
        return user_id

    def _credentials_problem(self, user_id: str, code: str) -> str | None:
        try:
            validate_user_id(user_id)
        except BadInput:
            return "invalid_user_id"
        if self.id_only_allowed():
            return None
        if not code:
            return "code_required"
        # One scrypt whether the user has a code, has none or does not exist.
        return access.verify_user_code(self.store, user_id, code)

    def require_user(self, *, next_path: str = "/") -> str:
        user = self.current_user()
        if user is None:
            target = "/login" if next_path == "/" else f"/login?next={next_path}"
            raise self.redirect(target)
        return user

    def api_user(self) -> str:
        user = self.current_user() or self.basic_user(api=True)
        if user is None:
            raise self.http_error(401, "log in first (a session cookie, or HTTP Basic with user_id and access code)",
                                  api=True, headers={"WWW-Authenticate": 'Basic realm="aigen"'})
        return user

    # -- responses -------------------------------------------------------------
    @staticmethod
    def redirect(path: str) -> HTTPResponse:
        # A relative Location: never echo the request's Host header back.
        res = response.copy(cls=HTTPResponse)
        res.status = 303
        res.body = ""
        res.set_header("Location", path)
        return res

    @staticmethod
    def http_error(status: int, message: str, *, api: bool = False, headers: dict | None = None) -> HTTPError:
        err = HTTPError(status, message)
        err.aigen_api = api  # also marks the message as ours, safe to show
        for k, v in (headers or {}).items():
            err.set_header(k, v)
        return err

    def json(self, data, status: int = 200) -> HTTPResponse:
        body = json.dumps(data, ensure_ascii=False, indent=1)
        res = response.copy(cls=HTTPResponse)
        res.status = status
        res.body = body.encode()
        res.set_header("Content-Type", "application/json; charset=utf-8")
        return res

    def page(self, name: str, status: int = 200, **kw) -> str:
        s = self.ensure_session()
        response.status = status
        response.set_header("Content-Type", "text/html; charset=utf-8")
        kw.setdefault("user", self.current_user())
        kw.setdefault("poll", False)
        return self.templates.render(
            name,
            csrf=self.codec.csrf_token(s),
            poll_ms=self.settings.poll_ms,
            idle_poll_ms=self.settings.idle_poll_ms,
            t=views.local_time,
            took=views.took,
            size=views.human_bytes,
            **kw,
        )

    def error_page(self, err: HTTPError) -> str:
        api = getattr(err, "aigen_api", False) or request.path.startswith("/api/")
        own = isinstance(err.body, str) and err.body and getattr(err, "aigen_api", None) is not None
        message = err.body if isinstance(err.body, str) and err.body else err.status_line
        if err.status_code == 404 and not own:
            # The same words for "does not exist" and "belongs to someone else".
            message = "There is nothing here, or it is not yours."
        elif err.status_code == 405:
            message = "That method is not allowed here."
        elif err.status_code >= 500:
            message = "Something went wrong on the server; the details are in its log."
        if api:
            response.set_header("Content-Type", "application/json; charset=utf-8")
            return json.dumps({"error": err.status_line, "message": message})
        response.set_header("Content-Type", "text/html; charset=utf-8")
        try:
            user = self.current_user()
        except Exception:  # the error page must render even if the store is the problem
            user = None
        return self.templates.render(
            "error", title=err.status_line, message=message, status=err.status_code, user=user,
            csrf=self.codec.csrf_token(self.session()) if user else "", poll=False,
            poll_ms=self.settings.poll_ms, idle_poll_ms=self.settings.idle_poll_ms,
        )

    # -- events ------------------------------------------------------------------
    def event(self, kind: str, **fields) -> None:
        if request.method == "HEAD" and kind.endswith("_view"):
            return  # a HEAD shows nothing to anyone: not a view
        if self.readonly:
            return  # nothing can be written to a read-only home (said once, at start)
        s = self.session()
        fields.setdefault("session_id", s.key if s else None)
        try:
            self.store.log_event(kind, now=self.settings.clock(), address=self.address(),
                                 user_agent=self.user_agent(), **fields)
        except Exception:
            # A view must not fail because the event could not be written, but
            # the operator must hear about it.
            log.exception("could not log event %s", kind)

    def login_failed(self, reason: str, user_id: str | None, *, detail: str | None = None,
                     count: bool = True) -> None:
        """Log a refused login; `count` it toward the per-address limit unless it
        could have been sent by another site (no valid CSRF token, a foreign
        Origin): such a post must not be able to lock the user out."""
        valid = None
        try:
            valid = validate_user_id(user_id or "")
        except BadInput:
            if user_id:
                detail = f"{detail + '; ' if detail else ''}user_id given: {user_id[:80]!r}"
        if count:
            self.limiter.failure(self.address())
        self.event("login_failed", ok=False, reason=reason, user_id=valid, detail=detail)

    def refuse_if_limited(self, *, json_body: bool = False, user_id: str | None = None):
        wait = self.limiter.blocked(self.address())
        if not wait:
            return
        valid = None
        try:
            valid = validate_user_id(user_id or "")
        except BadInput:
            pass
        # Still logged: a flood of refused attempts is exactly what to look for.
        self.event("login_failed", ok=False, reason="rate_limited", user_id=valid)
        retry = str(max(1, int(wait + 0.999)))
        msg = f"Too many failed logins from your address: try again in {retry} s."
        if json_body:
            raise self.http_error(429, msg, api=True, headers={"Retry-After": retry})
        res = self.login_response(msg, status=429, user_id=user_id or "")
        res.set_header("Retry-After", retry)
        raise res

    def login_response(self, message: str | None, *, status: int, user_id: str = "", next_path: str = "/",
                       notice: str | None = None) -> HTTPResponse:
        body = self.page("login", status=status, message=message, notice=notice, user_id=user_id,
                         next=next_path, require_code=not self.id_only_allowed(), user=None)
        res = response.copy(cls=HTTPResponse)
        res.body = body
        return res

    def log_asset_view(self, user_id: str, row: dict, purpose: str, rng: tuple[int, int] | None,
                       via_basic: bool) -> None:
        detail = f"{purpose} {row['kind']} {row['idx']}"
        fields = dict(ok=True, user_id=user_id, generation_id=row["generation_id"], asset_id=row["id"],
                      detail=detail)
        if via_basic:
            # No session to group by: count a fetch that starts at the
            # beginning, not the later parts of a ranged download.
            if rng is None or rng[0] == 0:
                self.event("asset_view", session_id=None, **fields)
            return
        sid = self.session().key
        key = (sid, row["id"], detail)
        with self.dedupe.lock:
            if self.dedupe.seen(key):
                return
            try:
                logged = self.store.query_one(
                    "SELECT 1 FROM events WHERE session_id = ? AND asset_id = ? AND kind = 'asset_view' "
                    "AND detail = ? LIMIT 1", (sid, row["id"], detail))
            except Exception:
                # Like event(): the file is still served. Not remembered as
                # seen, so the next request tries to log it again.
                log.warning("could not check whether the view of asset %s was logged", row["id"], exc_info=True)
                return
            if not logged:
                self.event("asset_view", **fields)
            self.dedupe.add(key)

    # -- routes: login ------------------------------------------------------------
    def safe_next(self, value: str | None) -> str:
        return safe_next(value)

    def login_form(self):
        next_path = self.safe_next(request.query.get("next"))
        if self.current_user():
            raise self.redirect(next_path)
        notice = "You are logged out." if request.query.get("bye") == "1" else None
        return self.page("login", message=None, notice=notice, user_id="", next=next_path,
                         require_code=not self.id_only_allowed(), user=None)

    def cross_site_problem(self) -> str | None:
        """Why this POST may have been sent by another site, or None.

        The CSRF token is the first line of defence; this is the second: a
        browser says where a request comes from in Sec-Fetch-Site and Origin,
        and neither can be set by a page on another site.
        """
        env = request.environ
        site = (env.get("HTTP_SEC_FETCH_SITE") or "").strip().lower()
        if site in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site: {site}"
        origin = env.get("HTTP_ORIGIN")
        if origin is None:
            return None
        origin = origin.strip().lower()
        try:
            parts = urlsplit(origin)
            o_host, o_port = (parts.hostname or ""), parts.port
        except ValueError:
            return "Origin: malformed"
        if parts.scheme not in ("http", "https") or not o_host:
            return f"Origin: {origin[:80]}"
        default = 443 if parts.scheme == "https" else 80
        o_port = o_port or default
        # The Host this request was sent to (what the browser's address bar says) ...
        h_name, h_port = host_port(env.get("HTTP_HOST") or "")
        if o_host == h_name and o_port == (h_port or default):
            return None
        # ... or the public URL the gallery is published under (behind a proxy).
        for url in (self.settings.public_url, links.public_base_url(self.settings.public_url)):
            if not url:
                continue
            try:
                pub = urlsplit(url.lower())
                if (pub.scheme, pub.hostname, pub.port or (443 if pub.scheme == "https" else 80)) == (
                        parts.scheme, o_host, o_port):
                    return None
            except ValueError:
                continue
        return f"Origin: {origin[:80]}"

    CROSS_SITE_MESSAGE = ("This form was sent from another site, so it was refused. "
                          "Open this gallery's own page and try again.")
    CSRF_MESSAGE = "This form expired or did not come from this page. Please try again."

    def login_post(self):
        forms = request.forms
        raw_id = (forms.getunicode("user_id") or "").strip()
        code = forms.getunicode("access_code") or ""
        next_path = self.safe_next(forms.getunicode("next"))
        # Neither a cross-site post nor one without a valid CSRF token counts
        # toward the address's failed logins: another site could send them
        # from the user's own browser to lock the user out.
        problem = self.cross_site_problem()
        if problem:
            self.login_failed("cross_site", raw_id, detail=problem, count=False)
            return self.login_response(self.CROSS_SITE_MESSAGE, status=403, next_path=next_path)
        self.refuse_if_limited(user_id=raw_id)
        s = self.session()
        if not self.codec.check_csrf(s, forms.get("csrf_token")):
            self.login_failed("csrf", raw_id, count=False)
            return self.login_response(self.CSRF_MESSAGE, status=403, user_id=raw_id, next_path=next_path)
        if not raw_id:
            self.login_failed("invalid_user_id", None, detail="empty")
            return self.login_response("Enter your user_id.", status=400, next_path=next_path)
        try:
            user_id = validate_user_id(raw_id)
        except BadInput as e:
            self.login_failed("invalid_user_id", raw_id)
            return self.login_response(e.message, status=400, user_id=raw_id, next_path=next_path)
        via = VIA_ID if self.id_only_allowed() else VIA_CODE
        reason = self._credentials_problem(user_id, code)
        if reason == "code_required":
            self.login_failed(reason, user_id)
            return self.login_response(
                "This gallery is reachable from other machines: enter your access code as well.",
                status=401, user_id=user_id, next_path=next_path)
        if reason:
            # One message for "no such code" and "wrong code", so the form
            # does not tell a stranger which user_ids exist.
            self.login_failed(reason, user_id)
            return self.login_response(
                "That user_id and access code do not match. Get a code with "
                "`aigen user code YOUR_ID` on the machine that runs the gallery.",
                status=403, user_id=user_id, next_path=next_path)
        code_at = None
        if via == VIA_CODE:
            code_at = self.store.get_user(user_id)["access_code_created_at"]
        self.open_session(user_id, via, code_at=code_at)
        self.event("login_ok", ok=True, user_id=user_id, detail=f"by {'access code' if code_at else 'user_id'}")
        raise self.redirect(next_path)

    def open_session(self, user_id: str, via: str, *, code_at: str | None = None,
                     link: tuple[str, int] | None = None) -> Session | None:
        """Open a session: a new id (so one planted before login is worth
        nothing), a row in `sessions`, the cookie. With `link` (token, expiry),
        spend the magic link in the same transaction; None if it was spent."""
        now = self.settings.clock()
        # The session this browser had (another user's, or an older one) ends
        # here: its cookie is replaced, and it must not live on unseen.
        before = self.session()
        s = self.codec.new(int(self.settings.session_ttl.total_seconds()), user_id=user_id, via=via,
                           login_at=int(now.timestamp()), code_at=code_at)
        if link is not None and self.readonly and sessions.link_spent(self.store, link[0]):
            return None  # spent on the writable home this read-only copy comes from
        with self.session_store.transaction() as db:
            if link is not None and not sessions.spend_link(
                    db, link[0], user_id, session_key_=s.key,
                    link_expires=datetime.fromtimestamp(link[1], timezone.utc), now=now):
                return None
            if not self.readonly:  # a read-only home (viewing a backup) records no login
                self.store.ensure_user(user_id, now=now)
                db.conn.execute("UPDATE users SET last_login_at = ? WHERE user_id = ?", (iso(now), user_id))
            if before is not None and before.user_id:
                sessions.revoke(db, before.key, sessions.WHY_REPLACED, now)
        if before is not None:
            self.grants.drop_session(before.key)
            sessions.insert(db, s.key, user_id, self.VIA_KIND[via], now=now,
                            expires=datetime.fromtimestamp(s.exp, timezone.utc), address=self.address(),
                            user_agent=self.user_agent())
        self.set_session(s)
        return s

    def logout(self):
        if self.cross_site_problem():
            raise self.http_error(403, self.CROSS_SITE_MESSAGE)
        s = self.session()
        if not self.codec.check_csrf(s, request.forms.get("csrf_token")):
            raise self.http_error(403, "This form expired or did not come from this page. Reload and try again.")
        if s.user_id:
            # Ended on the server: the old cookie, replayed, opens nothing.
            with self.session_store.transaction() as db:
                sessions.revoke(db, s.key, sessions.WHY_LOGOUT, self.settings.clock())
            self.grants.drop_session(s.key)
        self.event("logout", ok=True, user_id=s.user_id)
        self.set_session(self.codec.new(int(self.settings.session_ttl.total_seconds())))
        raise self.redirect("/login?bye=1")

    def _magic_target(self, data: dict, user_id: str) -> tuple[str, str | None]:
        gen_id = data.get("generation_id")
        if isinstance(gen_id, str) and _GEN_ID_RE.fullmatch(gen_id) and self.store.query_one(
                "SELECT 1 FROM generations WHERE id = ? AND user_id = ?", (gen_id, user_id)):
            return f"/g/{gen_id}", gen_id
        return "/", None

    def _magic_check(self, token: str, *, count: bool) -> tuple[dict | None, str | None]:
        """(data, user_id) of a good link, else raise the refusal page."""
        data, reason = links.check_magic_token(self.home, token, now=self.settings.clock(), secret=self.secret)
        user_id = None
        if data is not None:
            try:
                user_id = validate_user_id(data["user_id"])
            except BadInput:
                reason = "bad_link"
        if user_id is not None and sessions.link_cancelled(self.store.get_user(user_id), data["issued_at"]):
            # Made before the user's sessions were all ended (code rotated or
            # revoked, `aigen user sessions --revoke-all`): cancelled with them.
            self.login_failed("revoked_link", user_id, detail="magic link", count=count)
            raise self.login_response(self.CANCELLED_MESSAGE, status=403)
        if user_id is None:
            self.login_failed(reason if reason != "ok" else "bad_link", None, detail="magic link", count=count)
            message = (
                "This link has expired (links last 7 days). Log in below, or ask for a new link."
                if reason == "expired_link"
                else "This link is not valid: it may be cut short, or made for another gallery."
            )
            raise self.login_response(message, status=403)
        return data, user_id

    CANCELLED_MESSAGE = ("This link was cancelled: it was made before your gallery sessions were ended "
                         "(your access code was changed or your sessions revoked). Log in below, or ask for a new link.")
    SPENT_MESSAGE = ("This link was already used to log in, and a link works only once. "
                     "Log in below, or ask for a new link.")

    def magic_landing(self, token: str):
        """GET: a page with a button. Mail scanners that fetch links to check
        them do not press buttons, so fetching a link never spends it. A
        refused GET is logged but not counted toward the address's limit: an
        image tag on another site can make the user's browser fetch any URL."""
        self.refuse_if_limited()
        data, user_id = self._magic_check(token, count=False)
        target, gen_id = self._magic_target(data, user_id)
        if self.current_user() == user_id:
            raise self.redirect(target)  # already in, perhaps through this very link
        if sessions.link_spent(self.session_store, token) or (self.readonly and sessions.link_spent(self.store, token)):
            self.login_failed("spent_link", user_id, detail="magic link (page)", count=False)
            raise self.login_response(self.SPENT_MESSAGE, status=403)
        return self.page("magic", user=None, link_user=user_id, generation_id=gen_id, message=None)

    def magic_login(self, token: str):
        """POST: spend the link, once, and open a session."""
        problem = self.cross_site_problem()
        if problem:
            self.login_failed("cross_site", None, detail=f"magic link; {problem}", count=False)
            return self.login_response(self.CROSS_SITE_MESSAGE, status=403)
        self.refuse_if_limited()
        if not self.codec.check_csrf(self.session(), request.forms.get("csrf_token")):
            self.login_failed("csrf", None, detail="magic link", count=False)
            return self.login_response(self.CSRF_MESSAGE, status=403)
        data, user_id = self._magic_check(token, count=True)
        target, gen_id = self._magic_target(data, user_id)
        if self.open_session(user_id, VIA_LINK, link=(token, data["exp"])) is None:
            self.login_failed("spent_link", user_id, detail="magic link")
            return self.login_response(self.SPENT_MESSAGE, status=403)
        self.event("magic_link_login", ok=True, user_id=user_id, generation_id=gen_id)
        raise self.redirect(target)

    # -- routes: pages ---------------------------------------------------------------
    def _with_running(self, gens: list[dict]) -> None:
        """Say, of each generation in progress, whether something works on it (aigen.pipeline.resume)."""
        from aigen.pipeline import resume

        busy = [g for g in gens if g["status"] == "Processing"]
        if not busy:
            return
        now = self.settings.clock()
        try:
            cluster = resume.cluster_view(self.home.path, self.store, now=now,
                                          count_workflows=self._count_workflows)
        except Exception:
            # Unknown is not Stalled: no Resume button on a guess.
            log.warning("could not read the cluster's workers", exc_info=True)
            return
        for g in busy:
            try:
                state = resume.decide(resume.observe(self.home.path, g, cluster), now=now,
                                      grace_s=resume.START_GRACE_S)
            except Exception:
                log.warning("could not tell whether generation %s is worked on", g["id"], exc_info=True)
                state = None
            views.set_run_state(g, state)

    def _count_workflows(self, gen_id: str) -> int:
        """Active DBOS workflows of a generation (cluster shape), through one client kept for this app."""
        with self._wf_lock:
            if self._wf_client is None:
                from aigen.cluster import database_url, require_dbos

                require_dbos()
                from aigen.cluster.engine import Client

                self._wf_client = Client(database_url(home=self.home.path))
            client = self._wf_client
        return len(client.workflows(gen_id, active_only=True))

    def gallery(self):
        user = self.require_user()
        try:
            page_no = int(request.query.get("page") or 1)
        except ValueError:
            page_no = 1
        offset = {}

        def need_assets(row: dict) -> bool:
            # The first section of a page loads its images eagerly; the key says which.
            eager = not offset
            offset[row["id"]] = eager
            return self.sections.get(SectionCache.key(row, eager)) is None

        from aigen.store.search import Filters

        filters = Filters.from_query(request.query.getunicode)
        pg = views.load_page(self.store, user, page_no, self.settings.page_size, need_assets=need_assets,
                             filters=filters)
        self._with_running(pg.generations)
        csrf = self.codec.csrf_token(self.ensure_session())
        sections = []
        for g in pg.generations:
            eager = offset.get(g["id"], False)
            key = SectionCache.key(g, eager)
            html = self.sections.get(key)
            if html is None:
                # Cached for every session of the user: the form's token is put in below, per page.
                html = self.templates.render("section", g=g, full=False, eager=eager, t=views.local_time,
                                             took=views.took, size=views.human_bytes, csrf=CSRF_SLOT)
                self.sections.put(key, html)
            sections.append(html.replace(CSRF_SLOT_ATTR, f'value="{csrf}"'))
        detail = f"page {pg.page} of {pg.pages}"
        if filters.active:
            detail += f"; search {json.dumps(filters.params(), ensure_ascii=False)}"[:300]
        self.event("gallery_view", ok=True, user_id=user, detail=detail)
        processing = any(g["status"] == "Processing" for g in pg.generations)
        notice = "The generation was deleted, with its files." if request.query.get("deleted") == "1" else None
        return self.page("gallery", pg=pg, sections=sections, user=user, poll=processing, filters=filters,
                         providers=self._provider_names(user), notice=notice)

    def _provider_names(self, user: str) -> list[str]:
        """The providers this user's generations used: the choices of the search's provider filter."""
        return self.store.provider_names(user)

    def generation(self, gen_id: str):
        user = self.require_user(next_path=f"/g/{gen_id}")
        g = views.load_generation(self.store, user, gen_id)
        if g is None:
            raise HTTPError(404)
        self._with_running([g])
        if request.query.get("live") != "1":
            # ?live=1 is the page's own script fetching what changed (as /section does): part of a view
            # already counted, not a view of its own.
            self.event("generation_view", ok=True, user_id=user, generation_id=gen_id)
        return self.page("generation", g=g, user=user, poll=g["status"] == "Processing")

    def section(self, gen_id: str):
        user = self.current_user()
        if user is None:
            raise HTTPError(401, "Log in first.")
        g = views.load_generation(self.store, user, gen_id)
        if g is None:
            raise HTTPError(404)
        self._with_running([g])
        # Part of a page already counted as a view: not an event of its own.
        return self.page("section", g=g, full=False, eager=True)

    # -- routes: API -------------------------------------------------------------------
    def _base_url(self) -> str:
        # Absolute URLs, so a script can fetch them as they are: the public
        # URL when one is configured, else the address this request came to.
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        parts = request.urlparts
        return f"{parts.scheme}://{parts.netloc}"

    def api_list(self):
        user = self.api_user()
        try:
            page_no = int(request.query.get("page") or 1)
        except ValueError:
            raise self.http_error(400, f"invalid page {request.query.get('page')!r}: a whole number", api=True)
        from aigen.store.search import Filters

        filters = Filters.from_query(request.query.getunicode)
        pg = views.load_page(self.store, user, page_no, self.settings.page_size, filters=filters)
        self.event("api_view", ok=True, user_id=user, detail=f"list page {pg.page}")
        return self.json({
            "user_id": user,
            "page": pg.page,
            "pages": pg.pages,
            "total": pg.total,
            "matched": pg.matched,
            "search": filters.params(),
            "counts": {k: pg.counts.get(k, 0) for k in ("Processing", "Completed", "Failed")},
            "generations": [views.api_dict(g, self._base_url()) for g in pg.generations],
        })

    def api_generation(self, gen_id: str):
        user = self.api_user()
        g = views.load_generation(self.store, user, gen_id)
        if g is None:
            raise self.http_error(404, f"no generation {gen_id} of yours", api=True)
        self.event("api_view", ok=True, user_id=user, generation_id=gen_id)
        return self.json(views.api_dict(g, self._base_url()))

    def api_status(self, gen_id: str):
        user = self.api_user()
        row = self.store.query_one(
            "SELECT g.status, (SELECT count(*) FROM assets a WHERE a.generation_id = g.id) AS total, "
            "(SELECT count(*) FROM assets a WHERE a.generation_id = g.id AND a.status = 'done') AS done "
            "FROM generations g WHERE g.id = ? AND g.user_id = ?", (gen_id, user))
        if row is None:
            raise self.http_error(404, f"no generation {gen_id} of yours", api=True)
        # Polled every few seconds while work runs: not logged as a view.
        return self.json({"id": gen_id, "status": row["status"], "done": row["done"], "total": row["total"]})

    def api_live(self):
        """What the page's script polls: counts, and per generation its status, who works on it and its
        version tag (and, while in progress, each asset's status and progress). Not a view: not logged.
        Answered 304 to an If-None-Match of the same body, so an unchanged poll is a few bytes."""
        user = self.api_user()
        gen_id = request.query.get("g")
        if gen_id is not None and not _GEN_ID_RE.fullmatch(gen_id):
            raise self.http_error(400, f"invalid generation id {gen_id[:40]!r}", api=True)
        try:
            page_no = int(request.query.get("page") or 1)
        except ValueError:
            raise self.http_error(400, f"invalid page {request.query.get('page')!r}: a whole number", api=True)
        live = views.load_live(self.store, user, page=page_no, page_size=self.settings.page_size, gen_id=gen_id)
        if gen_id is not None and not live.generations:
            raise self.http_error(404, f"no generation {gen_id} of yours", api=True)
        self._with_running(live.generations)
        body = json.dumps(views.live_dict(live), ensure_ascii=False, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:24] + '"'
        if etag in [t.strip() for t in (request.environ.get("HTTP_IF_NONE_MATCH") or "").split(",")]:
            return HTTPResponse(status=304, headers={"ETag": etag})
        return HTTPResponse(body=body, headers={"Content-Type": "application/json; charset=utf-8", "ETag": etag})

    # -- routes: actions -------------------------------------------------------------------
    def retry_post(self, gen_id: str):
        """Resume a stalled run or Retry a failed one: the checks `aigen retry` makes, then the run is
        started in the background (a detached `aigen retry`, or queued for the cluster's live workers)."""
        from aigen.pipeline import resume
        from aigen.pipeline.background import start_in_background

        problem = self.cross_site_problem()
        if problem:
            self.event("generation_retry", ok=False, reason="cross_site", user_id=self.current_user(),
                       detail=problem)
            raise self.http_error(403, self.CROSS_SITE_MESSAGE)
        user = self.require_user(next_path=f"/g/{gen_id}")
        if not self.codec.check_csrf(self.session(), request.forms.get("csrf_token")):
            self.event("generation_retry", ok=False, reason="csrf", user_id=user)
            raise self.http_error(403, "This form expired or did not come from this page. Reload and try again.")
        if self.store.query_one("SELECT 1 FROM generations WHERE id = ? AND user_id = ?", (gen_id, user)) is None:
            raise HTTPError(404)  # another user's generation is answered exactly like a missing one
        if self.readonly:
            raise self.http_error(403, "This gallery shows a read-only home: nothing can be started from it.")
        include_refused = request.forms.get("include_refused") == "1"
        back = self.safe_next(request.forms.getunicode("next"))
        try:
            plan = resume.plan_retry(self.home.path, self.store, gen_id, include_refused=include_refused,
                                     now=self.settings.clock(), grace_s=resume.START_GRACE_S,
                                     count_workflows=self._count_workflows)
            if plan.nothing_to_do:
                raise Busy(f"generation {gen_id} is already Completed: nothing to retry")
            # Processing at once (the page says so, and a second press is refused as starting), with the
            # same assets `aigen retry` reopens: every one not done, refused ones only if asked.
            self.grants.drop_generation(gen_id)
            resume.reopen(self.store, gen_id, include_refused=include_refused, now=self.settings.clock())
            started = start_in_background(self.home.path, self.store, gen_id, include_refused=include_refused)
        except AigenError as e:
            self.event("generation_retry", ok=False, reason=e.code, user_id=user, generation_id=gen_id,
                       detail=e.message[:300])
            text = e.message + (f". {e.hint[0].upper()}{e.hint[1:]}." if e.hint else "")
            raise self.http_error(409, text[:1].upper() + text[1:])
        how = "queued for the cluster's workers" if started.get("queued") else f"pid {started.get('pid')}"
        skipped = f", {len(plan.refused)} refused skipped" if plan.refused else ""
        self.event("generation_retry", ok=True, user_id=user, generation_id=gen_id,
                   detail=f"{len(plan.missing)} asset(s) to make{skipped}; {how}")
        raise self.redirect(back if back != "/" else f"/#g-{gen_id}")

    # -- routes: files ---------------------------------------------------------------------
    # What /media/ID/<variant> serves: the column of the assets row that names the file.
    VARIANTS = {"poster": "poster_path", "thumb": "thumb_path", "thumb2x": "thumb2x_path"}

    def media(self, asset_id: int | str, variant: str | None = None):
        """The file of an asset, or (`variant`) its poster frame or a preview; only for its owner.

        A file shown as a preview (a poster, a thumbnail) is not logged as a view of the asset."""
        asset_id = int(asset_id)
        poster = variant is not None
        user = self.current_user()  # the session is checked in the database on every request
        via_basic = False
        if user is None:
            user = self.basic_user(api=False)
            via_basic = user is not None
        if user is None:
            raise HTTPError(401, "Log in first.")
        # What this session was already found allowed to fetch of this asset (a video's next Range request):
        # the ownership lookup and the path checks are not made again for a few seconds (MediaGrants).
        session_key = None if via_basic else self.session().key
        grant = self.grants.get(session_key, asset_id, variant) if session_key else None
        if grant is None or grant.row["user_id"] != user:
            grant = self._media_grant(asset_id, variant, user)
            if session_key:
                self.grants.put(session_key, asset_id, variant, grant)
        row, rel = grant.row, grant.rel
        if not self.local_files:
            return self.stored_media(row, rel, poster, user, via_basic)
        download = request.query.get("download") == "1"
        name = safe_download_name(f"{row['generation_id']}-{Path(rel).name}") if download else None
        try:
            res, rng = file_response(grant.path, request.environ, etag_seed=None if poster else row["sha256"],
                                     download_name=name)
        except FileNotFoundError:
            # Deleted (a generation's files go before its rows) or never there.
            if session_key:
                self.grants.drop(session_key, asset_id, variant)
            raise HTTPError(404) from None
        return self._media_sent(res, rng, row, user, poster, download, via_basic, (200, 206, 304))

    # GET /media/ID with nothing else asked (no query, no HTTP Basic): what media_fast may answer.
    FAST_MEDIA = re.compile(r"/media/([0-9]{1,18})")
    fast_media = True

    def media_fast(self, environ: dict):
        """The next Range request of a file this session was just allowed (MediaGrants), answered without
        bottle's routing and response objects; None for anything else, which then goes the usual way
        (`media`), the same request.

        The same checks as `media`, by the same methods: the Host, the session's cookie and its row in the
        database (every request), the grant's user; the same file_response, headers (the security
        headers are added by GalleryApp.wsgi for both) and view log. A video's fixed 1 MiB Range requests
        are many: this was half of what each cost in Python (bench/fig4_gallery.py).
        """
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING") or not self.local_files:
            return None
        m = self.FAST_MEDIA.fullmatch(environ.get("PATH_INFO") or "")
        if m is None or environ.get("HTTP_AUTHORIZATION"):
            return None
        request.bind(environ)
        try:
            self.check_host()
            user = self.current_user()
        except HTTPError:
            return None
        if user is None:
            return None
        asset_id = int(m.group(1))
        session_key = self.session().key
        grant = self.grants.get(session_key, asset_id, None)
        if grant is None or grant.row["user_id"] != user:
            return None
        try:
            (status, headers, content), rng = file_response(grant.path, environ, etag_seed=grant.row["sha256"],
                                                            raw=True)
        except FileNotFoundError:
            return None  # `media` answers 404 and drops the grant
        try:
            headers["Content-Security-Policy"] = self.media_csp
            if status in (200, 206, 304):
                self.log_asset_view(user, grant.row, "view", rng, False)
        except BaseException:
            close = getattr(content, "close", None)
            if close is not None:
                close()
            raise
        return status, headers, content

    def _media_grant(self, asset_id: int, variant: str | None, user: str) -> Grant:
        """Look the asset up and check it: `user`'s, done, and the file named inside its own folder (or,
        in the home, inside the home). Any refusal is the same 404 as for a missing asset."""
        row = self.store.query_one(
            "SELECT a.id, a.kind, a.idx, a.status, a.path, a.poster_path, a.thumb_path, a.thumb2x_path, a.sha256, "
            "a.generation_id, g.user_id FROM assets a JOIN generations g ON g.id = a.generation_id WHERE a.id = ?",
            (asset_id,))
        # Another user's asset is answered exactly like a missing one.
        if row is None or row["user_id"] != user or row["status"] != "done":
            raise HTTPError(404)
        rel = row[self.VARIANTS[variant]] if variant else row["path"]
        if variant in ("thumb", "thumb2x"):
            if rel is None:
                rel = self.lazy_thumbnail(row, variant)
            from aigen.pipeline.thumbs import owned_key

            # A preview lies in its generation's own folder, always (made there by aigen): anything else
            # in the row is not served.
            if owned_key(row, rel) is None:
                raise HTTPError(404)
        if not self.local_files:
            if not rel:
                raise HTTPError(404)
            return Grant(row, rel)
        path = real_path_in_home(self.storage.root, rel)
        if path is None:
            raise HTTPError(404)
        return Grant(row, rel, path)

    def _media_sent(self, res, rng, row: dict, user: str, poster: bool, download: bool, via_basic: bool,
                    viewed: tuple[int, ...]):
        """The media response with its CSP, the view logged when `res.status_code` is one of `viewed`."""
        try:
            res.set_header("Content-Security-Policy", self.media_csp)
            if not poster and res.status_code in viewed and request.method != "HEAD":
                self.log_asset_view(user, row, "download" if download else "view", rng, via_basic)
        except BaseException:
            # Under waitress the body is the open file itself: this response
            # is never sent, so close it now rather than when GC finds it.
            close = getattr(res.body, "close", None)
            if close is not None:
                close()
            raise
        return res

    def stored_media(self, row: dict, rel: str | None, poster: bool, user: str, via_basic: bool):
        """An owned file in object storage: a 302 to a short-lived presigned URL, or streamed from it.

        The key must lie in the generation's own folder
        (generated_content/<owner>/<generation>/): a tampered row is a 404,
        never a URL signed for some other object."""
        from aigen.pipeline.thumbs import owned_key
        from aigen.storage import ObjectMissing, StorageError
        from aigen.web.media import first_byte_asked, storage_response

        key = owned_key(row, rel)
        if key is None:
            raise HTTPError(404)
        download = request.query.get("download") == "1"
        name = safe_download_name(f"{row['generation_id']}-{key.rsplit('/', 1)[-1]}") if download else None
        try:
            if self.delivery == "redirect":
                url = self.storage.presigned_url(key, self.url_ttl, download_name=name)
                # Never cached: the URL it points to expires.
                res = HTTPResponse(status=302, headers={"Location": url, "Cache-Control": "private, no-store",
                                                        "Referrer-Policy": "no-referrer"})
                rng = first_byte_asked(request.environ.get("HTTP_RANGE"))
            else:
                res, rng = storage_response(self.storage, key, request.environ,
                                            etag_seed=None if poster else row["sha256"], download_name=name)
        except ObjectMissing:
            raise HTTPError(404) from None
        except StorageError as e:
            log.warning("media %s: %s", row["id"], e.message)
            raise HTTPError(503, "The file store cannot be reached right now; try again.") from None
        return self._media_sent(res, rng, row, user, poster, download, via_basic, (200, 206, 302, 304))

    def poster(self, asset_id: int):
        return self.media(asset_id, "poster")

    def thumb(self, asset_id: int):
        return self.media(asset_id, "thumb")

    def thumb2x(self, asset_id: int):
        return self.media(asset_id, "thumb2x")

    def lazy_thumbnail(self, row: dict, variant: str) -> str:
        """The key of a preview the asset had none of, made now (once, whichever request asks first);
        when it cannot be made (a read-only home, a file that is not a picture), a 302 to what the
        tile can show instead: the file itself for an image, the poster for a video."""
        from aigen.errors import AigenError
        from aigen.pipeline.thumbs import ensure_thumbnails

        if not self.readonly:
            with self._thumb_lock(row["id"]):
                fresh = self.store.query_one("SELECT thumb_path, thumb2x_path, path FROM assets WHERE id = ?",
                                             (row["id"],))
                key = fresh and fresh[self.VARIANTS[variant]]
                if key is None and fresh and fresh["path"] == row["path"]:
                    try:
                        key = ensure_thumbnails(self.store, self.storage, row)[self.VARIANTS[variant]]
                    except (AigenError, OSError) as e:
                        log.warning("no preview for asset %s: %s", row["id"], getattr(e, "message", None) or e)
                    except Exception:
                        log.warning("no preview for asset %s", row["id"], exc_info=True)
                if key is not None:
                    return key
        if row["kind"] == "video" and not row["poster_path"]:
            raise HTTPError(404)
        target = f"/media/{row['id']}" + ("/poster" if row["kind"] == "video" else "")
        raise HTTPResponse(status=302, headers={"Location": target, "Cache-Control": "private, no-store"})

    def _thumb_lock(self, asset_id: int) -> threading.Lock:
        with self._thumb_locks_guard:
            lock = self._thumb_locks.get(asset_id)
            if lock is None:
                if len(self._thumb_locks) > 1024:
                    self._thumb_locks = {k: v for k, v in self._thumb_locks.items() if v.locked()}
                lock = self._thumb_locks[asset_id] = threading.Lock()
            return lock

    def favicon(self):
        # Browsers ask for /favicon.ico on pages without a <link rel=icon>,
        # such as an image opened full size.
        return self.static_file("favicon.svg")

    def static_file(self, name: str):
        if name not in STATIC_FILES:
            raise HTTPError(404)
        data, etag = self.static[name]
        headers = {"Content-Type": STATIC_FILES[name], "ETag": etag, "Cache-Control": "no-cache"}
        if request.environ.get("HTTP_IF_NONE_MATCH") == etag:
            return HTTPResponse(status=304, headers=headers)
        return HTTPResponse(body=data, headers=headers)


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE_RE = re.compile(
    rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\\x00-\x1f]|\\.)*"))*[ \t]*;?[ \t]*')


def header_problem(environ: dict) -> str | None:
    """The name of a request header Bottle would fail on (a 500), or None.

    Bottle parses Content-Type and Content-Length when a route reads the form,
    and raised ValueError on, e.g., "Content-Type: ;;;". Such a request is a
    400. (Under waitress a bad Content-Length never gets this far.)
    """
    length = environ.get("CONTENT_LENGTH")
    if length and not re.fullmatch(r"[0-9]{1,18}", length):
        return "Content-Length"
    ctype = environ.get("CONTENT_TYPE")
    if ctype and (len(ctype) > 512 or not _CONTENT_TYPE_RE.fullmatch(ctype)):
        return "Content-Type"
    return None


def safe_next(value) -> str:
    """The `next` of a login (query or form) if it is one of ours, else "/"."""
    if isinstance(value, str) and len(value) <= 64 and _NEXT_RE.fullmatch(value):
        return value
    return "/"


def make_app(settings: WebSettings) -> Bottle:
    """Build the gallery app for one home. Each call builds an independent app."""
    g = Gallery(settings)
    app = GalleryApp()
    app.gallery = g
    if g.csp != CSP:
        app.security_headers = tuple((k, g.csp if k == "Content-Security-Policy" else v)
                                     for k, v in SECURITY_HEADERS)
    app.hook("before_request")(g.check_host)
    app.route("/", "GET", g.gallery)
    app.route("/login", "GET", g.login_form)
    app.route("/login", "POST", g.login_post)
    app.route("/logout", "POST", g.logout)
    app.route("/login/link/<token>", "GET", g.magic_landing)
    app.route("/login/link/<token>", "POST", g.magic_login)
    app.route(f"/g/<gen_id:re:{GEN_ID}>", "GET", g.generation)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/section", "GET", g.section)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/retry", "POST", g.retry_post)
    app.route("/api/generations", "GET", g.api_list)
    app.route(f"/api/generations/<gen_id:re:{GEN_ID}>", "GET", g.api_generation)
    app.route(f"/api/generations/<gen_id:re:{GEN_ID}>/status", "GET", g.api_status)
    app.route("/api/live", "GET", g.api_live)
    # HEAD is answered by the GET routes (Bottle falls back to them).
    app.route(f"/media/<asset_id:re:{ASSET_ID}>", "GET", g.media)
    app.route(f"/media/<asset_id:re:{ASSET_ID}>/poster", "GET", g.poster)
    from aigen.web import actions

    app.actions = actions.register(app, g, start=settings.start, limits=settings.limits)
    app.route(f"/media/<asset_id:re:{ASSET_ID}>/thumb", "GET", g.thumb)
    app.route(f"/media/<asset_id:re:{ASSET_ID}>/thumb2x", "GET", g.thumb2x)
    app.route("/static/<name>", "GET", g.static_file)
    app.route("/favicon.ico", "GET", g.favicon)
    for code in (400, 401, 403, 404, 405, 413, 429, 500):
        app.error(code)(g.error_page)
    app.catchall = True
    return app
