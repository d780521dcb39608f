"""`aigen cluster ...` (migrate, status) and the cluster commands `aigen worker` and `aigen cancel`, plus the
cluster side of `generate` and `retry` (enqueue, then follow progress from the store).

Nothing heavy is imported here (`aigen --help` imports this module): the commands import aigen.cluster (and so
dbos) only when run. `cluster migrate` lives in cluster_migrate.py.
"""

from __future__ import annotations

import time
from typing import Optional

import typer

from aigen.cli.output import console, err_console, escape, fail, local_time, print_json
from aigen.errors import AigenError, NotFound

from aigen.cli import cluster_migrate as _migrate

app = typer.Typer(
    help="Cluster mode: one aigen for a team, its store in PostgreSQL (AIGEN_DATABASE_URL) and its files in "
         "object storage (AIGEN_STORAGE_URL). See the README, \"Running on several machines\".",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

app.command("migrate")(_migrate.migrate)


def cluster_url(state, *, required: bool = True) -> str | None:
    from aigen.cluster import ClusterUnavailable, database_url

    url = database_url(home=state.home.path)
    if url is None and required:
        raise ClusterUnavailable(
            "not in cluster mode: no cluster database is configured",
            hint="set AIGEN_DATABASE_URL=postgresql://... (or [cluster] database_url in config.toml)")
    return url


def _client(url: str):
    from aigen.cluster import require_dbos

    require_dbos()
    from aigen.cluster.engine import Client

    return Client(url)


def _wrap_db(fn):
    """Run fn(); a fault of the cluster database becomes one clear line."""
    from aigen.cluster import describe_db_error, is_db_error

    def run(url, *a, **kw):
        try:
            return fn(url, *a, **kw)
        except AigenError:
            raise
        except Exception as e:
            if is_db_error(e):
                raise describe_db_error(e, url) from None
            raise
    return run


# -- aigen worker -------------------------------------------------------------
def worker(
    ctx: typer.Context,
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", help="Most jobs this process runs at once on each provider queue (default: as many "
        "as the provider's global cap allows). The caps themselves hold across every worker."),
    providers: Optional[str] = typer.Option(
        None, "--providers", help="Serve only these providers (comma-separated, e.g. local,runway; default: all). "
        "Every worker also runs the generations' own workflows.", metavar="A,B"),
    executor_id: Optional[str] = typer.Option(
        None, "--id", help="This worker's stable executor id (default: host-pid-random). Restarting a worker with "
        "the same id resumes its own unfinished jobs at once.", metavar="ID"),
) -> None:
    """Take asset jobs from the cluster's queues (cluster mode: AIGEN_DATABASE_URL).

    Run one on every machine that should make assets. Provider caps
    (AIGEN_<PROVIDER>_CONCURRENCY) and rates (AIGEN_<PROVIDER>_RATE, calls per
    minute) are global: the queues hold them however many workers run. A worker
    whose heartbeat stops for AIGEN_WORKER_DEAD_AFTER seconds (default 60) has
    its jobs taken over by another. SIGTERM drains: no new jobs, running ones
    finish (or are handed back after AIGEN_WORKER_DRAIN_TIMEOUT, default 30 s),
    exit 0.
    """
    import os

    from aigen.cluster import require_dbos

    state = ctx.obj
    try:
        url = cluster_url(state)
        require_dbos()
        from aigen.cluster.worker import Worker, settings_from

        env = dict(os.environ)
        settings = settings_from(state.home, env, executor_id=executor_id, providers=providers,
                                 concurrency=concurrency)
        w = _wrap_db(lambda u: Worker(state.home, u, settings, env=env))(url)
        code = _wrap_db(lambda u: w.run())(url)
    except AigenError as e:
        fail(e)
    raise typer.Exit(code)


# -- aigen cancel ---------------------------------------------------------------
def cancel(
    ctx: typer.Context,
    generation_id: str = typer.Argument(..., help="The generation id (or a unique prefix of 4+ characters)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Stop a queued or running generation everywhere (cluster mode).

    Its jobs are taken off the queues; assets not made yet are failed with
    "cancelled"; provider calls already running stop at their next check (an
    async job's id stays saved). What was made is kept; `aigen retry ID` makes
    the rest later.
    """
    state = ctx.obj
    try:
        url = cluster_url(state)
        store = state.store(create=False)
        if store is None:
            raise NotFound(f"unknown generation id {generation_id!r}: there are no generations yet")
        gen_id = store.resolve_generation_id(generation_id)
        result = _wrap_db(_cancel)(url, store, gen_id)
    except AigenError as e:
        fail(e, as_json=as_json)
    if as_json:
        print_json(result)
    elif result["already_final"]:
        console.print(f"Generation {gen_id} is already {result['status']}: nothing to cancel.")
    else:
        console.print(f"Cancelled generation [bold]{gen_id}[/]: {result['cancelled_assets']} asset(s) not made "
                      f"were cancelled, {result['running']} running call(s) stop at their next check. "
                      f"Status: {result['status']}.")
    raise typer.Exit(0)


def _cancel(url, store, gen_id: str) -> dict:
    from aigen.store.core import iso, utcnow

    gen = store.get_generation(gen_id)
    assets = store.assets(gen_id)
    if gen["status"] != "Processing" and all(a["status"] in ("done", "failed") for a in assets):
        return {"id": gen_id, "status": gen["status"], "already_final": True, "cancelled_assets": 0,
                "running": 0, "workflows": 0}
    client = _client(url)
    try:
        # First off the queues (nothing new starts), then the flag the running calls check.
        n_wf = client.cancel_generation(gen_id)
    finally:
        client.close()
    store.set_generation_fields(gen_id, cancel_requested_at=iso(utcnow()))
    from aigen.cluster.worker import CANCELLED_MSG

    cancelled = 0
    for a in store.assets(gen_id):
        if a["status"] == "queued":
            store.fail_asset(a["id"], CANCELLED_MSG, code="cancelled")
            cancelled += 1
    running = sum(1 for a in store.assets(gen_id) if a["status"] == "running")
    status = store.finalize_generation(gen_id)
    store.log_event("generation_cancelled", generation_id=gen_id, user_id=gen["user_id"],
                    detail=f"{n_wf} workflow(s) cancelled, {cancelled} asset(s) not made, {running} running")
    return {"id": gen_id, "status": status, "already_final": False, "cancelled_assets": cancelled,
            "running": running, "workflows": n_wf}


# -- aigen cluster status -------------------------------------------------------------
@app.command("status")
def cluster_status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Workers (host, pid, last heartbeat, state, jobs), queue depth per provider, the caps in force."""
    state = ctx.obj
    try:
        url = cluster_url(state)
        data = _wrap_db(_status)(url, state)
    except AigenError as e:
        fail(e, as_json=as_json)
    if as_json:
        print_json(data)
        raise typer.Exit(0)
    from rich.table import Table

    console.print(f"Cluster database: {escape(data['database'])}")
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False, title="Workers", title_justify="left")
    for col in ("executor id", "host", "pid", "state", "jobs", "last heartbeat", "providers"):
        t.add_column(col)
    for w in data["workers"]:
        state_text = w["state"] + (f" (taken over by {w['recovered_by']})" if w.get("recovered_by") else "")
        t.add_row(escape(w["executor_id"]), escape(w["host"]), str(w["pid"]), escape(state_text),
                  str(w["jobs"] or 0), f"{local_time(w['heartbeat_at'])} ({w['heartbeat_age_s']:.0f} s ago)",
                  escape(w["providers"] or "all"))
    if data["workers"]:
        console.print(t)
    else:
        console.print("No workers have run yet: start one with `aigen worker`.")
    q = Table(show_header=True, header_style="bold", box=None, pad_edge=False, title="Queues", title_justify="left")
    for col in ("provider", "queued", "running", "cap", "rate"):
        q.add_column(col)
    for p in data["queues"]:
        rate = f"{p['rate_per_minute']:g}/min" if p["rate_per_minute"] else "-"
        q.add_row(escape(p["provider"]), str(p["queued"]), str(p["running"]),
                  "-" if p["cap"] is None else str(p["cap"]), rate)
    console.print(q)
    raise typer.Exit(0)


def _status(url, state) -> dict:
    from datetime import datetime, timezone

    from aigen.cluster import redact

    store = state.store(create=False)
    workers, depth = [], {}
    if store is not None:
        now = datetime.now(timezone.utc)
        try:
            rows = store.query("SELECT * FROM workers ORDER BY started_at DESC")
        except Exception as e:
            if "no such table" not in str(e) and "does not exist" not in str(e):
                raise
            rows = []
        for r in rows:
            try:
                age = (now - datetime.fromisoformat(r["heartbeat_at"].replace("Z", "+00:00"))).total_seconds()
            except (ValueError, AttributeError):
                age = float("nan")
            workers.append({**r, "heartbeat_age_s": round(age, 1)})
        for r in store.query("SELECT provider, status, count(*) AS n FROM assets WHERE status IN "
                             "('queued', 'running') GROUP BY provider, status"):
            depth.setdefault(r["provider"], {"queued": 0, "running": 0})[r["status"]] = r["n"]
    caps = {}
    client = _client(url)
    try:
        for q in client.queues():
            if q.name.startswith("aigen-") and q.name != "aigen-generations":
                lim = q._limiter
                rate = None
                if lim:
                    rate = round(lim["limit"] * 60.0 / lim["period"], 3)
                caps[q.name[len("aigen-"):]] = {"cap": q._concurrency, "rate_per_minute": rate}
    finally:
        client.close()
    queues = []
    for p in sorted(set(caps) | set(depth)):
        queues.append({"provider": p, "queued": depth.get(p, {}).get("queued", 0),
                       "running": depth.get(p, {}).get("running", 0),
                       "cap": caps.get(p, {}).get("cap"), "rate_per_minute": caps.get(p, {}).get("rate_per_minute"),
                       "served": p in caps})
    return {"database": redact(url), "workers": workers, "queues": queues}


# -- generate / retry in cluster mode -----------------------------------------------
def use_workers(store, url: str | None) -> bool:
    """Whether to enqueue for `aigen worker` processes (see aigen.pipeline.background.use_workers)."""
    from aigen.pipeline.background import use_workers as live

    return live(store, url)


def enqueue(url: str, gen_id: str, *, include_refused: bool = False, store=None) -> str:
    """Enqueue a generation for the workers (and, given the store, its first asset jobs with it)."""
    client = _client(url)
    try:
        from aigen.cluster.engine import first_phase

        first = first_phase(store, gen_id) if store is not None else None
        return client.enqueue_generation(gen_id, include_refused=include_refused, first_assets=first)
    finally:
        client.close()


def follow(store, home, gen_id: str, *, as_json: bool, quiet: bool, after_run=None, extra=None,
           poll_s: float = 0.25) -> int:
    """Show a generation's progress from the store until it is final; Ctrl-C detaches (it keeps running)."""
    from aigen.cli.progress import RunDisplay
    from aigen.cli.runview import _report
    from aigen.pipeline.run import RunResult

    assets = store.assets(gen_id)
    todo = [a for a in assets if a["status"] != "done"]
    total = len(assets)
    started = time.monotonic()
    display = RunDisplay(console, total, quiet=quiet or as_json)
    seen: dict[int, tuple] = {}
    try:
        with display:
            while True:
                gen = store.get_generation(gen_id)
                assets = store.assets(gen_id)
                for a in assets:
                    key = (a["status"], a.get("progress"))
                    if seen.get(a["id"]) != key:
                        seen[a["id"]] = key
                        display(a, a["status"], a.get("progress"), a.get("error"))
                if gen["status"] != "Processing":
                    break
                time.sleep(poll_s)
    except KeyboardInterrupt:
        err_console.print(f"\n[yellow]Detached.[/] Generation {gen_id} keeps running on the workers; follow it "
                          f"with `aigen status {gen_id}`, stop it with `aigen cancel {gen_id}`.",
                          highlight=False, soft_wrap=True)
        return 0
    return _report(home, gen_id, RunResult(gen, assets), todo, total, started, as_json=as_json, quiet=quiet,
                   after_run=after_run, extra=extra)


__all__ = ["app", "worker", "cancel", "enqueue", "follow", "cluster_url"]
