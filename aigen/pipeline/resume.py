"""Is anything working on a generation, and may it be retried? Shared by `aigen retry` and the gallery.

A generation in status Processing is worked on when
- embedded shape: some process holds its run lock (`<home>/locks/<id>.lock`, an flock the OS drops even on
  SIGKILL), or
- cluster shape with live workers (a heartbeat within AIGEN_WORKER_DEAD_AFTER): it has a DBOS workflow that is
  PENDING, ENQUEUED or DELAYED (a dead worker's workflows are taken over by a live one).
A workflow queued on a cluster where no worker is alive is worked on by nobody, but `aigen retry` cannot help:
a worker must be started (NO_WORKER). Otherwise the run was killed: STALLED, and a retry resumes it.

The facts are gathered by `observe`; the decision is `decide`, a pure function of the facts and `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from aigen.errors import AigenError, Busy

RUNNING = "running"      # a process, or the cluster's workers, work on it
STARTING = "starting"    # (re)started moments ago: its process has not taken the run lock yet
STALLED = "stalled"      # Processing, and nothing works on it: `aigen retry` resumes it
NO_WORKER = "no_worker"  # queued on the cluster, where no worker is alive: start `aigen worker`
FINAL = "final"          # Completed or Failed, and nothing works on it

# How long after a generation is (re)started the gallery calls it STARTING rather than STALLED: a detached
# `aigen retry` needs a moment (interpreter start, imports) before it holds the run lock. `aigen retry` itself
# uses no grace: a user who runs it right after a kill gets the resume at once.
START_GRACE_S = 20.0

REFUSED_HINT = ("a refused prompt is refused again (and may be charged again); repeated refusals can get "
                "the account suspended (Runway). Change the prompt with a new `aigen generate`, or pass "
                "--include-refused to submit them again anyway")


class AllRefused(AigenError):
    """Every asset left to make was refused by its provider: nothing is submitted."""

    code = "all_refused"

    def __init__(self, message: str, hint: str | None = None, *, refused: list[dict] | None = None):
        super().__init__(message, hint)
        self.refused = refused or []


@dataclass(frozen=True)
class Facts:
    """What was observed about one generation."""

    status: str
    updated_at: str | None = None
    lock_held: bool = False
    # Cluster shape: whether any worker is alive, and how many of the generation's workflows are active
    # (None: not asked, e.g. no cluster or no worker ever ran there).
    workers_live: bool = False
    active_workflows: int | None = None


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        d = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        from datetime import timezone

        d = d.replace(tzinfo=timezone.utc)
    return d


def decide(facts: Facts, *, now: datetime, grace_s: float = 0.0) -> str:
    """RUNNING, STARTING, STALLED, NO_WORKER or FINAL for one generation, at `now`."""
    if facts.lock_held or (facts.workers_live and facts.active_workflows):
        return RUNNING
    if facts.active_workflows and not facts.workers_live:
        return NO_WORKER
    if facts.status != "Processing":
        return FINAL
    if grace_s > 0:
        changed = _parse(facts.updated_at)
        # Within the grace either way: a row written by a host whose clock runs a little ahead is recent too.
        if changed is not None and abs((now - changed).total_seconds()) < grace_s:
            return STARTING
    return STALLED


@dataclass
class Cluster:
    """The cluster side of `observe`: the database URL (None: embedded) and how to count active workflows."""

    url: str | None
    workers_live: bool = False
    workers_ever: bool = False
    count_workflows: Callable[[str], int] | None = None

    def active(self, gen_id: str) -> int | None:
        if self.url is None or not self.workers_ever or self.count_workflows is None:
            return None
        return self.count_workflows(gen_id)


def cluster_view(home_path: Path, store, *, now: datetime, count_workflows: Callable[[str], int] | None = None
                 ) -> Cluster:
    """The cluster facts that hold for every generation at `now` (one query; none in the embedded shape)."""
    from aigen.cluster import database_url
    from aigen.pipeline.background import use_workers

    url = database_url(home=Path(home_path))
    if url is None:
        return Cluster(None)
    ever = bool(store.query_one("SELECT count(*) AS n FROM workers")["n"])
    if count_workflows is None:
        from aigen.pipeline.background import active_workflows

        def count_workflows(gen_id: str) -> int:
            return active_workflows(url, gen_id)
    return Cluster(url, workers_live=ever and use_workers(store, url, now=now), workers_ever=ever,
                   count_workflows=count_workflows)


def observe(home_path: Path, gen: dict, cluster: Cluster) -> Facts:
    """The facts about one generation (`gen` needs id, status and updated_at)."""
    from aigen.locks import run_lock_held

    return Facts(status=gen["status"], updated_at=gen.get("updated_at"),
                 lock_held=run_lock_held(home_path, gen["id"]), workers_live=cluster.workers_live,
                 active_workflows=cluster.active(gen["id"]))


@dataclass
class RetryPlan:
    """What a retry of one generation would make; `url` is the cluster's when its live workers take it."""

    gen_id: str
    generation: dict
    missing: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    url: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        return not self.missing and self.generation["status"] == "Completed"


