"""`aigen serve`: the web gallery on a threaded WSGI server (waitress)."""

from __future__ import annotations

import typer

from aigen.cli.output import console, escape, fail, print_json
from aigen.errors import AigenError, BadInput


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. On anything but loopback, "
                             "users also need their access code (`aigen user code ID`) or a magic link."),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on (0: any free port)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the gallery in the default web browser."),
    as_json: bool = typer.Option(False, "--json", help="Print the address (and whether a code is needed) as JSON once listening."),
    max_connections: int = typer.Option(1000, "--max-connections", metavar="N",
                                        help="Open connections at most; at the limit the longest-idle one is closed "
                                        "to let a new one in."),
    idle_timeout: float = typer.Option(15.0, "--idle-timeout", metavar="SECONDS",
                                       help="Close a connection idle this long, or one whose request has not fully "
                                       "arrived this long after it began."),
) -> None:
    """Serve the gallery: log in with a user_id, watch the videos, browse the images. Ctrl-C stops it.

    Several can serve one home or database (see the README, "Several gallery processes"): set the same
    AIGEN_SECRET_KEY (or AIGEN_SECRET_KEY_FILE) on each. With files in S3 (AIGEN_STORAGE_URL), media are sent
    by a 302 to a presigned URL (AIGEN_MEDIA_DELIVERY=redirect, the default; AIGEN_MEDIA_URL_TTL seconds, 900)
    or streamed through the gallery (AIGEN_MEDIA_DELIVERY=stream).
    """
    import signal
    import threading

    state = ctx.obj
    try:
        if not 0 <= port <= 65535:
            raise BadInput(f"invalid --port {port}: must be between 0 and 65535")
        from aigen.web.server import GalleryServer, Limits, check_host

        limits = Limits(max_connections=max_connections, idle_timeout=idle_timeout).checked()
        host = check_host(host)
        # Bind before the home is touched (opening the store creates the
        # database, making the app the secret): a host or port that cannot be
        # used is refused with nothing written.
        server = GalleryServer(None, host, port, limits=limits)
    except AigenError as e:
        fail(e, as_json=as_json)

    try:
        from aigen.web.app import WebSettings, make_app
        from aigen.web.links import public_base_url, record_served_url

        home = state.home
        # An existing database is opened read-only when the home cannot be
        # written (a read-only mount, a backup copy): the gallery still shows it.
        store = state.store(create=False) or state.store()
        settings = WebSettings(home=home, host=host, port=server.port, store=store)
        server.app = make_app(settings)
    except AigenError as e:
        server.shutdown()
        fail(e, as_json=as_json)
    except BaseException:
        server.shutdown()
        raise

    url = server.url
    if port != 0 and not getattr(store, "readonly", False):
        # A port the system picked is gone once this server stops: links made
        # later (notifications) must not point there, so only an address
        # chosen with --port is remembered.
        record_served_url(home, url)
    exposed = not settings.loopback
    if as_json:
        print_json({"url": url, "host": host, "port": server.port, "home": str(home.path),
                    "access_code_required": exposed, "public_url": public_base_url(url)})
    else:
        console.print(f"Gallery for [bold]{escape(str(home.path))}[/] at [bold]{url}[/]  (Ctrl-C to stop)")
        if exposed:
            console.print(
                "[yellow]Listening on an address other than loopback:[/] logging in needs a user_id [bold]and[/] "
                "its access code (make one with `aigen user code ID`), or a magic link from a notification."
            )
        else:
            console.print("Log in with a user_id. Only this machine can connect (use --host 0.0.0.0 to share it; "
                          "then an access code is required too).")

    if open_browser:
        import webbrowser

        # After the server is listening (it is: the socket is bound), from a
        # thread, so a slow browser start does not delay serving.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    def _terminate(signum, frame):
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        server.run()  # returns on Ctrl-C / SIGTERM (waitress catches both and stops its workers)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
    if not as_json:
        console.print("Gallery stopped.")
