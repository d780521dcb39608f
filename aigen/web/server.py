"""Run the gallery under waitress, a threaded WSGI server, and stop it cleanly.

`GalleryServer(app, host, port)` binds at once (port 0 picks a free port, as
the tests do), `run()` serves until Ctrl-C or `shutdown()` from another
thread, and `start_in_thread()` is the form the tests and benchmarks use.
`GalleryServer(None, host, port)` binds without an app, which is set later
(`server.app = ...`): `aigen serve` binds before it touches the home, so an
address or port it cannot use is refused with nothing written.

`Limits` keeps one client from exhausting the server: many connections, idle
or half-sent requests, huge bodies (see the README's "Limits" table).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import ipaddress
import logging
import os
import re
import socket
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass

from aigen.errors import BadInput

# Four, not waitress's usual eight: pages are short CPU work under one
# interpreter lock, so more threads only add contention (bench/fig4_gallery.py:
# p99 with 20 clients 49 ms at 8 threads, 38 ms at 4), and media files are
# handed to waitress's own I/O loop (wsgi.file_wrapper), so a long video
# download does not hold a worker thread. And they take turns (TaskTurns).
THREADS = 4
# A request that has run this long lets the next one start beside it (TaskTurns).
TASK_TURN_S = 0.005
# waitress's default listen backlog.
BACKLOG = 1024
HOST_HINT = "use an address of this machine, e.g. --host 127.0.0.1 (or 0.0.0.0 for all of them)"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server; `aigen serve` options change the first two.

    waitress's own defaults let about 100 idle connections from one client
    stop it answering anyone for two minutes (it stops accepting at its
    connection limit, and closes idle ones only after 120 s), and it spooled a
    POST of up to 1 GiB to a temporary file before refusing it.
    """

    # Open connections. At the limit, the connection idle the longest (no
    # request in progress, nothing left to send) is closed to let a new one
    # in, so idle sockets cannot lock anyone out; only when every connection
    # is busy does the server stop accepting (new ones wait in the backlog).
    max_connections: int = 1000
    # A connection with nothing to do is closed after this long, and so is one
    # whose request (headers and body) has not arrived in full this long after
    # its first byte: half-sent headers (Slowloris) do not hold a socket.
    idle_timeout: float = 15.0
    # A response the client stops reading (a paused video, a vanished phone)
    # is dropped after this long without a byte sent.
    send_timeout: float = 60.0
    # Request bodies: the largest route input is a login form of a few
    # hundred bytes. Larger ones get 413 from Content-Length alone, before a
    # byte of body is read; a chunked body is cut off at the limit. Bodies are
    # kept in memory up to the limit, so nothing is ever spooled to disk: 100
    # KiB is Bottle's MEMFILE_MAX, past which Bottle itself would copy a body
    # to a temporary file (and refuse a form with 413 anyway).
    max_body: int = 100 * 1024
    # Request line and headers (waitress: 256 KiB); 431 beyond.
    max_header: int = 64 * 1024
    # How much above max_connections busy connections may go before the server
    # stops accepting.
    busy_slack: int = 64

    def checked(self) -> "Limits":
        if not 1 <= self.max_connections <= 100_000:
            raise BadInput(f"invalid --max-connections {self.max_connections}: must be between 1 and 100000")
        if not 0.5 <= self.idle_timeout <= 86_400:
            raise BadInput(f"invalid --idle-timeout {self.idle_timeout:g}: must be between 0.5 and 86400 seconds")
        return self


# waitress logs "Task queue depth is N" whenever requests wait for a worker
# thread: a gallery page asks for its images, posters and videos at once (a
# browser opens six connections), more than the four threads, so it was said
# on every page load. A queue that short is the design working (each request
# is short); only a deep one, a sign of real overload, is still reported, at
# most once a minute.
QUEUE_WARN_DEPTH = 100
QUEUE_WARN_EVERY_S = 60.0


class QueueDepthFilter(logging.Filter):
    def __init__(self, depth: int = QUEUE_WARN_DEPTH, every_s: float = QUEUE_WARN_EVERY_S,
                 monotonic=time.monotonic):
        super().__init__()
        self.depth, self.every_s, self.monotonic = depth, every_s, monotonic
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.msg != "Task queue depth is %d":
            return True
        try:
            depth = int(record.args[0])
        except (TypeError, ValueError, IndexError):
            return True
        if depth < self.depth:
            return False
        now = self.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True


