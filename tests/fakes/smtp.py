"""A real SMTP server for the email tests: aiosmtpd on 127.0.0.1, on a port the OS picks.

It keeps every message it accepted (parsed with the email package) and can be
told to answer the next DATA commands with a temporary failure (421), the way
an overloaded or restarting mail server does.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from dataclasses import dataclass

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


class _Handler:
    def __init__(self):
        self.received: list[Received] = []
        self.fail_next = 0
        self.fail_reply = "421 4.3.2 Service not available, try again later"
        # Store the message, then answer a temporary error anyway (a server that
        # times out its queue write, or restarts, after taking the message).
        self.store_then_fail = 0
        self.fail_rcpt_next = 0  # a temporary refusal of the recipient: before any data
        self.store_then_fail_reply = "451 4.3.0 Temporary failure after end of data"
        self.auth: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        # Hold the next DATA commands without answering until released (a send caught mid-way, for a
        # test to kill its sender); a held message is not stored and is answered with a temporary error.
        self.hold_next = 0
        self.held: list[Received] = []
        self.held_event = threading.Event()
        self.release_event = threading.Event()
        self.delay_s = 0.0  # every DATA answer waits this long (a server that takes its time)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            if self.fail_rcpt_next > 0:
                self.fail_rcpt_next -= 1
                return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        hold = False
        with self.lock:
            if self.hold_next > 0:
                self.hold_next -= 1
                hold = True
                self.held.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content or envelope.content))
        if hold:
            self.held_event.set()
            while not self.release_event.is_set():
                await asyncio.sleep(0.02)
            return "451 4.3.0 Held, then refused (not stored)"
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_reply
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
                                          or envelope.content))
            if self.store_then_fail > 0:
                self.store_then_fail -= 1
                return self.store_then_fail_reply
        return "250 2.0.0 OK: queued"


class _PortZeroController(Controller):
    """aiosmtpd's Controller checks the server by connecting to ``self.port``, which
    is 0 when the OS picks the port: read the bound port first."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """Start with ``with SmtpServer() as srv:``; ``srv.port``, ``srv.messages``, ``srv.fail_next(n)``."""

    def __init__(self, *, auth: dict[str, str] | None = None):
        self.handler = _Handler()
        kwargs = {}
        if auth is not None:
            def authenticator(server, session, envelope, mechanism, auth_data):
                from aiosmtpd.smtp import AuthResult

                login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
                password = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
                self.handler.auth.append((login, password))
                # handled=False: let aiosmtpd answer 535 itself on a failure.
                return AuthResult(success=auth.get(login) == password, handled=False)

            kwargs.update(authenticator=authenticator, auth_require_tls=False)
        self.controller = _PortZeroController(self.handler, hostname="127.0.0.1", port=0, ready_timeout=30, **kwargs)

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def fail_next(self, n: int, reply: str | None = None) -> None:
        with self.handler.lock:
            self.handler.fail_next = n
            if reply:
                self.handler.fail_reply = reply

    def fail_rcpt_next(self, n: int) -> None:
        """The next ``n`` RCPT commands get a temporary refusal (greylisting): nothing is sent."""
        with self.handler.lock:
            self.handler.fail_rcpt_next = n

    def store_then_fail(self, n: int, reply: str | None = None) -> None:
        """The next ``n`` messages are stored, and answered with a temporary error after DATA."""
        with self.handler.lock:
            self.handler.store_then_fail = n
            if reply:
                self.handler.store_then_fail_reply = reply

    def hold_next(self, n: int = 1) -> None:
        """The next ``n`` messages get no answer until ``release()``; they are not stored."""
        with self.handler.lock:
            self.handler.hold_next = n
            self.handler.held_event.clear()
            self.handler.release_event.clear()

    def wait_held(self, timeout: float) -> Received | None:
        if not self.handler.held_event.wait(timeout):
            return None
        with self.handler.lock:
            return self.handler.held[-1]

    def release(self) -> None:
        self.handler.release_event.set()

    def slow_down(self, seconds: float) -> None:
        self.handler.delay_s = seconds

    def start(self) -> "SmtpServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.release()
        self.controller.stop()

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connecting is refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
