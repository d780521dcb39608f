"""Run the gallery under waitress, a threaded WSGI server, and stop it cleanly.

`GalleryServer(app, host, port)` binds at once (port 0 picks a free port, as
the tests do), `run()` serves until Ctrl-C or `shutdown()` from another
thread, and `start_in_thread()` is the form the tests and benchmarks use.
`GalleryServer(None, host, port)` binds without an app, which is set later
(`server.app = ...`): `aigen serve` binds before it touches the home, so an
address or port it cannot use is refused with nothing written.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import sys
import threading

from aigen.errors import BadInput

# Four, not waitress's usual eight: pages are short CPU work under one
# interpreter lock, so more threads only add contention (bench/fig4_gallery.py:
# p99 with 20 clients 49 ms at 8 threads, 38 ms at 4), and media files are
# handed to waitress's own I/O loop (wsgi.file_wrapper), so a long video
# download does not hold a worker thread.
THREADS = 4
# waitress's default listen backlog.
BACKLOG = 1024
HOST_HINT = "use an address of this machine, e.g. --host 127.0.0.1 (or 0.0.0.0 for all of them)"


def display_host(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def check_host(host: str) -> str:
    """The host to listen on, stripped; BadInput naming the value when it cannot be one."""
    raw = host
    host = host.strip()
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise BadInput(f"invalid --host {raw!r}: give an IP address or a host name, e.g. 127.0.0.1")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare.count(":") == 1:
        # One colon is never an IPv6 address: "0.0.0.0:8000" or "name:8000".
        raise BadInput(f"invalid --host {raw!r}: give the address alone and the port with --port",
                       hint=f"e.g. --host {bare.split(':')[0] or '127.0.0.1'} --port {bare.split(':')[1] or 8000}")
    if re.fullmatch(r"[0-9.]+", bare):
        # Looked up as a host name otherwise (so "999.1.1.1" would reach DNS);
        # and the shorthand forms inet_aton takes ("127.1") are not accepted.
        try:
            ipaddress.IPv4Address(bare)
        except ValueError:
            raise BadInput(f"invalid --host {raw!r}: not an IPv4 address (four numbers 0-255 with dots)",
                           hint=HOST_HINT) from None
    _addresses(raw, bare, 0)
    return host


def _addresses(raw: str, host: str, port: int) -> list[tuple]:
    """getaddrinfo as waitress does it (passive TCP, IPv4 and IPv6), duplicates dropped."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                   socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError):
        raise BadInput(f"invalid --host {raw!r}: not an address of this machine and cannot be resolved",
                       hint=HOST_HINT) from None
    out, seen = [], set()
    for family, socktype, proto, _, sockaddr in infos:
        key = (sockaddr[0].split("%", 1)[0], sockaddr[1])
        if key not in seen:
            seen.add(key)
            out.append((family, socktype, proto, sockaddr))
    return out


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for host:port; BadInput saying why when they cannot be had.

    Done here rather than by waitress, so that a refusal comes before any
    server thread is started, and is a message rather than a traceback.
    """
    bare = host.strip("[]")
    sockets: list[socket.socket] = []
    try:
        for family, socktype, proto, sockaddr in _addresses(host, bare, port):
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            if sys.platform != "win32":
                # As waitress does: a restarted server may reuse the port at once.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and sockets[:-1]:
                # A name with several addresses (localhost: 127.0.0.1 and ::1)
                # gets one free port for all of them, not one each.
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
    except OSError as e:
        for sock in sockets:
            sock.close()
        where = f"{display_host(host)}:{port}"
        if e.errno == errno.EADDRINUSE:
            raise BadInput(f"invalid --port {port}: address {where} is already in use",
                           hint="choose another port with --port, or stop the other server") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise BadInput(f"invalid --host {host!r}: not an address of this machine ({e.strerror})",
                           hint=HOST_HINT) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            hint = ("ports below 1024 need administrator rights: choose --port 8000 or above" if 0 < port < 1024
                    else HOST_HINT)
            raise BadInput(f"cannot listen on {where}: {e.strerror or e}", hint=hint) from None
        raise BadInput(f"cannot listen on {where}: {e.strerror or e}", hint=HOST_HINT) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise BadInput(f"invalid --host {host!r}: it resolves to no address to listen on", hint=HOST_HINT)
    return sockets


class GalleryServer:
    def __init__(self, app=None, host: str = "127.0.0.1", port: int = 8000, *, threads: int = THREADS):
        from waitress.server import create_server

        self.host = host
        # May be None at first, then set once the home is open: until then
        # nothing is served (run() is not called before it is set).
        self.app = app
        self._map: dict = {}
        self._sockets = listen_sockets(host, port)
        try:
            self.server = create_server(
                self._call_app,
                map=self._map,
                sockets=self._sockets,
                threads=threads,
                ident="aigen",
                # Keep X-Forwarded-* visible to the app: it never trusts them
                # for the client's address, but their presence tells it a
                # proxy sits in front, so a user_id alone is no longer enough.
                clear_untrusted_proxy_headers=False,
                # Video files are streamed in large blocks; keep slow clients
                # from pinning threads forever.
                channel_timeout=60,
            )
        except (ValueError, OSError) as e:
            for sock in self._sockets:
                sock.close()
            raise BadInput(f"cannot listen on {display_host(host)}:{port}: {e}", hint=HOST_HINT) from None
        except BaseException:
            for sock in self._sockets:
                sock.close()
            raise
        self._thread: threading.Thread | None = None

    def _call_app(self, environ, start_response):
        app = self.app
        if app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                                       ("Retry-After", "1")])
            return [b"The gallery is starting; try again in a moment.\n"]
        return app(environ, start_response)

    @property
    def port(self) -> int:
        if hasattr(self.server, "effective_port"):
            return int(self.server.effective_port)
        return int(self.server.effective_listen[0][1])

    @property
    def url(self) -> str:
        host = self.host
        # "*" too: getaddrinfo (and so waitress) reads it as every address.
        if host.strip("[]") in ("0.0.0.0", "::", "", "*"):
            host = socket.gethostname() or "localhost"
        return f"http://{display_host(host)}:{self.port}"

    def run(self) -> None:
        """Serve until Ctrl-C (or SIGTERM turned into SystemExit) or shutdown()."""
        # The I/O loop thread that sends files must get the interpreter lock
        # back quickly from the worker threads rendering pages; the default 5 ms
        # switch interval showed up as per-request delay on Range requests.
        sys.setswitchinterval(0.0005)
        self.server.run()

    def shutdown(self) -> None:
        """Stop accepting, close every connection and stop the worker threads.

        The sockets are closed from inside the server's own loop (through its
        trigger), never under its feet from another thread; the loop then
        ends because it has nothing left to watch.
        """
        from waitress import wasyncore

        running = self._thread is not None and self._thread.is_alive()
        if running and self._thread is not threading.current_thread():
            trigger = next((d for d in list(self._map.values()) if hasattr(d, "pull_trigger")), None)
            if trigger is not None:
                trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            self._thread.join(timeout=10)
        wasyncore.close_all(self._map)
        self.server.task_dispatcher.shutdown(timeout=5)

    def start_in_thread(self) -> "GalleryServer":
        self._thread = threading.Thread(target=self.run, name="aigen-gallery", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> "GalleryServer":
        return self.start_in_thread()

    def __exit__(self, *exc) -> None:
        self.shutdown()
