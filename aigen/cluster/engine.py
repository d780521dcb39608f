"""The DBOS side of cluster mode: queues, the two workflows, enqueue/cancel from any process.

Imported only in cluster mode (it imports dbos at module level, because the
workflows are declared with its decorators).

* ``aigen_generation`` (queue ``aigen-generations``, run by any worker):
  reads the assets left to make, enqueues one ``aigen_asset`` workflow per
  asset on ``aigen-<provider>`` (with --video-from-images the images first,
  then the videos), waits for them, then finalizes the generation.
* ``aigen_asset`` (queue ``aigen-<provider>``, whose global concurrency is the
  provider's cap): makes one asset with ``Runner.run_asset``. It is not a DBOS
  step on purpose: aigen's own ``assets`` row says what an earlier attempt left
  (done, a saved job id to poll, a paid call cut off), so a recovered workflow
  simply runs it again and ``run_asset`` applies the money rules.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Callable

from dbos import DBOS, DBOSClient

from aigen import __version__
from aigen.cluster import ClusterUnavailable, describe_db_error, is_db_error
from aigen.store.core import FINAL_ASSET_STATES

log = logging.getLogger("aigen.cluster")

APP_NAME = "aigen"
SCHEMA = "aigen_dbos"
# Every worker of one aigen version runs the same workflows: one DBOS
# application version, so any worker dequeues and recovers any of them.
APP_VERSION = f"aigen-{__version__}"
GEN_QUEUE = "aigen-generations"
GEN_WORKFLOW = "aigen_generation"
ASSET_WORKFLOW = "aigen_asset"
FINAL_WF = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


# LISTEN/NOTIFY channel: "there is work on a queue" (an enqueue, a freed slot). Workers
# poll their queues slowly when idle (near-zero CPU) and at once when notified.
WAKE_CHANNEL = "aigen_queues"


def notify_queues(engine, *queues: str) -> None:
    """Wake the workers' threads of these queues (all of them when none is named).

    Best effort: a lost wake-up only costs one idle poll. The payload is the
    queue's name, so a freed slot of one provider does not make every worker
    poll every queue at once.
    """
    import sqlalchemy as sa

    try:
        with engine.begin() as c:
            for q in dict.fromkeys(queues or ("",)):
                c.execute(sa.text("SELECT pg_notify(:ch, :q)"), {"ch": WAKE_CHANNEL, "q": q})
    except Exception:
        log.debug("NOTIFY failed", exc_info=True)



def _dbos_engine():
    from dbos._dbos import _get_dbos_instance

    return _get_dbos_instance()._sys_db.engine


def queue_name(provider: str) -> str:
    return f"aigen-{provider}"


def gen_workflow_prefix(gen_id: str) -> str:
    return f"gen-{gen_id}-"




def asset_phases(gen: dict, assets: list[dict]) -> list[list[dict]]:
    """The asset jobs a generation still needs, in the order its workflow enqueues them.

    One phase, longest jobs first (videos, as in embedded mode); with --video-from-images two: the images,
    then the videos made from them (enqueued once the images are made).
    """
    todo = [{"id": a["id"], "provider": a["provider"], "kind": a["kind"], "idx": a["idx"]}
            for a in assets if a["status"] not in FINAL_ASSET_STATES]
    if (gen.get("options") or {}).get("video_from_images"):
        return [p for p in ([a for a in todo if a["kind"] == "image"],
                            [a for a in todo if a["kind"] == "video"]) if p]
    return [sorted(todo, key=lambda a: (a["kind"] != "video", a["idx"]))]


def first_phase(store, gen_id: str) -> list[dict]:
    """What the enqueuing side can queue at once, beside the generation's workflow (see Client.enqueue_generation)."""
    phases = asset_phases(store.get_generation(gen_id), store.assets(gen_id))
    return phases[0] if phases else []


def asset_workflow_id(parent_id: str, asset_id: int) -> str:
    return f"{parent_id}.a{asset_id}"


# -- the process that runs workflows (set by aigen.cluster.worker) ------------
class Context:
    """What the workflows of this worker process need: set once by the worker before DBOS launches."""

    def run_asset(self, gen_id: str, asset_id: int, include_refused: bool) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def assets_to_make(self, gen_id: str) -> list[list[dict]]:  # pragma: no cover - interface
        raise NotImplementedError

    def finalize(self, gen_id: str, ended: dict | None = None) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def wait_assets(self, gen_id: str, workflow_ids: list[str]) -> dict[str, str]:  # pragma: no cover - interface
        raise NotImplementedError


_context: Context | None = None


def set_context(ctx: Context) -> None:
    global _context
    _context = ctx


def _ctx() -> Context:
    if _context is None:
        raise RuntimeError("aigen cluster workflows run only inside `aigen worker`")
    return _context


@DBOS.step(name="aigen_plan")
def _plan_step(gen_id: str) -> list[list[dict]]:
    return _ctx().assets_to_make(gen_id)


@DBOS.step(name="aigen_finalize")
def _finalize_step(gen_id: str, ended: dict | None = None) -> str:
    return _ctx().finalize(gen_id, ended)


