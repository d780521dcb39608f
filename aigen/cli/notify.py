"""`aigen notify-daemon`, and the notification part of `aigen generate`.

Nothing heavy at import time: `aigen --help` imports this module.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Optional

import typer

from aigen.cli.output import console, err_console, escape, fail, local_time, print_json
from aigen.errors import AigenError, BadInput


# -- shared by generate and the daemon ------------------------------------------------
def print_notice(out, notice, context: str) -> None:
    """The console channel: a Rich panel, then the link on a line of its own."""
    from rich.panel import Panel

    colour = "green" if notice.ok else "red"
    body = "\n".join(escape(line) for line in notice.lines())
    out.print(Panel(body, title=f"[bold {colour}]{escape(notice.title)}[/]", title_align="left",
                    border_style=colour, expand=False))
    verb = "Open it" if notice.ok else "See what was made"
    out.print(f"{verb} in the gallery (the link signs you in; valid for {notice.link_valid}):")
    # soft_wrap: a link broken over two lines cannot be clicked or copied.
    out.print(escape(notice.link), soft_wrap=True, highlight=False)
    if context != "console":
        out.print(f"[dim](Shown here because {escape(context)}.)[/]")


def aigen_command(home, *args: str) -> str:
    """A command line the user can paste: with --home when the home is not the default one."""
    base = ["aigen"]
    if home.source != "default":
        base += ["--home", str(home.path)]
    return " ".join(shlex.quote(a) for a in base + list(args))


def _cluster_store(store) -> bool:
    return store is not None and getattr(store, "backend", "sqlite") == "postgresql"


def daemon_status_line(home, store=None) -> str:
    from aigen.notify.daemon import running_daemons

    if _cluster_store(store):
        # Daemons may run on any machine of the cluster: they register in the database, not in this home.
        from aigen.notify.daemon import live_daemons
        from aigen.store.core import utcnow

        seen = live_daemons(store, utcnow())
        if seen:
            where = ", ".join(f"{d['host']} (pid {d['pid']})" for d in seen[:3]) + (", ..." if len(seen) > 3 else "")
            return f"A notify daemon is running on {where}: it will deliver it."
        return (f"No notify daemon is running on any machine of the cluster: start one with "
                f"`{aigen_command(home, 'notify-daemon')}` (see the README); until then it waits, and is "
                "delivered late when one starts.")
    pids = running_daemons(home)
    if pids is None:
        return "Could not tell whether a notify daemon is running (this platform has no file locks)."
    if pids:
        return f"A notify daemon is running (pid {', '.join(map(str, pids))}): it will deliver it."
    return (f"No notify daemon is running: start one with `{aigen_command(home, 'notify-daemon')}` "
            "(see the README); until then it waits, and is delivered late when one starts.")


def resolve_notify_options(state, user: str, notify_via: Optional[str],
                           email: Optional[str]) -> tuple[list, Optional[str]]:
    """Check --notify-via and --email before anything is written; return (channels, address).

    The checks live in aigen.notify.options (the gallery's form uses them too); the store is opened
    only when an address must be looked up, as before."""
    from aigen.notify.options import resolve_notify_options as resolve

    class _LazyStore:
        def get_user(self, user_id):
            store = state.store(create=False)
            return store.get_user(user_id) if store is not None else None

    return resolve(state.home.path, _LazyStore(), user, notify_via, email)


def _channels_text(channels: list[str]) -> str:
    return ", ".join(channels) if channels else "none"


def describe_schedule(home, gen: dict, store=None) -> dict:
    """For a detached run: when the notification will come, and whether a daemon will bring it."""
    from aigen.notify.daemon import running_daemons
    from aigen.notify.queue import channels_of

    channels = channels_of(gen)
    info = {
        "channels": channels,
        "notify_at": gen.get("notify_at"),
        "email": gen.get("notify_email"),
        "daemon_pids": running_daemons(home),
    }
    if _cluster_store(store):
        from aigen.notify.daemon import live_daemons
        from aigen.store.core import utcnow

        info["daemons"] = [{"host": d["host"], "pid": d["pid"], "seen_at": d["seen_at"]}
                           for d in live_daemons(store, utcnow())]
    return info


def print_schedule(home, info: dict, store=None) -> None:
    if not info["channels"]:
        return
    when = f"at {local_time(info['notify_at'])} or on completion if later" if info["notify_at"] else "on completion"
    console.print(f"[dim]Notification by {escape(_channels_text(info['channels']))} {when}. "
                  f"{escape(daemon_status_line(home, store))}[/]")


def deliver_after_run(state, store, gen: dict, *, as_json: bool) -> dict:
    """Run by `aigen generate` once its generation is final: deliver now if due, else say when."""
    from datetime import datetime, timezone

    from aigen.notify import queue
    from aigen.notify.daemon import Notifier, running_daemons
    from aigen.notify.when import describe_when

    home = state.home

    def sink(notice, context):
        if not as_json:
            print_notice(console, notice, context)

    notifier = Notifier(store, home, console=sink, owner=queue.make_owner("generate"))
    now = datetime.now(timezone.utc)
    problem = None
    try:
        deliveries = notifier.run_once(now, generation_id=gen["id"])
    except Exception as exc:  # the content is made; a notifier problem must not hide that
        problem = f"could not deliver the notification now: {type(exc).__name__}: {exc}"
        deliveries = []
        if not as_json:
            err_console.print(f"[yellow]{escape(problem[0].upper() + problem[1:])}[/]")
    rows = queue.rows_for(store, gen["id"])
    fresh = store.get_generation(gen["id"])
    result = {
        "status": fresh.get("notify_status"),
        "channels": [
            {k: r[k] for k in ("channel", "status", "delivered_via", "recipient", "due_at", "sent_at",
                               "next_attempt_at", "note", "error") if r.get(k) is not None}
            for r in rows
        ],
    }
    if rows:
        result["due_at"] = min(r["due_at"] for r in rows)
    if problem:
        result["error"] = problem
    for d in deliveries:
        if d.message:
            result["message"] = d.message
    waiting = [r for r in rows if r["status"] in ("pending", "retrying")]
    if waiting:
        pids = running_daemons(home)
        result["daemon_pids"] = pids
    if as_json:
        return result
    for r in rows:
        if r["status"] == "sent":
            if r["channel"] == "email":
                console.print(f"Notification emailed to {escape(r['recipient'] or '')}.")
            elif r["channel"] == "desktop" and r["delivered_via"] == "desktop":
                console.print("Desktop notification sent.")
        elif r["status"] == "failed":
            console.print(f"[red]The {r['channel']} notification failed:[/] {escape(r['error'] or '')}")
    pending = [r for r in waiting if r["status"] == "pending"]
    if pending:
        due = queue.parse_utc(pending[0]["due_at"])
        chans = _channels_text([r["channel"] for r in pending])
        console.print(f"Notification by {escape(chans)} due {describe_when(due, now)}. "
                      f"{escape(daemon_status_line(home, store))}")
    for r in waiting:
        if r["status"] == "retrying":
            console.print(
                f"[yellow]The {r['channel']} notification is not delivered yet:[/] {escape(r['error'] or '')}. "
                f"Next attempt at {local_time(r['next_attempt_at'])}. {escape(daemon_status_line(home, store))}"
            )
    return result


# -- the daemon command ----------------------------------------------------------------
def notify_daemon(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Deliver what is due now, then exit (for cron)."),
    max_sleep: float = typer.Option(
        30.0, "--max-sleep", help="Check for new requests at least this often, in seconds (0.1-3600).",
        metavar="SECONDS",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per delivery (with --once: one summary)."),
) -> None:
    """Deliver due notifications: at their time, or as soon as the content is ready if later.

    Each notification is claimed in the database before it is sent, so several daemons
    (or a daemon and `aigen generate`) never send one twice; one that came due while no
    daemon ran is delivered, marked late, when one starts. SIGTERM or Ctrl-C stops it
    after the current send. Exit codes: 0, or 1 when --once saw a notification fail.

    With the cluster store (AIGEN_DATABASE_URL) daemons may run on several machines:
    each claim holds a lease (AIGEN_NOTIFY_LEASE_S, default 600 s); the rows of a
    daemon that died are sent by another one once its lease has run out. Claims name
    the host (AIGEN_HOST_NAME, default the machine's host name).
    """
    import logging
    import os
    import signal
    import threading

    from aigen.notify.daemon import DaemonMarker, Notifier
    from aigen.notify.mail import load_smtp_settings
    from aigen.notify.queue import lease_from_env
    from aigen.store.core import utcnow

    state = ctx.obj
    try:
        if not 0.1 <= max_sleep <= 3600:
            raise BadInput(f"invalid --max-sleep {max_sleep:g}: must be between 0.1 and 3600 seconds")
        home = state.home
        lease = lease_from_env()
        store = state.store()
        smtp = load_smtp_settings(home=home.path)
    except AigenError as e:
        fail(e, as_json=as_json)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("aigen")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def sink(notice, context):
        if not as_json:
            print_notice(console, notice, context)

    notifier = Notifier(store, home, console=sink, lease=lease)
    log = logging.getLogger("aigen.notify")
    try:
        if once:
            deliveries = notifier.run_once(utcnow(), clock=utcnow)
            nxt = notifier.next_wake(utcnow())
            failed = any(c.status == "failed" for d in deliveries for c in d.channels)
            if as_json:
                from aigen.notify.queue import pending_count

                # Deliveries, not attempts: what is to be retried or failed is listed apart.
                print_json({
                    "delivered": [d.to_dict() for d in deliveries if d.delivered],
                    "not_delivered": [d.to_dict() for d in deliveries if not d.delivered],
                    "waiting": pending_count(store),
                    "next_due_at": nxt.isoformat() if nxt else None,
                })
            else:
                delivered = [d for d in deliveries if d.delivered]
                late = sum(1 for d in delivered if d.late)
                msg = f"Delivered {len(delivered)} notification(s)"
                msg += f", {late} late" if late else ""
                retrying = sum(1 for d in deliveries if not d.delivered and d.outcome == "retrying")
                failed_n = sum(1 for d in deliveries if not d.delivered and d.outcome != "retrying")
                msg += f", {retrying} to be retried" if retrying else ""
                msg += f", {failed_n} failed" if failed_n else ""
                msg += f"; next due at {local_time(nxt.isoformat())}." if nxt else "; nothing else is scheduled."
                console.print(msg)
            raise typer.Exit(1 if failed else 0)

        stop = threading.Event()
        interrupts = []

        def on_signal(signum, frame):
            if signum == signal.SIGINT and interrupts:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, even mid-send
            interrupts.append(signum)
            log.info("stopping (%s): finishing the current send", signal.Signals(signum).name)
            # Not stop.set() here: the handler runs in the main thread, which may be
            # holding the event's own (non-reentrant) lock inside stop.wait(); setting
            # it from another thread cannot deadlock.
            threading.Thread(target=stop.set, name="aigen-stop", daemon=True).start()

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread (embedded use): rely on the caller's stop
                pass
        try:
            with DaemonMarker(home):
                desktop = notifier.desktop_support()
                log.info(
                    "notify daemon started: %s, home %s; desktop: %s; email: %s; checking at least every %g s; "
                    "claims held for %g s",
                    notifier.owner, home.path,
                    f"yes ({desktop.reason})" if desktop.available else f"no ({desktop.reason}), using the console",
                    smtp.describe() if smtp else "no SMTP server configured", max_sleep,
                    lease.total_seconds(),
                )

                def on_delivery(d):
                    if as_json:
                        sys.stdout.write(json.dumps(d.to_dict(), default=str) + "\n")
                        sys.stdout.flush()

                count = notifier.run(stop, max_sleep=max_sleep, on_delivery=on_delivery)
            log.info("notify daemon stopped after delivering %d notification(s)", count)
        except KeyboardInterrupt:
            log.warning("interrupted during a send: a notification being sent stays claimed until its lease "
                        "runs out, then is sent again")
            raise typer.Exit(130)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
