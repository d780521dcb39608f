"""Email notifications: SMTP settings, the message (text + HTML + thumbnail), sending.

Settings come from the environment (``AIGEN_SMTP_HOST``, ``_PORT``, ``_USER``,
``_PASSWORD``, ``_FROM``, ``_SECURITY``, ``_TIMEOUT``, ``_RETRY_FOR``), each
overriding the ``[smtp]`` table of ``<home>/config.toml``. The password is
never logged, printed or stored in the database: it is kept out of every
repr and scrubbed from error messages before they are recorded.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Mapping

from aigen.errors import BadInput

log = logging.getLogger("aigen.notify")

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRY_FOR_S = 3600.0
# Backoff between attempts: 30 s, 1, 2, 4, 8 min, then every 15 min.
BACKOFF_FIRST_S = 30.0
BACKOFF_CAP_S = 900.0

EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def validate_email(address: str) -> str:
    address = (address or "").strip()
    if len(address) > 254 or not EMAIL_RE.fullmatch(address):
        raise BadInput(f"invalid --email {address!r}: expected an address such as alice@example.com")
    return address


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # starttls | ssl | none
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "aigen@localhost"
    timeout: float = DEFAULT_TIMEOUT_S
    retry_for: float = DEFAULT_RETRY_FOR_S
    source: str = "environment"

    def describe(self) -> str:
        """Where mail goes, for messages and logs; never the password."""
        mode = {"starttls": "STARTTLS", "ssl": "SSL", "none": "no TLS"}[self.security]
        who = f", as {self.user}" if self.user else ""
        return f"{self.host}:{self.port} ({mode}{who}), from {self.sender}"

    def scrub(self, text: str) -> str:
        """Remove the password (and the forms an SMTP dialogue encodes it in) from a message."""
        if not self.password:
            return text
        secrets_ = {self.password, base64.b64encode(self.password.encode()).decode()}
        if self.user:
            plain = f"\0{self.user}\0{self.password}".encode()
            secrets_.add(base64.b64encode(plain).decode())
        for s in secrets_:
            if s:
                text = text.replace(s, "***")
        return text


def _read_config(home: Path | None) -> tuple[dict, str | None]:
    from aigen.config import read_config_file

    data, path = read_config_file(home)
    if path is None:
        return {}, None
    smtp = data.get("smtp") or {}
    if not isinstance(smtp, dict):
        raise BadInput(f"invalid {path}: [smtp] must be a table")
    if smtp.get("password") and os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s holds an SMTP password and is readable by other users: chmod 600 it", path)
    return smtp, str(path)


def load_smtp_settings(env: Mapping[str, str] | None = None, home: Path | None = None) -> SmtpSettings | None:
    """The SMTP settings in force, or None when no server is configured."""
    env = os.environ if env is None else env
    conf, conf_path = _read_config(home)

    def get(name: str, key: str):
        value = env.get(f"AIGEN_SMTP_{name}")
        if value not in (None, ""):
            return value, f"AIGEN_SMTP_{name}"
        value = conf.get(key)
        return (value, f"{conf_path} [smtp] {key}") if value not in (None, "") else (None, None)

    host, _ = get("HOST", "host")
    if not host:
        return None
    security, where = get("SECURITY", "security")
    if security is None:
        # Also accept the common boolean switches.
        if str(env.get("AIGEN_SMTP_SSL", conf.get("ssl", ""))).lower() in ("1", "true", "yes", "on"):
            security = "ssl"
        elif str(env.get("AIGEN_SMTP_STARTTLS", conf.get("starttls", ""))).lower() in ("0", "false", "no", "off"):
            security = "none"
    port_value, port_where = get("PORT", "port")
    if security is None:
        security = "ssl" if str(port_value) == "465" else "starttls"
    security = str(security).lower()
    if security not in SECURITY_MODES:
        raise BadInput(f"invalid {where} {security!r}: choose starttls, ssl or none")
    if port_value is None:
        port = {"starttls": 587, "ssl": 465, "none": 25}[security]
    else:
        try:
            port = int(port_value)
        except (TypeError, ValueError):
            port = -1
        if not 1 <= port <= 65535:
            raise BadInput(f"invalid {port_where} {port_value!r}: must be a port number 1-65535")
    user, _ = get("USER", "user")
    password, _ = get("PASSWORD", "password")
    sender, sender_where = get("FROM", "from")
    if sender is None:
        sender = user if user and "@" in str(user) else f"aigen@{socket.getfqdn() or 'localhost'}"
    elif not EMAIL_RE.fullmatch(re.sub(r"^.*<(.+)>\s*$", r"\1", str(sender)).strip()):
        raise BadInput(f"invalid {sender_where} {sender!r}: expected an address such as aigen@example.com")
    timeout = _float_setting(get("TIMEOUT", "timeout"), DEFAULT_TIMEOUT_S, 1, 600)
    retry_for = _float_setting(get("RETRY_FOR", "retry_for"), DEFAULT_RETRY_FOR_S, 0, 7 * 86400)
    source = "environment" if env.get("AIGEN_SMTP_HOST") else (conf_path or "environment")
    return SmtpSettings(
        host=str(host), port=port, security=security, user=str(user) if user else None,
        password=str(password) if password else None, sender=str(sender), timeout=timeout,
        retry_for=retry_for, source=source,
    )


def _float_setting(found: tuple, default: float, lo: float, hi: float) -> float:
    value, where = found
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not lo <= number <= hi:
        raise BadInput(f"invalid {where} {value!r}: must be a number of seconds between {lo:g} and {hi:g}")
    return number


def backoff_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return min(BACKOFF_FIRST_S * 2 ** max(0, attempt - 1), BACKOFF_CAP_S)


def build_email(notice, settings: SmtpSettings, recipient: str, *, message_id: str,
                thumbnail: bytes | None = None) -> EmailMessage:
    """A multipart/alternative message: plain text, and HTML with the thumbnail inline."""
    from email.utils import make_msgid

    msg = EmailMessage()
    msg["Subject"] = notice.subject
    msg["From"] = settings.sender if "<" in settings.sender else formataddr(("aigen", settings.sender))
    msg["To"] = recipient
    msg["Date"] = format_datetime(notice.now)
    msg["Message-ID"] = message_id
    # RFC 3834: tells mail servers and auto-responders this is machine-sent.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Aigen-Generation"] = notice.generation_id
    msg.set_content(notice.text())
    cid = None
    if thumbnail:
        domain = settings.sender.rsplit("@", 1)[-1].strip(">") or "aigen.local"
        cid = make_msgid("thumbnail", domain=domain)
    msg.add_alternative(notice.html(cid[1:-1] if cid else None), subtype="html")
    if thumbnail and cid:
        html_part = msg.get_payload()[1]
        html_part.add_related(thumbnail, maintype="image", subtype="jpeg", cid=cid,
                              filename="thumbnail.jpg", disposition="inline")
    return msg


class MailError(Exception):
    """A message that was not accepted. ``after_data``: the failure came after the whole
    message had been sent (a temporary answer to the end of DATA, or the connection lost
    while waiting for it): the server may have stored it, so a resend may make a copy."""

    def __init__(self, message: str, *, transient: bool, after_data: bool = False):
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.after_data = after_data


def classify(exc: BaseException, settings: SmtpSettings) -> MailError:
    """Turn an SMTP or network exception into a message and whether to try again."""
    if isinstance(exc, MailError):
        return exc
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        return MailError(f"{where} refused the recipient: {detail}", transient=all(400 <= c < 500 for c in codes))
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return MailError(
            f"{where} rejected the login of {settings.user!r}: {exc.smtp_code} {_text(exc.smtp_error)}",
            transient=400 <= exc.smtp_code < 500,
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return MailError(
            f"{where} does not support {exc}: with a local relay that has no TLS set AIGEN_SMTP_SECURITY=none",
            transient=False,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return MailError(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}",
                         transient=not 500 <= exc.smtp_code < 600)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return MailError(f"{where} closed the connection: {exc or 'no reason given'}", transient=True)
    if isinstance(exc, ssl.SSLError):
        # Certificate and protocol problems are configuration: trying again will not help.
        return MailError(f"TLS with {where} failed: {exc}", transient=False)
    if isinstance(exc, socket.gaierror):
        return MailError(f"cannot resolve the SMTP host {settings.host!r}: {exc.strerror or exc}", transient=True)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return MailError(f"{where} did not answer within {settings.timeout:g} s", transient=True)
    if isinstance(exc, ConnectionRefusedError):
        return MailError(f"cannot connect to {where}: connection refused", transient=True)
    if isinstance(exc, OSError):
        return MailError(f"cannot talk to {where}: {exc.strerror or exc}", transient=True)
    if isinstance(exc, smtplib.SMTPException):
        return MailError(f"SMTP error with {where}: {exc}", transient=False)
    return MailError(f"{type(exc).__name__}: {exc}", transient=False)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class _DataTracking:
    """Notes when the end of DATA ("<CRLF>.<CRLF>") has gone out: from then on the server
    has the whole message, and any failure is ambiguous (it may have stored it)."""

    data_sent = False
    _in_data = False

    def data(self, msg):
        self._in_data = True
        try:
            return super().data(msg)
        finally:
            self._in_data = False

    def send(self, s):
        super().send(s)
        if self._in_data and isinstance(s, (bytes, bytearray)) and s.endswith(b"\r\n.\r\n"):
            self.data_sent = True


class _SMTP(_DataTracking, smtplib.SMTP):
    pass


class _SMTP_SSL(_DataTracking, smtplib.SMTP_SSL):
    pass


def send_email(settings: SmtpSettings, msg: EmailMessage, recipient: str) -> None:
    """Send one message; raise MailError (with .transient and .after_data) when it was not accepted."""
    server = None
    try:
        context = ssl.create_default_context()
        if settings.security == "ssl":
            server = _SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
        else:
            server = _SMTP(settings.host, settings.port, timeout=settings.timeout)
        try:
            server.ehlo()
            if settings.security == "starttls":
                if not server.has_extn("starttls"):
                    # Refuse rather than send the password and the link in clear.
                    raise smtplib.SMTPNotSupportedError("STARTTLS")
                server.starttls(context=context)
                server.ehlo()
            if settings.user:
                server.login(settings.user, settings.password or "")
            refused = server.send_message(msg, to_addrs=[recipient])
            if refused:  # only possible with several recipients, kept for completeness
                raise smtplib.SMTPRecipientsRefused(refused)
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        err = classify(exc, settings)
        after_data = bool(server is not None and server.data_sent and err.transient)
        if after_data:
            err.message += " after the end of the message data (it may have been stored)"
        raise MailError(settings.scrub(err.message), transient=err.transient, after_data=after_data) from None
