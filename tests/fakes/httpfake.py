"""A small, real HTTP server for provider fakes: scripted answers, recorded requests.

Usage::

    with FakeServer() as srv:                       # ThreadingHTTPServer on 127.0.0.1:<free port>
        srv.route("POST", "/v1/images/generations", handler)      # default answer (a callable)
        srv.script("POST", "/v1/images/generations",              # answered first, in order
                   Reply(429, {"error": {...}}, headers={"Retry-After": "2"}),
                   Reply(500), ...)
        ... point the SDK at srv.url ...
        srv.count("POST", "/v1/images/generations")               # how many calls arrived
        srv.requests[-1].json() / .form() / .headers["authorization"]

A route's path may use shell wildcards (``/v1/tasks/*``). A handler is
``fn(request: Recorded, server: FakeServer) -> Reply``. ``Reply`` can delay
(for timeouts; the wait ends at once when the server stops, so tests never hang),
send fewer bytes than its Content-Length (truncation) or override Content-Type.
Unmatched requests get 404 with a JSON body naming the path, and are recorded too.
"""

from __future__ import annotations

import email.parser
import email.policy
import fnmatch
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    """One scripted answer.

    ``body``: bytes, str, or a dict/list sent as JSON. ``delay``: seconds to wait
    before answering (use for client timeouts). ``truncate_to``: send only this
    many body bytes while announcing the full Content-Length, then close.
    ``content_type``: overrides the default (JSON for dict/list, else
    application/octet-stream). ``no_length``: send no Content-Length; the body
    ends when the connection closes. ``trickle=(n, seconds)``: send the body n bytes
    at a time with a pause between writes (a slow or stuck server; the pauses end at
    once when the server stops). ``drop``: read the request, then close the
    connection without a single byte of answer (the request was sent and received).
    """

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_to: int | None = None
    content_type: str | None = None
    no_length: bool = False  # omit Content-Length and close after the body (read-until-close)
    trickle: tuple[int, float] | None = None
    drop: bool = False

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body).encode(), self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return bytes(self.body), self.content_type or "application/octet-stream"


def json_reply(obj: Any, status: int = 200, **kw) -> Reply:
    return Reply(status, obj, **kw)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body.decode() or "null")

    def form(self) -> dict[str, Any]:
        """Fields of a multipart/form-data body: str for text parts, bytes for file parts."""
        ctype = self.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ValueError(f"not a multipart body (Content-Type {ctype!r})")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + self.body
        )
        out: dict[str, Any] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                out[name] = payload
            else:
                out[name] = payload.decode("utf-8", "replace")
        return out

    def is_multipart(self) -> bool:
        return self.headers.get("content-type", "").startswith("multipart/form-data")


Handler = Callable[[Recorded, "FakeServer"], Reply]


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request (the bad days the tests play: clients that give
    up on a trickling answer) is not a fault of the fake: no traceback on stderr."""

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: list[tuple[str, str, Handler]] = []
        self._scripts: dict[tuple[str, str], list[Reply | Handler]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> "FakeServer":
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self):
                server._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._httpd = _QuietServer(("127.0.0.1", 0), _H)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ------------------------------------------------------------
    def route(self, method: str, path: str, handler: Handler | Reply) -> None:
        """The default answer for METHOD PATH (wildcards allowed); later routes win."""
        fn = handler if callable(handler) else (lambda req, srv, _r=handler: _r)
        with self._lock:
            self._routes.insert(0, (method.upper(), path, fn))

    def script(self, method: str, path: str, *replies: Reply | Handler) -> None:
        """Answers used once each, in order, before falling back to the route."""
        with self._lock:
            self._scripts.setdefault((method.upper(), path), []).extend(replies)

    def clear(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for r in self.requests
                if (method is None or r.method == method.upper())
                and (path is None or fnmatch.fnmatchcase(r.path, path))
            )

    def matching(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r for r in self.requests
                if (method is None or r.method == method.upper())
                and (path is None or fnmatch.fnmatchcase(r.path, path))
            ]

    # -- serving --------------------------------------------------------------
    def _pick(self, req: Recorded) -> Reply:
        with self._lock:
            for (m, p), queue in self._scripts.items():
                if m == req.method and fnmatch.fnmatchcase(req.path, p) and queue:
                    item = queue.pop(0)
                    break
            else:
                item = None
                for m, p, fn in self._routes:
                    if m == req.method and fnmatch.fnmatchcase(req.path, p):
                        item = fn
                        break
        if item is None:
            return Reply(404, {"error": {"message": f"no fake route for {req.method} {req.path}"}})
        if callable(item):
            return item(req, self)
        return item

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        import time

        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        req = Recorded(
            method=h.command, path=parts.path, query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in h.headers.items()}, body=body, at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(req)
        try:
            reply = self._pick(req)
        except Exception as e:  # a broken handler shows up as a 500 the test can see
            reply = Reply(500, {"error": {"message": f"fake handler crashed: {type(e).__name__}: {e}"}})
        if reply.delay and self._stopping.wait(reply.delay):
            return
        if reply.drop:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        data, ctype = reply.encoded()
        try:
            h.send_response(reply.status)
            names = {k.lower() for k in reply.headers}
            if "content-type" not in names:
                h.send_header("Content-Type", ctype)
            if "content-length" not in names and not reply.no_length:
                h.send_header("Content-Length", str(len(data)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            if reply.truncate_to is not None or reply.no_length:
                h.send_header("Connection", "close")
            h.end_headers()
            if h.command == "HEAD":
                return
            if reply.trickle is not None:
                n, pause = reply.trickle
                end = len(data) if reply.truncate_to is None else reply.truncate_to
                for i in range(0, end, max(1, n)):
                    h.wfile.write(data[i:min(end, i + max(1, n))])
                    h.wfile.flush()
                    if self._stopping.wait(pause):
                        break
                h.close_connection = True
                return
            if reply.truncate_to is not None:
                h.wfile.write(data[: reply.truncate_to])
                h.wfile.flush()
                h.close_connection = True
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            h.wfile.write(data)
            if reply.no_length:
                h.wfile.flush()
                h.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (its timeout): nothing to answer


def png_bytes(width: int = 64, height: int = 64, colour=(200, 80, 40)) -> bytes:
    """A real, decodable PNG of the given size."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["FakeServer", "Recorded", "Reply", "json_reply", "png_bytes"]
