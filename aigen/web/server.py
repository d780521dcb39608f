"""Run the gallery under waitress, a threaded WSGI server, and stop it cleanly.

`GalleryServer(app, host, port)` binds at once (port 0 picks a free port, as
the tests do), `run()` serves until Ctrl-C or `shutdown()` from another
thread, and `start_in_thread()` is the form the tests and benchmarks use.
"""

from __future__ import annotations

import errno
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


def display_host(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


class GalleryServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 8000, *, threads: int = THREADS):
        from waitress.server import create_server

        self.host = host
        self._map: dict = {}
        try:
            self.server = create_server(
                app,
                map=self._map,
                host=host,
                port=port,
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
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise BadInput(f"invalid --port {port}: address {display_host(host)}:{port} is already in use",
                               hint="choose another port with --port, or stop the other server") from None
            if e.errno in (errno.EADDRNOTAVAIL, errno.EACCES) or isinstance(e, socket.gaierror):
                raise BadInput(f"cannot listen on {display_host(host)}:{port}: {e.strerror or e}",
                               hint="use an address of this machine, e.g. --host 127.0.0.1") from None
            raise
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if hasattr(self.server, "effective_port"):
            return int(self.server.effective_port)
        return int(self.server.effective_listen[0][1])

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
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
