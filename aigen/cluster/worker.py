"""`aigen worker`: one process of the cluster, taking asset jobs from the provider queues.

Lifecycle:

1. a stable executor id (``--id``, else host-pid-random), a ``workers`` row;
2. DBOS launched on the cluster database (its tables in schema aigen_dbos),
   listening to ``aigen-generations`` and the queues of the providers it
   serves; each provider queue registered with the provider's cap as its
   global concurrency and AIGEN_<PROVIDER>_RATE calls/minute as its limiter;
3. a heartbeat every AIGEN_WORKER_HEARTBEAT seconds (default 5), and the dead
   watch: a worker whose heartbeat is older than AIGEN_WORKER_DEAD_AFTER
   (default 60 s) is claimed in one UPDATE (so only one worker recovers it)
   and its pending DBOS workflows are re-enqueued on their own queues;
4. claims of a provider queue take turns across workers (DequeueLock: a PostgreSQL advisory lock held
   around DBOS's REPEATABLE READ claim, so concurrent claims never conflict and DBOS never backs off);
   a job's end is NOTIFYed once DBOS has recorded it, naming its queue (the freed slot is refilled at
   once) and its generation (whose workflow, waiting in wait_assets, finalizes at once); idle queues
   are polled every AIGEN_QUEUE_POLL seconds (10) only as a safety net;
5. SIGTERM (or Ctrl-C) drains: no new jobs; running ones get
   AIGEN_WORKER_DRAIN_TIMEOUT seconds (default 30) to finish, then are
   stopped at their next check and handed back (the asset is queued again,
   its saved job id kept); what this process still holds is re-enqueued for
   the other workers; exit 0.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from aigen.cluster import ClusterUnavailable, describe_db_error, is_db_error
from aigen.config import Home
from aigen.errors import AigenError, BadInput
from aigen.store.core import FINAL_ASSET_STATES

log = logging.getLogger("aigen.cluster.worker")

# The idle poll of a queue with a rate limit (AIGEN_<PROVIDER>_RATE), whose window opening sends no NOTIFY.
LIMITED_QUEUE_POLL_S = 2.0
CANCELLED_MSG = "cancelled with `aigen cancel`"


def _env_float(env: dict, name: str, default: float, lo: float, hi: float, unit: str = "seconds") -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{name} must be a number of {unit}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise BadInput(f"{name} must be between {lo:g} and {hi:g} {unit}, not {raw}")
    return value


def dead_after_from(env: dict) -> float:
    """AIGEN_WORKER_DEAD_AFTER: seconds without a heartbeat after which a worker counts as dead (default 60)."""
    return _env_float(env, "AIGEN_WORKER_DEAD_AFTER", 60.0, 0.2, 86400)


def iso(dt: datetime) -> str:
    from aigen.store.core import iso as store_iso

    return store_iso(dt)


def open_store(home: Home, env: dict):
    """The store of the cluster (PostgreSQL once aigen.store.open_store exists; else the home's SQLite)."""
    try:
        from aigen.store import open_store as configured  # helper "pgstore"
    except ImportError:
        configured = None
    if configured is not None:
        return configured(home, env=env)
    from aigen.store.core import Store

    home.ensure()
    return Store(home.db_path)


def pg_url(url: str) -> str:
    """The URL as libpq takes it (no SQLAlchemy driver suffix)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}" if sep else url


def check_database(url: str) -> None:
    """One clear line (ClusterUnavailable) when the cluster database cannot be reached."""
    import psycopg

    try:
        psycopg.connect(pg_url(url), connect_timeout=5).close()
    except Exception as e:
        raise describe_db_error(e, url) from None


def rate_limiter(provider: str, env: dict) -> dict | None:
    """AIGEN_<PROVIDER>_RATE (calls per minute) as a DBOS limiter, or None."""
    from aigen.config import concurrency_env_var

    var = concurrency_env_var(provider).replace("_CONCURRENCY", "_RATE")
    raw = (env.get(var) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{var} must be a number of calls per minute, not {raw!r}") from None
    if not 0 < value <= 100000:
        raise BadInput(f"{var} must be more than 0 calls per minute, not {raw}")
    # DBOS counts whole calls in a window: N calls per 60 s (fractions: 1 call per 60/N s).
    if value >= 1:
        return {"limit": int(value), "period": 60.0}
    return {"limit": 1, "period": 60.0 / value}


@dataclass
class Settings:
    executor_id: str
    providers: list[str]  # served by this worker
    concurrency: int | None  # most jobs at once per provider queue in this process
    heartbeat_s: float
    dead_after_s: float
    drain_timeout_s: float
    poll_s: float
    result_poll_s: float = 2.0  # the generations' safety poll behind the NOTIFY of an asset job's end
    store_retries: int = 5  # runs of an asset job again while the store is unreachable
    caps: dict[str, int] = field(default_factory=dict)
    rates: dict[str, dict | None] = field(default_factory=dict)


class Waker:
    """Lets a NOTIFY cut short the DBOS queue threads' polling waits.

    DBOS polls each queue every polling_interval_sec, and doubles that interval
    (up to 120 s) after each serialization conflict between two workers'
    dequeues. Its queue threads (named ``queue-worker-<queue>``) wait on one
    stop event; this replaces that event's wait() so that:

    * a wake-up for a queue makes that queue's thread poll (``wake(queue)``;
      ``wake()`` wakes every queue), at once or after ``delay`` seconds. Other
      queues' threads, and DBOS's other threads, sleep on. A wake-up that comes
      while the thread is polling is not lost: its next wait returns when due;
    * no wait is longer than ``max_wait`` (the idle poll): a conflict only means
      another worker has just dequeued, and must not leave this one deaf for
      minutes when a wake-up is lost.
    """

    PREFIX = "queue-worker-"
    # A peer's freed slot: poll after this (x 1..2), in case that peer could not take the next job.
    PEER_DELAY = 0.1

    def __init__(self, event: threading.Event, max_wait: float | None = None,
                 manager: threading.Thread | None = None, queues: set[str] | None = None):
        self.event = event
        self.max_wait = max_wait
        # DBOS's queue manager thread lists the queues every second to start a thread for each new one. Once
        # every queue this worker listens to has its thread (the set is fixed at launch), it waits max_wait.
        self.manager = manager
        self.queues = set(queues or ())
        self.cond = threading.Condition()
        self.due: dict[str, float] = {}  # queue -> when its thread must poll (monotonic)
        self.all_due: float | None = None  # a wake-up of every queue, for threads not in `due` yet
        self.answered: dict[str, float] = {}  # queue -> when its thread last returned from a wait
        event.wait = self.wait  # the instance attribute shadows Event.wait

    def wake(self, queue: str = "", delay: float = 0.0) -> None:
        at = time.monotonic() + max(0.0, delay)
        with self.cond:
            if queue:
                self.due[queue] = min(at, self.due.get(queue, at))
            else:
                for q in self.answered:
                    self.due[q] = min(at, self.due.get(q, at))
                self.all_due = at if self.all_due is None else min(at, self.all_due)
            self.cond.notify_all()

    def _due(self, queue: str) -> float | None:
        due = self.due.get(queue)
        if self.all_due is not None and self.all_due > self.answered.get(queue, -1.0):
            due = self.all_due if due is None else min(due, self.all_due)
        return due

    def wait(self, timeout: float | None = None) -> bool:
        current = threading.current_thread()
        name = current.name
        if not name.startswith(self.PREFIX):
            if (current is self.manager and self.max_wait is not None and timeout is not None and self.queues
                    and self.queues <= self.answered.keys()):
                timeout = max(timeout, self.max_wait)
            return threading.Event.wait(self.event, timeout)
        queue = name[len(self.PREFIX):]
        if self.max_wait is not None:
            timeout = self.max_wait if timeout is None else min(timeout, self.max_wait)
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.event.is_set():
                now = time.monotonic()
                due = self._due(queue)
                if due is not None and now >= due:
                    break
                limit = 0.5 if end is None else end - now
                if due is not None:
                    limit = min(limit, due - now)
                if limit <= 0:
                    break
                self.cond.wait(min(0.5, limit))
            now = time.monotonic()
            due = self.due.get(queue)
            if due is not None and due <= now:
                del self.due[queue]
            self.answered[queue] = now
        return self.event.is_set()


def listen_for_work(url: str, waker: Waker, stop: threading.Event, executor_id: str = "",
                    on_done=None) -> None:
    """LISTEN on the wake channel; each notification wakes its queue's thread. Reconnects on failure.

    A payload is ``<queue>`` (work was enqueued: poll now) or ``<queue> <executor id> [<generation>]``
    (that worker freed a slot and polls for it itself; the others poll a little later, so that they do
    not all dequeue at the same moment and conflict, only in case it could not take the next job). The
    generation, when named, had an asset job end: ``on_done(generation)`` wakes its workflow if it waits
    in this process.
    """
    import random

    import psycopg

    from aigen.cluster.engine import WAKE_CHANNEL

    while not stop.is_set():
        try:
            with psycopg.connect(pg_url(url), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {WAKE_CHANNEL}")
                waker.wake()  # anything enqueued while not listening
                while not stop.is_set():
                    for n in conn.notifies(timeout=5.0):
                        queue, _, source = (n.payload or "").partition(" ")
                        source, _, gen = source.partition(" ")
                        if gen and on_done is not None:
                            on_done(gen)
                        if source and source == executor_id:
                            continue  # woken already, in this process
                        delay = Waker.PEER_DELAY * random.uniform(1.0, 2.0) if source else 0.0
                        waker.wake(queue, delay)
        except Exception:
            log.debug("wake-up listener lost its connection", exc_info=True)
            stop.wait(1.0)


class DequeueLock:
    """One dequeue at a time per provider queue, across every worker: a PostgreSQL advisory lock around DBOS's claim.

    DBOS claims the jobs of a queue with a global concurrency in a REPEATABLE READ
    transaction with FOR UPDATE NOWAIT. Two workers claiming the same queue at the
    same moment conflict: one gets nothing and DBOS doubles that queue's polling
    interval. Taking a session-level advisory lock (on a connection of its own, so
    it is held before DBOS's transaction takes its snapshot) makes the claims take
    turns: the second claim starts after the first committed, sees the slots it
    took, and takes what is left. The lock waits at most ``wait_s``; after that
    (a peer stopped mid-claim) the claim goes ahead without it, and DBOS's own
    transaction still keeps the cap: the lock only removes the conflicts, the cap
    never depends on it. A worker that dies releases its locks with its connections.
    """

    CLASS_ID = 0x61696764  # "aigd": the two-key form, apart from the store's one-key advisory locks

    def __init__(self, url: str, wait_s: float = 5.0):
        self.url = url
        self.wait_s = wait_s
        self.local = threading.local()
        self.waited = 0  # claims that found the lock taken (for the benchmark's report)
        self.skipped = 0  # claims made without the lock (a peer held it past wait_s, or no connection)

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            import psycopg

            conn = psycopg.connect(pg_url(self.url), autocommit=True, connect_timeout=5,
                                   application_name="aigen-dequeue")
            conn.execute(f"SET lock_timeout = '{int(self.wait_s * 1000)}ms'")
            self.local.conn = conn
        return conn

    @staticmethod
    def key(queue: str) -> int:
        import zlib

        return zlib.crc32(queue.encode()) - 2**31  # a signed int4

    def _drop(self) -> None:
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            try:
                conn.close()  # closing the session releases its advisory locks
            except Exception:
                log.debug("closing the dequeue lock's connection failed", exc_info=True)

    def __call__(self, queue: str, claim):
        try:
            conn = self._conn()
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.CLASS_ID, self.key(queue))).fetchone()[0]:
                self.waited += 1
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (self.CLASS_ID, self.key(queue)))
        except Exception:
            log.debug("dequeue lock for %s not taken; claiming without it", queue, exc_info=True)
            self.skipped += 1
            self._drop()
            return claim()
        try:
            return claim()
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self.CLASS_ID, self.key(queue)))
            except Exception:
                self._drop()


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    def __init__(self, home: Home, url: str, settings: Settings, env: dict | None = None):
        self.home = home
        self.url = url
        self.s = settings
        self.env = dict(os.environ if env is None else env)
        check_database(url)
        self.store = open_store(home, self.env)
        self.draining = threading.Event()  # no new jobs
        self.stop_jobs = threading.Event()  # running jobs stop at their next check (hand back)
        self.exiting = threading.Event()
        self._lock = threading.Lock()
        self.jobs = 0
        self.handed_back = 0  # jobs stopped by the drain, waiting for the process to end
        self._cancel_cache: dict[str, tuple[float, bool]] = {}
        self._providers_cache: dict = {}
        self.started_at = datetime.now(timezone.utc)
        # The generations' workflows (one DBOS thread each, mostly waiting on their assets) do their
        # few store calls here: the store keeps a connection per thread, and fifty waiting
        # generations must not hold fifty PostgreSQL connections.
        from concurrent.futures import ThreadPoolExecutor

        self._db_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aigen-store")
        self._freeing = threading.local()  # .queue, .gen: the queue whose slot this thread's job frees, its generation
        # Generations whose workflows wait in this process for their asset jobs: gen id -> [event, waiters].
        self._waiting: dict[str, list] = {}
        self._waiting_lock = threading.Lock()
        self.result_poll_s = settings.result_poll_s
        self.store_retries = settings.store_retries
        self.store_retry_delay_s = 1.0  # doubled after each failed attempt, up to 30 s
        self.waker: Waker | None = None

    def _on_pool(self, fn, *args):
        return self._db_pool.submit(fn, *args).result()

    # -- the workflows' side (engine.Context) ---------------------------------
    def assets_to_make(self, gen_id: str) -> list[list[dict]]:
        return self._on_pool(self._assets_to_make, gen_id)

    def _assets_to_make(self, gen_id: str) -> list[list[dict]]:
        from aigen.cluster.engine import asset_phases

        return asset_phases(self.store.get_generation(gen_id), self.store.assets(gen_id))

    def finalize(self, gen_id: str, ended: dict[str, str] | None = None) -> str:
        return self._on_pool(self._finalize, gen_id, ended or {})

    def _finalize(self, gen_id: str, ended: dict[str, str]) -> str:
        """Finalize the generation; an asset whose job ended without a result is failed first, not left Processing.

        Every asset job of the generation has ended when this runs. An asset row still queued or running
        then means its job died on an error before recording anything (the store unreachable past the
        retries, a bug): it is failed with that said, so the generation ends Failed and `aigen retry`
        can finish it. A paid call it may have sent is not sent again unless the user retries.
        """
        if any(status == "ERROR" for status in ended.values()):
            for a in self.store.assets(gen_id):
                if a["status"] not in FINAL_ASSET_STATES:
                    self.store.fail_asset(
                        a["id"], f"its worker job ended with an error before recording a result; finish it with "
                        f"`aigen retry {gen_id}` (a paid call it may have sent is not sent again on its own)",
                        code="worker_lost")
        return self.store.finalize_generation(gen_id)

    def wait_assets(self, gen_id: str, workflow_ids: list[str]) -> dict[str, str]:
        """Wait until DBOS has recorded the end of each of these asset jobs; their final statuses.

        Woken by the end of any asset job of this generation: in this process directly, on another
        worker through its NOTIFY. A lost wake-up (the listener reconnecting) costs at most
        AIGEN_WORKER_RESULT_POLL seconds (default 2), the interval of the safety poll.
        """
        from aigen.cluster.engine import FINAL_WF, _dbos_engine, workflow_statuses

        with self._waiting_lock:
            entry = self._waiting.setdefault(gen_id, [threading.Event(), 0])
            entry[1] += 1
        event = entry[0]
        try:
            while True:
                event.clear()
                statuses = workflow_statuses(_dbos_engine(), workflow_ids)
                if all(statuses.get(w) in FINAL_WF for w in workflow_ids):
                    return statuses
                event.wait(self.result_poll_s)
        finally:
            with self._waiting_lock:
                entry[1] -= 1
                if entry[1] <= 0 and self._waiting.get(gen_id) is entry:
                    del self._waiting[gen_id]

    def asset_done(self, gen_id: str) -> None:
        """An asset job of this generation ended (here or on another worker): wake its waiting workflow."""
        with self._waiting_lock:
            entry = self._waiting.get(gen_id)
        if entry is not None:
            entry[0].set()

    def cancelled(self, gen_id: str) -> bool:
        """Whether `aigen cancel` was asked for this generation (read at most once a second)."""
        now = time.monotonic()
        hit = self._cancel_cache.get(gen_id)
        if hit is not None and now - hit[0] < 1.0:
            return hit[1]
        row = self.store.query_one("SELECT cancel_requested_at FROM generations WHERE id = ?", (gen_id,))
        value = bool(row and row.get("cancel_requested_at"))
        self._cancel_cache[gen_id] = (now, value)
        return value

    def _queue_of(self, asset_id: int) -> str:
        from aigen.cluster.engine import queue_name

        if len(self.s.providers) == 1:
            return queue_name(self.s.providers[0])
        try:
            row = self.store.query_one("SELECT provider FROM assets WHERE id = ?", (asset_id,))
        except Exception:
            row = None
        return queue_name(row["provider"]) if row else ""  # "" wakes every queue

    def run_asset(self, gen_id: str, asset_id: int, include_refused: bool) -> str:
        from aigen.pipeline.run import Runner

        with self._lock:
            self.jobs += 1
        handed_back = False
        try:
            runner = Runner(self.store, self.home, env=self.env, include_refused=include_refused,
                            providers=self._providers_cache, cancel_check=self.cancelled)
            runner.stop = self.stop_jobs
            status = self._run_with_store_retries(runner, gen_id, asset_id)
            if status not in FINAL_ASSET_STATES and self.cancelled(gen_id):
                self.store.fail_asset(asset_id, CANCELLED_MSG, code="cancelled")
                self.store.finalize_generation(gen_id)
                status = "failed"
            elif status not in FINAL_ASSET_STATES and self.stop_jobs.is_set():
                handed_back = True
            # Providers made by this job are kept for the next one (their HTTP clients, keys).
            self._providers_cache.update(runner.providers)
            return status
        finally:
            with self._lock:
                self.jobs -= 1
            if not handed_back:
                # A slot is about to be free: once DBOS has recorded this job's end (in this thread,
                # right after this returns), _notify_on_outcome wakes the workers of its queue.
                self._freeing.queue = self._queue_of(asset_id)
                self._freeing.gen = gen_id
            # The store keeps one connection per thread, and DBOS runs each job on whichever of its
            # (many) threads is free: give this one back for the next job (PgStore.release), or the
            # connections pile up past max_connections.
            release = getattr(self.store, "release", None)
            if release is not None:
                try:
                    release()
                except Exception:
                    log.debug("giving back this thread's store connection failed", exc_info=True)
            if handed_back:
                # Keep this workflow PENDING on this executor: the drain re-enqueues it for
                # another worker, which makes the asset (or polls its saved job) again.
                log.info("asset %s handed back", asset_id)
                with self._lock:
                    self.handed_back += 1
                self.exiting.wait()

    def _run_with_store_retries(self, runner, gen_id: str, asset_id: int) -> str:
        """runner.run_asset, run again while the store is unreachable (AIGEN_WORKER_STORE_RETRIES times, backing off).

        The asset's row says what the failed attempt left, so the next attempt applies the money rules of a
        takeover: a saved job id is polled, a paid call that may have been sent is failed, not sent again.
        When the store stays away, the job ends in error and the generation's workflow marks what is left
        (see finalize).
        """
        from aigen.errors import DatabaseUnavailable

        delay = self.store_retry_delay_s
        for attempt in range(self.store_retries + 1):
            try:
                return runner.run_asset(gen_id, asset_id)
            except Exception as e:
                if not (isinstance(e, DatabaseUnavailable) or is_db_error(e)):
                    raise
                if attempt >= self.store_retries or self.stop_jobs.is_set() or self.exiting.is_set():
                    raise
                log.warning("asset %s: the store failed (%s); trying again in %.0f s", asset_id, e, delay)
                self.stop_jobs.wait(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    # -- the workers row ------------------------------------------------------
    def register(self) -> None:
        now = iso(datetime.now(timezone.utc))
        with self.store.transaction() as db:
            db.conn.execute("DELETE FROM workers WHERE executor_id = ?", (self.s.executor_id,))
            db.conn.execute(
                "INSERT INTO workers (executor_id, host, pid, started_at, heartbeat_at, state, providers, jobs) "
                "VALUES (?, ?, ?, ?, ?, 'alive', ?, 0)",
                (self.s.executor_id, socket.gethostname(), os.getpid(), now, now, ",".join(self.s.providers)))

    def heartbeat(self, now: datetime | None = None) -> bool:
        """Touch this worker's row; False when another worker declared it dead (it must stop)."""
        now = now or datetime.now(timezone.utc)
        state = "draining" if self.draining.is_set() else "alive"
        with self.store.transaction() as db:
            cur = db.conn.execute(
                "UPDATE workers SET heartbeat_at = ?, jobs = ?, state = ? WHERE executor_id = ? AND state != 'dead'",
                (iso(now), self.jobs, state, self.s.executor_id))
            return cur.rowcount != 0

    def claim_dead(self, now: datetime | None = None) -> list[str]:
        """Workers whose heartbeat stopped, each claimed by exactly one worker (this one, when it wins)."""
        now = now or datetime.now(timezone.utc)
        cutoff = iso(now - timedelta(seconds=self.s.dead_after_s))
        rows = self.store.query(
            "SELECT executor_id FROM workers WHERE state IN ('alive', 'draining') AND heartbeat_at < ? "
            "AND executor_id != ?", (cutoff, self.s.executor_id))
        # A worker that stopped cleanly handed its workflows back; one left PENDING by a race at its
        # exit (a job ending just as it left) is recovered once more, which is harmless: DBOS only
        # re-enqueues workflows still PENDING on that executor.
        stopped = self.store.query(
            "SELECT executor_id FROM workers WHERE state = 'stopped' AND recovered_by IS NULL AND heartbeat_at < ?",
            (cutoff,))
        won = []
        for r in stopped:
            with self.store.transaction() as db:
                cur = db.conn.execute(
                    "UPDATE workers SET recovered_by = ?, recovered_at = ? WHERE executor_id = ? "
                    "AND state = 'stopped' AND recovered_by IS NULL", (self.s.executor_id, iso(now), r["executor_id"]))
                if cur.rowcount == 1:
                    won.append(r["executor_id"])
        for r in rows:
            with self.store.transaction() as db:
                cur = db.conn.execute(
                    "UPDATE workers SET state = 'dead', recovered_by = ?, recovered_at = ?, jobs = 0 "
                    "WHERE executor_id = ? AND state IN ('alive', 'draining') AND heartbeat_at < ?",
                    (self.s.executor_id, iso(now), r["executor_id"], cutoff))
                if cur.rowcount == 1:
                    won.append(r["executor_id"])
        return won

    def recover(self, executor_ids: list[str]) -> int:
        from dbos import DBOS

        from aigen.cluster.engine import _dbos_engine, notify_queues

        handles = DBOS._recover_pending_workflows(executor_ids)
        notify_queues(_dbos_engine())
        for eid in executor_ids:
            self.store.log_event("worker_recovered", reason=f"heartbeat older than {self.s.dead_after_s:g} s",
                                 detail=f"{self.s.executor_id} took over {eid} ({len(handles)} workflow(s))")
        return len(handles)

    # -- the process ----------------------------------------------------------
    def launch(self) -> None:
        from dbos import DBOS

        from aigen.cluster import engine

        engine.set_context(self)
        config = {
            "name": engine.APP_NAME,
            "system_database_url": self.url,
            "dbos_system_schema": engine.SCHEMA,
            "executor_id": self.s.executor_id,
            "application_version": engine.APP_VERSION,
            "log_level": self.env.get("AIGEN_DBOS_LOG_LEVEL", "WARNING"),
            # DBOS flushes its coalesced notifications every 10 ms by default, which alone keeps an
            # idle worker busy; aigen uses no DBOS events or streams, so a slower flush costs nothing.
            "notification_coalesce_sec": 2.0,
            # DBOS's own connections (default 20 per process): enough for the queue threads and the
            # waiting generations, while many workers stay under PostgreSQL's max_connections.
            "sys_db_pool_size": int(self.env.get("AIGEN_DBOS_POOL_SIZE") or 8),
            # DBOS pings every connection it takes from its pool (a round trip per checkout, several per
            # job: a tenth of the queue thread's time under load). A connection the server dropped fails
            # its first statement instead, SQLAlchemy discards it, and DBOS's own retries run it again on
            # a new one; connections are renewed every 5 minutes.
            "db_engine_kwargs": {"pool_pre_ping": False, "pool_recycle": 300},
        }
        DBOS(config=config)
        DBOS.listen_queues([engine.GEN_QUEUE, *[engine.queue_name(p) for p in self.s.providers]])
        DBOS.launch()
        for p in self.s.providers:
            # A queue with a rate limit has no NOTIFY when its window opens again: it polls at least every 2 s.
            poll = min(self.s.poll_s, LIMITED_QUEUE_POLL_S) if self.s.rates.get(p) else self.s.poll_s
            DBOS.register_queue(engine.queue_name(p), global_concurrency=self.s.caps[p],
                                limiter=self.s.rates.get(p), polling_interval_sec=poll,
                                on_conflict="always_update")
        DBOS.register_queue(engine.GEN_QUEUE, polling_interval_sec=self.s.poll_s, on_conflict="always_update")
        self._limit_this_process()
        self._notify_on_outcome()
        self._wake_on_notify()

    def _notify_on_outcome(self) -> None:
        """NOTIFY a job's queue once DBOS has recorded its end, so the freed slot is seen at the first poll.

        Waking the workers earlier (when the job returns, before DBOS writes its
        status) made every worker poll while the slot still counted as taken.
        """
        from dbos._dbos import _get_dbos_instance

        from aigen.cluster.engine import notify_queues

        sys_db = _get_dbos_instance()._sys_db
        original = sys_db.update_workflow_outcome
        freeing = self._freeing
        worker = self

        def update_workflow_outcome(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            finally:
                queue = getattr(freeing, "queue", None)
                if queue is not None:
                    gen = getattr(freeing, "gen", None) or ""
                    freeing.queue = freeing.gen = None
                    if gen:
                        worker.asset_done(gen)  # its workflow, when it waits here, finalizes at once
                    if queue and worker.waker is not None:
                        worker.waker.wake(queue)  # this worker polls for its freed slot first
                        notify_queues(sys_db.engine, f"{queue} {worker.s.executor_id} {gen}".rstrip())
                    else:
                        notify_queues(sys_db.engine, *([queue] if queue else []))

        sys_db.update_workflow_outcome = update_workflow_outcome

    def _wake_on_notify(self) -> None:
        from dbos._dbos import _get_dbos_instance
        from dbos._queue import queue_thread

        dbos = _get_dbos_instance()
        events = dbos.background_thread_stop_events
        threads = [t for t in dbos._background_threads if getattr(t, "_target", None) is queue_thread]
        event = threads[0]._args[0] if threads else None
        if event is None or event not in events:
            log.warning("cannot hook the DBOS queue thread: queues are polled every %s s", self.s.poll_s)
            return
        from aigen.cluster import engine

        self.waker = Waker(event, max_wait=self.s.poll_s, manager=threads[0],
                           queues={engine.GEN_QUEUE, *(engine.queue_name(p) for p in self.s.providers)})
        threading.Thread(target=listen_for_work,
                         args=(self.url, self.waker, self.exiting, self.s.executor_id, self.asset_done),
                         daemon=True,
                         name="aigen-wake").start()

    def _limit_this_process(self) -> None:
        """--concurrency and the drain, applied to this process only.

        DBOS keeps a queue's worker_concurrency in the database, shared by every
        worker; this process's own limit is set on the copy its queue threads
        reload each poll: N jobs per provider queue, 0 while draining.
        """
        from dbos._dbos import _get_dbos_instance

        sys_db = _get_dbos_instance()._sys_db
        original = sys_db.get_queue
        worker = self

        def get_queue(name, *args, **kwargs):
            q = original(name, *args, **kwargs)
            if q is not None:
                if worker.draining.is_set():
                    q._worker_concurrency = 0
                elif worker.s.concurrency is not None and name != "aigen-generations":
                    q._worker_concurrency = worker.s.concurrency
            return q

        sys_db.get_queue = get_queue

        # DBOS reloads the queue before its wait, not after: a poll woken at once (a freed slot)
        # still holds the copy from before the drain began. The claim itself refuses then.
        claim = sys_db.start_queued_workflows

        lock = self.dequeue_lock = DequeueLock(self.url)

        def start_queued_workflows(queue, *args, **kwargs):
            if worker.draining.is_set():
                return [], "worker_concurrency"
            if queue._concurrency is None and queue._limiter is None:
                return claim(queue, *args, **kwargs)  # no shared budget: DBOS skips locked rows, no conflicts
            return lock(queue.name, lambda: claim(queue, *args, **kwargs))

        sys_db.start_queued_workflows = start_queued_workflows

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit code."""
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.register()
        self.launch()
        print(f"aigen worker {self.s.executor_id}: serving {', '.join(self.s.providers)} "
              f"(caps {', '.join(f'{p} {self.s.caps[p]}' for p in self.s.providers)}); SIGTERM drains",
              flush=True)
        next_beat = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.s.heartbeat_s
                try:
                    if not self.heartbeat():
                        print(f"aigen worker {self.s.executor_id}: another worker declared this one dead and "
                              f"took over its jobs; stopping", file=sys.stderr, flush=True)
                        os._exit(3)
                    dead = self.claim_dead()
                    if dead:
                        n = self.recover(dead)
                        print(f"aigen worker {self.s.executor_id}: took over {n} job(s) of dead worker(s) "
                              f"{', '.join(dead)}", flush=True)
                except Exception as e:
                    if not is_db_error(e):
                        raise
                    print(f"aigen worker: the cluster database is unreachable ({describe_db_error(e, self.url).message}); "
                          f"retrying", file=sys.stderr, flush=True)
            stop.wait(min(self.s.heartbeat_s, max(0.05, next_beat - time.monotonic())))
        return self.drain()

    def drain(self) -> int:
        from dbos import DBOS

        self.draining.set()
        print(f"aigen worker {self.s.executor_id}: draining ({self.jobs} job(s) running)", flush=True)
        try:
            self.heartbeat()
        except Exception:
            log.debug("heartbeat during drain failed", exc_info=True)
        deadline = time.monotonic() + self.s.drain_timeout_s
        while self.jobs and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.jobs:
            print(f"aigen worker {self.s.executor_id}: handing back {self.jobs} job(s) still running", flush=True)
            self.stop_jobs.set()
            end = time.monotonic() + 60
            while self.jobs and time.monotonic() < end:
                time.sleep(0.1)
        # A job that just ended is still being recorded by DBOS: let it finish, so it is not handed back.
        from dbos._dbos import _get_dbos_instance

        from aigen.cluster.engine import queue_name

        active = _get_dbos_instance()._active_workflows_set
        end = time.monotonic() + 5
        while time.monotonic() < end and sum(
                active.count_for_queue(queue_name(p)) for p in self.s.providers) > self.handed_back:
            time.sleep(0.05)
        # What this process still holds (generations waiting on their assets, jobs handed
        # back) goes back on its queue for the other workers.
        try:
            n = len(DBOS._recover_pending_workflows([self.s.executor_id]))
            with self.store.transaction() as db:
                db.conn.execute("UPDATE workers SET state = 'stopped', jobs = 0, heartbeat_at = ? "
                                "WHERE executor_id = ?", (iso(datetime.now(timezone.utc)), self.s.executor_id))
        except Exception as e:
            print(f"aigen worker: could not hand back its workflows: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        print(f"aigen worker {self.s.executor_id}: stopped ({n} workflow(s) handed back)", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Threads blocked in handed-back jobs or waiting generations end with the process.
        self.exiting.set()
        os._exit(0)


def settings_from(home: Home, env: dict, *, executor_id: str | None, providers: str | None,
                  concurrency: int | None) -> Settings:
    from aigen.providers.base import get_provider, provider_names

    names = provider_names()
    if providers:
        wanted = [p.strip() for p in providers.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in names]
        if unknown or not wanted:
            raise BadInput(f"unknown provider {', '.join(unknown) or repr(providers)} in --providers",
                           hint=f"choose among: {', '.join(names)}")
    else:
        wanted = list(names)
    if concurrency is not None and not 1 <= concurrency <= 1000:
        raise BadInput("--concurrency must be between 1 and 1000")
    if executor_id is not None and not executor_id.strip():
        raise BadInput("--id must not be empty")
    s = Settings(
        executor_id=(executor_id or default_executor_id()).strip(),
        providers=wanted,
        concurrency=concurrency,
        heartbeat_s=_env_float(env, "AIGEN_WORKER_HEARTBEAT", 5.0, 0.05, 600),
        dead_after_s=dead_after_from(env),
        drain_timeout_s=_env_float(env, "AIGEN_WORKER_DRAIN_TIMEOUT", 30.0, 0, 86400),
        poll_s=_env_float(env, "AIGEN_QUEUE_POLL", 10.0, 0.01, 60),
        result_poll_s=_env_float(env, "AIGEN_WORKER_RESULT_POLL", 2.0, 0.05, 60),
        store_retries=int(_env_float(env, "AIGEN_WORKER_STORE_RETRIES", 5, 0, 100, unit="tries")),
    )
    if s.heartbeat_s * 2 > s.dead_after_s:
        s.heartbeat_s = s.dead_after_s / 3
    for p in wanted:
        prov = get_provider(p, env=env, home=home.path)
        s.caps[p] = prov.concurrency_cap()[0]
        s.rates[p] = rate_limiter(p, env)
    return s


__all__ = ["Worker", "Settings", "settings_from", "open_store", "ClusterUnavailable", "AigenError"]
