"""Signed, expiring links into the gallery, and the secret that signs them.

Kept apart from the Bottle app so that the notifier can make a link without
importing the web stack. The secret lives in the home as `secret.key`, created
on first use with mode 0600; rotating it (deleting the file) invalidates every
session and every link.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from aigen.config import Home

SECRET_FILE = "secret.key"
DEFAULT_LINK_TTL = timedelta(days=7)
LINK_SALT = "aigen.magic-link"


SECRET_ENV = "AIGEN_SECRET_KEY"
SECRET_FILE_ENV = "AIGEN_SECRET_KEY_FILE"
# As long as the key made on first use has (64 hex digits = 256 bits) would be best; 32 characters is the floor.
MIN_SECRET_CHARS = 32


def configured_secret(env=None) -> bytes | None:
    """The signing secret given by configuration, the same on every host of a cluster: AIGEN_SECRET_KEY (the
    value) or AIGEN_SECRET_KEY_FILE (a file holding it); None when neither is set. BadInput when it cannot be
    used (both set, the file unreadable, shorter than 32 characters)."""
    from aigen.errors import BadInput

    env = os.environ if env is None else env
    value = env.get(SECRET_ENV) or ""
    path = (env.get(SECRET_FILE_ENV) or "").strip()
    if value and path:
        raise BadInput(f"both {SECRET_ENV} and {SECRET_FILE_ENV} are set: set only one")
    if path:
        try:
            data = Path(path).read_bytes().strip()
        except FileNotFoundError:
            raise BadInput(f"{SECRET_FILE_ENV}={path!r}: no such file") from None
        except OSError as e:
            raise BadInput(f"{SECRET_FILE_ENV}={path!r} cannot be read: {e.strerror or e}") from None
        where = f"the file {path} ({SECRET_FILE_ENV})"
    elif value:
        data = value.strip().encode("utf-8", "surrogateescape")
        where = SECRET_ENV
    else:
        return None
    if len(data) < MIN_SECRET_CHARS:
        raise BadInput(f"the signing secret in {where} is {len(data)} characters long: it needs at least "
                       f"{MIN_SECRET_CHARS}",
                       hint="make one with: python -c \"import secrets; print(secrets.token_hex(32))\"")
    return data


def secret_key(home: Home | Path, env=None) -> bytes:
    """The signing secret: AIGEN_SECRET_KEY or AIGEN_SECRET_KEY_FILE when set (every gallery host and notifier
    of a cluster must sign alike), else the home's, created atomically with mode 0600 on first use."""
    configured = configured_secret(env)
    if configured is not None:
        return configured
    base = home.path if isinstance(home, Home) else Path(home)
    path = base / SECRET_FILE
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    base.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    # pid + random: threads of one process may race to create it too.
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if another process created the secret first: then use theirs.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    os.chmod(path, 0o600)
    return path.read_bytes().strip()


def public_base_url(default: str | None = None) -> str:
    """AIGEN_PUBLIC_URL if set, else the given server address, else the default local one."""
    url = os.environ.get("AIGEN_PUBLIC_URL") or default or "http://127.0.0.1:8000"
    return url.rstrip("/")


def _serializer(home: Home | Path, secret: bytes | None = None):
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(secret if secret is not None else secret_key(home), salt=LINK_SALT)


def magic_token(home: Home | Path, user_id: str, generation_id: str | None, *,
                expires: timedelta = DEFAULT_LINK_TTL, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    # "n" makes every link distinct, so spending one (a link opens one
    # session, once) never spends another made in the same second.
    # "t": when it was made (ms), so ending all the user's sessions cancels it too.
    payload = {"u": user_id, "g": generation_id, "exp": int((now + expires).timestamp()),
               "t": round(now.timestamp(), 3), "n": secrets.token_urlsafe(6)}
    return _serializer(home).dumps(payload)


def verify_magic_token(home: Home | Path, token: str, *, now: datetime | None = None) -> dict | None:
    """Return {"user_id", "generation_id"} for a valid, unexpired token, else None."""
    from itsdangerous import BadSignature

    try:
        payload = _serializer(home).loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or "u" not in payload or "exp" not in payload:
        return None
    now = now or datetime.now(timezone.utc)
    if now.timestamp() > payload["exp"]:
        return None
    return {"user_id": payload["u"], "generation_id": payload.get("g")}


def check_magic_token(home: Home | Path, token: str, *, now: datetime | None = None,
                      secret: bytes | None = None) -> tuple[dict | None, str]:
    """Like verify_magic_token, but also say why a token is refused.

    Returns (data, "ok") (data also holding the link's expiry, "exp", and
    when it was made, "issued_at", in Unix seconds) or (None, reason) with reason "bad_link" (not signed
    by this home's secret, or mangled) or "expired_link". The gallery logs the
    reason and tells the user which it is, since "ask for a new link" is the
    answer only to the second. `secret` is the signing secret when the
    caller already holds it (the gallery of a read-only home may have none).
    """
    from itsdangerous import BadData

    try:
        payload = _serializer(home, secret).loads(token)
    except BadData:
        return None, "bad_link"
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), str) or not isinstance(
        payload.get("exp"), int
    ):
        return None, "bad_link"
    now = now or datetime.now(timezone.utc)
    if now.timestamp() > payload["exp"]:
        return None, "expired_link"
    issued = payload.get("t")
    if not isinstance(issued, (int, float)) or isinstance(issued, bool):
        issued = payload["exp"] - DEFAULT_LINK_TTL.total_seconds()  # a link made before "t" existed
    return {"user_id": payload["u"], "generation_id": payload.get("g"), "exp": payload["exp"],
            "issued_at": float(issued)}, "ok"


SERVED_URL_FILE = "gallery.url"


def record_served_url(home: Home | Path, url: str) -> None:
    """Remember the address `aigen serve` last listened on, for links made while it is not told otherwise.

    `aigen serve` calls it only for a port given with --port: a port the
    system picked (--port 0) dies with the server, and a link to it would too.
    """
    base = home.path if isinstance(home, Home) else Path(home)
    base.mkdir(parents=True, exist_ok=True)
    path = base / SERVED_URL_FILE
    tmp = path.with_name(f".{SERVED_URL_FILE}.{os.getpid()}.tmp")
    tmp.write_text(url.rstrip("/") + "\n")
    os.replace(tmp, path)


def served_base_url(home: Home | Path) -> str | None:
    base = home.path if isinstance(home, Home) else Path(home)
    try:
        url = (base / SERVED_URL_FILE).read_text().strip()
    except OSError:
        return None
    return url if url.startswith(("http://", "https://")) else None


def magic_link(home: Home | Path, user_id: str, generation_id: str | None = None, *,
               expires: timedelta = DEFAULT_LINK_TTL, base_url: str | None = None,
               now: datetime | None = None) -> str:
    """A URL that logs `user_id` straight into the gallery page of `generation_id`.

    The base URL is AIGEN_PUBLIC_URL, else `base_url`, else the address
    `aigen serve` last listened on in this home with an explicit --port, else
    http://127.0.0.1:8000.
    """
    token = magic_token(home, user_id, generation_id, expires=expires, now=now)
    return f"{public_base_url(base_url or served_base_url(home))}/login/link/{quote(token, safe='')}"