@DBOS.workflow(name=GEN_WORKFLOW)
def generation_workflow(gen_id: str, include_refused: bool = False) -> str:
    phases = _plan_step(gen_id)
    parent = DBOS.workflow_id
    ended: dict[str, str] = {}
    for phase in phases:
        handles = []
        for a in phase:
            # The same id as the enqueuing side used for the first phase: DBOS answers with that workflow.
            handles.append(DBOS.enqueue_workflow_with_options(
                {"workflow_name": ASSET_WORKFLOW, "queue_name": queue_name(a["provider"]),
                 "workflow_id": asset_workflow_id(parent, a["id"]), "app_version": APP_VERSION},
                gen_id, a["id"], include_refused))
        notify_queues(_dbos_engine(), *[queue_name(a["provider"]) for a in phase])
        # Woken as each asset job of this generation ends, wherever it ran (not DBOS's get_result, which
        # polls each handle once a second): the last asset's end is seen at once. A cancelled or failed
        # asset job needs nothing here: its row says what happened, and finalize reads the rows.
        statuses = _ctx().wait_assets(gen_id, [h.get_workflow_id() for h in handles])
        for wf_id, status in statuses.items():
            if status != "SUCCESS":
                log.info("asset job %s ended: %s", wf_id, status)
        ended.update(statuses)
    return _finalize_step(gen_id, ended)


def workflow_statuses(engine, workflow_ids: list[str]) -> dict[str, str]:
    """DBOS's status of each of these workflows (one query)."""
    import sqlalchemy as sa

    with engine.connect() as c:
        rows = c.execute(sa.text(f"SELECT workflow_uuid, status FROM {SCHEMA}.workflow_status "
                                 "WHERE workflow_uuid = ANY(:ids)"), {"ids": list(workflow_ids)}).fetchall()
    return {r[0]: r[1] for r in rows}


@DBOS.workflow(name=ASSET_WORKFLOW)
def asset_workflow(gen_id: str, asset_id: int, include_refused: bool = False) -> str:
    return _ctx().run_asset(gen_id, asset_id, include_refused)


# -- any process with the cluster configuration (generate, retry, cancel, status) --
class Client:
    """Enqueue, look up and cancel generation workflows without becoming a worker."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.client = DBOSClient(system_database_url=url, dbos_system_schema=SCHEMA,
                                     application_name=APP_NAME, retry_connection_errors=False)
        except Exception as e:
            if is_db_error(e) or "connect" in str(e).lower():
                raise describe_db_error(e, url) from None
            raise

    def close(self) -> None:
        try:
            self.client.destroy()
        except Exception:
            log.debug("closing the DBOS client failed", exc_info=True)

    def _call(self, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if _schema_missing(e):
                # No worker has ever run: create DBOS's tables (idempotent) and try once more.
                migrate(self.url)
                return fn(*args, **kwargs)
            if is_db_error(e):
                raise describe_db_error(e, self.url) from None
            raise

    def enqueue_generation(self, gen_id: str, *, include_refused: bool = False,
                           first_assets: list[dict] | None = None) -> str:
        """Enqueue the generation's workflow, and with it the jobs of `first_assets` (see first_phase).

        The generation's workflow enqueues its asset jobs itself once a worker runs it; enqueuing the first
        phase here too, under the very ids that workflow uses (DBOS answers a second enqueue of an id with
        the workflow already there), lets the jobs start without waiting for that: with many requests at
        once, a worker starting fifty generations' workflows took most of a second to reach the first job.
        """
        wf_id = f"{gen_workflow_prefix(gen_id)}{uuid.uuid4().hex[:8]}"
        self._call(self.client.enqueue,
                   {"workflow_name": GEN_WORKFLOW, "queue_name": GEN_QUEUE, "workflow_id": wf_id,
                    "app_version": APP_VERSION},
                   gen_id, include_refused)
        for a in first_assets or ():
            self._call(self.client.enqueue,
                       {"workflow_name": ASSET_WORKFLOW, "queue_name": queue_name(a["provider"]),
                        "workflow_id": asset_workflow_id(wf_id, a["id"]), "app_version": APP_VERSION},
                       gen_id, a["id"], include_refused)
        notify_queues(self.client._sys_db.engine, GEN_QUEUE,
                      *dict.fromkeys(queue_name(a["provider"]) for a in first_assets or ()))
        return wf_id

    def workflows(self, gen_id: str, *, active_only: bool = False) -> list:
        kw = {"status": ["PENDING", "ENQUEUED", "DELAYED"]} if active_only else {}
        return self._call(self.client.list_workflows, workflow_id_prefix=gen_workflow_prefix(gen_id),
                          load_input=False, load_output=False, **kw)

    def cancel_generation(self, gen_id: str) -> int:
        ids = [w.workflow_id for w in self.workflows(gen_id, active_only=True)]
        if ids:
            self._call(self.client.cancel_workflows, ids)
        return len(ids)

    def queues(self) -> list:
        return self._call(self.client.list_queues)


def _schema_missing(e: BaseException) -> bool:
    text = str(getattr(e, "orig", e))
    return "does not exist" in text and (SCHEMA in text or "workflow_status" in text or "queues" in text)


_migrate_lock = threading.Lock()


def migrate(url: str) -> None:
    with _migrate_lock:
        try:
            DBOS.migrate(url, schema=SCHEMA)
        except Exception as e:
            if is_db_error(e):
                raise describe_db_error(e, url) from None
            raise


__all__ = ["APP_NAME", "SCHEMA", "APP_VERSION", "GEN_QUEUE", "Client", "ClusterUnavailable", "Context",
           "queue_name", "set_context", "migrate"]