def quiet_queue_logger() -> None:
    logger = logging.getLogger("waitress.queue")
    if not any(isinstance(f, QueueDepthFilter) for f in logger.filters):
        logger.addFilter(QueueDepthFilter())


def fd_budget(wanted: int) -> int:
    """Raise the soft open-file limit towards `wanted`; return how many descriptors there are.

    Each connection is a socket, and one sending a file holds the file too.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return wanted
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    except (OSError, ValueError):
        return soft


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


def _task_dispatcher(threads: int):
    d = task_turns_class()()
    d.set_thread_count(threads)
    return d


@functools.lru_cache(maxsize=1)
def task_turns_class():
    from waitress.task import ThreadedTaskDispatcher

    class TaskTurns(ThreadedTaskDispatcher):
        """waitress's thread pool, except that its threads take turns: a request starts when none is
        running, or when every one running has run for TASK_TURN_S (it waits on something: the database,
        a slow client, a preview being made), in the order the requests arrived.

        A page is Python under one interpreter lock: four threads rendering four pages at once finish
        them no sooner than one thread would one after another, and hand the lock back and forth on
        every SQLite call on the way. bench/fig4_gallery.py's 20 clients in a closed loop on 1,000
        generations, 6 rounds, side by side: waitress's pool of 4, 515 pages/s, p99 59.7 ms; taking
        turns, 660 pages/s, p99 44.0 ms; one thread, 736 pages/s, p99 45.6 ms. One thread alone would
        let any slow request hold up every other one; taking turns keeps the other threads for those.
        """

        timed = 0  # threads waiting for a turn to pass (with a timeout)

        def __init__(self, turn_s: float = TASK_TURN_S, monotonic=time.monotonic):
            super().__init__()
            self.turn_s, self.monotonic = turn_s, monotonic
            self.running: dict[int, float] = {}  # thread number -> when its request started

        def _wait_for_turn(self, now: float) -> float | None:
            """None if a request may start now; else how long until the latest one started has had its
            turn (if no running one ends before that)."""
            if not self.running:
                return None
            latest = max(self.running.values())
            if now - latest >= self.turn_s:
                return None
            return latest + self.turn_s - now

        def add_task(self, task):
            with self.lock:
                self.queue.append(task)
                # Wake a thread if the request may start now, or if none is yet waiting for the running
                # one's turn to pass; else the running thread takes it next, or the waiting one does.
                if self.timed == 0 or self._wait_for_turn(self.monotonic()) is None:
                    self.queue_cv.notify()
                queue_size = len(self.queue)
                idle_threads = len(self.threads) - self.stop_count - self.active_count
                if queue_size > idle_threads:
                    self.queue_logger.warning("Task queue depth is %d", queue_size - idle_threads)

        def handler_thread(self, thread_no):
            while True:
                with self.lock:
                    while self.stop_count == 0:
                        if self.queue:
                            wait = self._wait_for_turn(self.monotonic())
                            if wait is None:
                                break
                            self.timed += 1
                            try:
                                self.queue_cv.wait(wait)
                            finally:
                                self.timed -= 1
                        else:
                            # Idle, as waitress counts it.
                            self.active_count -= 1
                            self.queue_cv.wait()
                            self.active_count += 1
                    if self.stop_count > 0:
                        self.active_count -= 1
                        self.stop_count -= 1
                        self.threads.discard(thread_no)
                        self.thread_exit_cv.notify()
                        break
                    task = self.queue.popleft()
                    self.running[thread_no] = self.monotonic()
                    if self.queue and self.timed == 0 and len(self.running) < len(self.threads):
                        # More wait: one thread watches for this request's turn to pass.
                        self.queue_cv.notify()
                try:
                    task.service()
                except BaseException:
                    self.logger.exception("Exception when servicing %r", task)
                finally:
                    with self.lock:
                        # This thread goes round and takes the next request itself.
                        del self.running[thread_no]

    return TaskTurns


class GalleryServer:
    def __init__(self, app=None, host: str = "127.0.0.1", port: int = 8000, *, threads: int = THREADS,
                 limits: Limits | None = None):
        from waitress.server import create_server

        limits = (limits or Limits()).checked()
        # Two descriptors a connection (socket and file sent), and some for the
        # database, the listening sockets and the worker threads' files.
        reserve = 64 + threads
        fds = fd_budget(2 * (limits.max_connections + limits.busy_slack) + reserve)
        fit = max(1, (fds - reserve) // 2 - limits.busy_slack)
        if fit < limits.max_connections:
            logging.getLogger("aigen.web").warning(
                "only %d open files allowed: serving at most %d connections (not %d)", fds, fit,
                limits.max_connections)
            limits = dataclasses.replace(limits, max_connections=fit)
        self.limits = limits
        quiet_queue_logger()
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
                _dispatcher=_task_dispatcher(threads),
                ident="aigen",
                # Keep X-Forwarded-* visible to the app: it never trusts them
                # for the client's address, but their presence tells it a
                # proxy sits in front, so a user_id alone is no longer enough.
                clear_untrusted_proxy_headers=False,
                # See Limits. channel_timeout is waitress's own idle rule,
                # replaced below by _maintenance (run every cleanup_interval).
                connection_limit=limits.max_connections + limits.busy_slack,
                channel_timeout=max(1, int(limits.send_timeout)),
                cleanup_interval=1,
                # waitress refuses Content-Length >= max_request_body_size.
                max_request_body_size=limits.max_body + 1,
                # Above the largest body it accepts, plus one read: no body is
                # ever written to a temporary file.
                inbuf_overflow=limits.max_body + 2 * 65536,
                max_request_header_size=limits.max_header,
                # poll(), not select(): select() cannot watch descriptors past 1023.
                asyncore_use_poll=True,
                backlog=BACKLOG,
            )
            self._install_limits()
        except (ValueError, OSError) as e:
            for sock in self._sockets:
                sock.close()
            raise BadInput(f"cannot listen on {display_host(host)}:{port}: {e}", hint=HOST_HINT) from None
        except BaseException:
            for sock in self._sockets:
                sock.close()
            raise
        self._thread: threading.Thread | None = None

    # -- connection limits (all of it runs in waitress's I/O thread) -----------------
    def _listeners(self) -> list:
        from waitress.server import BaseWSGIServer

        return [d for d in list(self._map.values()) if isinstance(d, BaseWSGIServer)]

    def _channels(self) -> list:
        from waitress.channel import HTTPChannel

        return [d for d in list(self._map.values()) if isinstance(d, HTTPChannel)]

    def _install_limits(self) -> None:
        for listener in self._listeners():
            listener.channel_class = _channel_class()
            listener.maintenance = self._maintenance
            accept = listener.handle_accept

            def handle_accept(accept=accept):
                self._make_room()
                accept()

            listener.handle_accept = handle_accept

    def _maintenance(self, now: float) -> None:
        """Close idle connections, stalled sends and requests that arrive too slowly (replaces waitress's)."""
        limits = self.limits
        for ch in self._channels():
            if ch.requests or ch.will_close:
                continue  # a worker thread has it (waitress's rule too), or it is closing anyway
            if ch.request is not None:
                started = getattr(ch, "request_started", 0.0) or ch.creation_time
                if now - started > limits.idle_timeout:
                    ch.will_close = True
            elif ch.total_outbufs_len:
                if now - ch.last_activity > limits.send_timeout:
                    ch.will_close = True
            elif now - ch.last_activity > limits.idle_timeout:
                ch.will_close = True

    def _make_room(self) -> None:
        """At max_connections, close the connections idle the longest so a new one can come in.

        Runs in the I/O thread, before accept(); a channel with a request in
        a worker thread is never closed here.
        """
        if len(self._map) <= self.limits.max_connections:
            return  # the map holds the channels and a few more (listeners, trigger): cheap and sure
        channels = self._channels()
        excess = len(channels) - self.limits.max_connections + 1
        if excess <= 0:
            return
        # Idle ones first, oldest first; then responses the client has not read
        # from for idle_timeout (it is not watching that video any more).
        stalled = time.time() - self.limits.idle_timeout
        idle = [ch for ch in channels if not ch.requests and not ch.will_close
                and (not ch.total_outbufs_len or ch.last_activity < stalled)]
        idle.sort(key=lambda ch: (bool(ch.total_outbufs_len), ch.last_activity))
        for ch in idle[:excess]:
            ch.will_close = True
            ch.handle_close()

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


# os.sendfile where its semantics are known (Linux: any file to a socket, with an explicit offset).
SENDFILE = hasattr(os, "sendfile") and sys.platform.startswith("linux")
# At most this much per sendfile call, so one big file does not keep the sending thread in one
# system call for long (the socket is non-blocking: a call sends what the socket buffer takes).
SENDFILE_MAX = 8 * MiB
# How long a worker thread may wait on a client's socket while it sends a file (Channel._sendfile); a
# client slower than that is left to the I/O loop.
WORKER_SEND_S = 0.010


def _sendfile_source(outbuf) -> int | None:
    """The descriptor of a regular file behind a waitress file-wrapper buffer, else None (sent as waitress does).

    Worked out once per buffer, and the file's position then kept on the
    buffer itself: `_aigen_sendfile` is False (not sendfile's), or the next
    offset to send from."""
    from waitress.buffers import ReadOnlyFileBasedBuffer

    pos = getattr(outbuf, "_aigen_sendfile", None)
    if pos is False or type(outbuf) is not ReadOnlyFileBasedBuffer:
        return None
    try:
        fd = outbuf.file.fileno()
        if pos is None:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError("not a regular file")
            outbuf._aigen_sendfile = outbuf.file.tell()
    except (AttributeError, OSError, ValueError):
        outbuf._aigen_sendfile = False
        return None
    return fd


# A connection from this machine gets this congestion control instead of BBR. Loopback has no network to
# share and no congestion to probe for, and BBR (the default of some kernels, this test machine's among
# them) paces what it sends from a model of the path's bandwidth; a connection that has just carried
# small answers (pages, previews, 64 KiB ranges) then paces a 1 MiB sendfile out slowly. Measured with
# one client on one connection, 1 MiB ranges (medians of 960 requests, two runs each): under BBR 612-850
# us a request before a run of 64 KiB ones and 910-1,074 us after; under reno 642-734 us before and
# 649-675 us after. http.server, which writes 64 KiB at a time, was not slowed by the small ones (why
# BBR treats the two differently was not traced further). Any process may choose reno unless the
# administrator removed it; a connection from another machine keeps the system's choice.
LOOPBACK_CONGESTION = b"reno"


def loopback_congestion(sock: socket.socket, addr) -> bool:
    """Give a connection from a loopback address LOOPBACK_CONGESTION if it was given BBR; whether it was.

    Linux only (TCP_CONGESTION); anything refused leaves the connection as it was."""
    opt = getattr(socket, "TCP_CONGESTION", None)
    if opt is None or not isinstance(addr, tuple) or not addr or not isinstance(addr[0], str):
        return False
    try:
        ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
            return False
        if sock.getsockopt(socket.IPPROTO_TCP, opt, 16).rstrip(b"\0") != b"bbr":
            return False
        sock.setsockopt(socket.IPPROTO_TCP, opt, LOOPBACK_CONGESTION)
    except (OSError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def _channel_class():
    from waitress import wasyncore
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser, ParsingError

    class Parser(HTTPRequestParser):
        def parse_header(self, header_plus):
            try:
                return super().parse_header(header_plus)
            except ParsingError:
                raise
            except ValueError:
                # A Content-Length of thousands of digits passes waitress's
                # digits-only check and then int() refuses it: uncaught, that
                # dropped the connection with an error in the log. A 400.
                raise ParsingError("a header value is invalid") from None

    class Channel(HTTPChannel):
        """waitress's channel, noting when the request now arriving began (for Limits.idle_timeout)."""

        parser_class = Parser
        request_started = 0.0

        def __init__(self, server, sock, addr, adj, map=None):
            loopback_congestion(sock, addr)
            super().__init__(server, sock, addr, adj, map)

        def received(self, data):
            before = self.request
            result = super().received(data)
            if self.request is not None and self.request is not before:
                self.request_started = time.time()
            return result

        def _flush_some(self, do_close=True):
            """waitress's _flush_some, except that a file handed over as wsgi.file_wrapper (a media file) is
            sent with os.sendfile: from the page cache to the socket in the kernel, without reading every
            block into a bytes object first (bench/fig4_gallery.py). Everything else is sent as waitress does."""
            if not do_close:
                # A worker thread sends (write_soon): the I/O loop leaves this socket alone meanwhile.
                self._worker_sending = True
                try:
                    return self._flush_loop(do_close)
                finally:
                    self._worker_sending = False
            return self._flush_loop(do_close)

        _worker_sending = False

        def writable(self):
            # While a worker thread sends (and waits for the socket, _sendfile), the I/O loop must
            # not also wait for this socket to be writable: it would wake with it, find the output locked
            # by the worker and go round again, spinning. The worker wakes it when it stops.
            return not self._worker_sending and super().writable()

        def _flush_loop(self, do_close):
            sent = 0
            dobreak = False
            while True:
                outbuf = self.outbufs[0]
                outbuflen = outbuf.__len__()
                fd = _sendfile_source(outbuf) if SENDFILE and outbuflen else None
                while outbuflen > 0:
                    if fd is not None:
                        num_sent = self._sendfile(fd, outbuf, outbuflen, do_close)
                        if num_sent is None:  # sendfile cannot send this file: waitress's own way
                            fd = None
                            continue
                    else:
                        chunk = outbuf.get(self.sendbuf_len)
                        num_sent = self.send(chunk, do_close=do_close)
                        if num_sent:
                            outbuf.skip(num_sent, True)
                    if num_sent:
                        outbuflen -= num_sent
                        sent += num_sent
                        self.total_outbufs_len -= num_sent
                    else:
                        dobreak = True  # the socket takes no more for now
                        break
                else:
                    if len(self.outbufs) > 1:
                        toclose = self.outbufs.pop(0)
                        try:
                            toclose.close()
                        except Exception:
                            self.logger.exception("Unexpected error when closing an outbuf")
                    else:
                        dobreak = True  # caught up
                if dobreak:
                    break
            if sent:
                self.last_activity = time.time()
                return True
            return False

        def _sendfile(self, fd: int, outbuf, remaining: int, do_close: bool) -> int | None:
            """Send from the file at its recorded offset; the bytes sent (0: not now), None: not with sendfile.

            From a worker thread (write_soon, `do_close` False) the socket is made blocking for the call,
            with a send timeout, up to WORKER_SEND_S for the whole response: a client that reads at once
            gets its range in one system call from this thread, where the I/O loop would take a wake-up
            and a turn of its poll per socket buffer (bench/fig4_gallery.py: with a bare WSGI app, fixed
            1 MiB Range requests went from 1,278 to 1,670 MiB/s). A client slower than that is left to the
            I/O loop, as before."""
            offset = outbuf._aigen_sendfile
            count = min(remaining, SENDFILE_MAX)
            try:
                if do_close:
                    n = os.sendfile(self.socket.fileno(), fd, offset, count)
                else:
                    n = self._worker_sendfile(fd, offset, count)
            except BlockingIOError:
                return 0
            except OSError as e:
                if e.errno in wasyncore._DISCONNECTED:
                    if do_close:
                        self.handle_close()
                    return 0
                if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK):
                    # This file system or socket does not do it: read and send, from where sendfile stopped.
                    outbuf.file.seek(offset)
                    outbuf._aigen_sendfile = False
                    return None
                raise
            if n == 0:
                # The file ended before the Content-Length promised (it was cut short since it was
                # opened): the response cannot be completed, so the connection is closed.
                raise OSError(errno.EIO, "the file being sent is shorter than announced")
            outbuf._aigen_sendfile = offset + n
            outbuf.remain -= n
            return n

        _send_deadline = None

        def _worker_sendfile(self, fd: int, offset: int, count: int) -> int:
            """os.sendfile on the socket made blocking, with SO_SNDTIMEO set to what is left of this
            response's WORKER_SEND_S (its first buffer marks the response); non-blocking again after.
            Raises BlockingIOError when nothing could be sent in that time."""
            now = time.monotonic()
            if self._send_deadline is None or self._send_deadline[0] is not self.outbufs[0]:
                self._send_deadline = (self.outbufs[0], now + WORKER_SEND_S)
            left = self._send_deadline[1] - now
            sock = self.socket.fileno()
            if left <= 0:
                return os.sendfile(sock, fd, offset, count)
            seconds, micros = divmod(max(1000, int(left * 1e6)), 1_000_000)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
            os.set_blocking(sock, True)
            try:
                return os.sendfile(sock, fd, offset, count)
            finally:
                os.set_blocking(sock, False)

    return Channel