def plan_retry(home_path: Path, store, gen_id: str, *, include_refused: bool = False, now: datetime | None = None,
               grace_s: float = 0.0, count_workflows: Callable[[str], int] | None = None) -> RetryPlan:
    """The checks `aigen retry` makes before it touches anything, for the CLI and the gallery's Resume/Retry.

    Returns the plan (check `nothing_to_do` first). Raises AllRefused when every asset left was refused
    by its provider (and `include_refused` is not set), Busy when something works on it already (or, with
    `grace_s`, was started less than `grace_s` ago), and the provider's own error when a provider the
    missing assets need is not ready (e.g. its key is missing). Nothing is written.
    """
    from aigen.providers.base import get_provider
    from aigen.store.core import utcnow

    now = now or utcnow()
    gen = store.get_generation(gen_id)
    missing = [a for a in store.assets(gen_id) if a["status"] != "done"]
    refused = [] if include_refused else [a for a in missing if a["status"] == "failed" and a.get("refused")]
    missing = [a for a in missing if a not in refused]
    plan = RetryPlan(gen_id, gen, missing, refused)
    if plan.nothing_to_do:
        return plan
    if refused and not missing:
        names = ", ".join(f"{a['kind']} {a['idx']}" for a in refused)
        raise AllRefused(f"generation {gen_id}: nothing to retry: every asset left to make was refused by "
                         f"its provider ({names})", hint=REFUSED_HINT, refused=refused)
    cluster = cluster_view(home_path, store, now=now, count_workflows=count_workflows)
    facts = observe(home_path, gen, cluster)
    state = decide(facts, now=now, grace_s=grace_s)
    if state == NO_WORKER:
        raise Busy(f"generation {gen_id} is queued on the cluster, where no worker is running now",
                   hint=f"start `aigen worker`, or stop it with `aigen cancel {gen_id}`")
    if state == RUNNING:
        if not facts.lock_held:
            raise Busy(f"generation {gen_id} is queued or running on the cluster's workers",
                       hint=f"follow it with `aigen status {gen_id}`, or stop it with `aigen cancel {gen_id}`")
        raise Busy(f"generation {gen_id} is being processed by another aigen process",
                   hint=f"follow it with `aigen status {gen_id}`")
    if state == STARTING:
        raise Busy(f"generation {gen_id} was started moments ago and its run is starting",
                   hint=f"follow it with `aigen status {gen_id}`")
    # The same checks as `generate`: a missing key stops here, before the assets' attempts and errors are touched.
    for name, kind in sorted({(a["provider"], a["kind"]) for a in missing}):
        get_provider(name, home=Path(home_path)).check_ready(kind)
    plan.url = cluster.url if cluster.workers_live else None
    return plan


def reopen(store, gen_id: str, *, include_refused: bool = False, now: datetime | None = None) -> None:
    """Put a generation back to Processing for a retry started elsewhere (the cluster's workers, a detached
    process): every asset not done goes back in the queue, refused ones only if asked, and an earlier
    `aigen cancel` no longer applies."""
    store.reopen_generation(gen_id, skip_refused=not include_refused, now=now)
    store.set_generation_fields(gen_id, cancel_requested_at=None)
