"""Run the assets of one generation in threads and move its status.

Each provider gets its own ThreadPoolExecutor sized to its concurrency cap
and shared by every run in the process, so a slow provider never starves a
fast one, no worker idles on a semaphore, and the cap holds however many
generations run at once. A generation is run by one process at a time: an exclusive lock
file is held for the run, which the OS releases even on SIGKILL, so a killed
run can be resumed at once by `aigen retry`.

Kept files go through the Storage layer (aigen.storage, ``Runner.storage``).
With the home's folder (the default) a file is written next to its final name,
checked, and renamed into place, as always. With S3 (AIGEN_STORAGE_URL) it is
written and checked in ``<home>/scratch/<generation>/``, then uploaded under
the same key (``generated_content/<user>/<generation>/<file>``, what
assets.path holds) before the row says it is done; nothing is written under
generated_content/. The kept-after-a-crash check downloads an object already
at its final key and checks it like a local file. When the upload fails (S3
down, a refused PUT), the checked file stays in the scratch folder under its
final name (renamed there atomically before the upload) and the asset fails
with code ``upload_pending``; the next run (`aigen retry`) finds it there,
checks it and uploads it without calling the provider again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from aigen.config import Home
from aigen.errors import (
    AigenError,
    Busy,
    DatabaseUnavailable,
    MediaCheckError,
    NoSpace,
    ProviderError,
    Refused,
    describe_os_error,
)
from aigen.locks import is_running  # noqa: F401  (lives in aigen.locks: `aigen status` asks without the pipeline)
from aigen.pipeline.files import download_to, place, remove_stale_parts, sha256_file, temp_path_for
from aigen.providers.base import AssetOutput, AssetRequest, Provider, get_provider
from aigen.store import Store

if TYPE_CHECKING:
    from aigen.storage import Storage

log = logging.getLogger("aigen.pipeline")

# listener(asset_row, state, fraction, error) with state in queued|running|done|failed
Listener = Callable[[dict, str, "float | None", "str | None"], None]


class Cancelled(AigenError):
    code = "cancelled"


class UploadPending(AigenError):
    """A file was paid for and checked but could not be uploaded: it waits in the scratch folder for `aigen retry`."""

    code = "upload_pending"


@dataclass
class RunResult:
    generation: dict
    assets: list[dict]

    @property
    def ok(self) -> bool:
        return self.generation["status"] == "Completed"


def generation_dir(home: Home, gen: dict) -> Path:
    return home.content_dir / gen["user_id"] / gen["id"]


SCRATCH_DIR = "scratch"


def scratch_dir(home: Home, gen: dict) -> Path:
    """Where files are written and checked before their upload to object storage: local to this machine,
    one folder per generation (so the stale-part cleanup of one run never touches another's files), never
    under generated_content/."""
    return home.path / SCRATCH_DIR / gen["id"]


@contextlib.contextmanager
def run_lock(home: Home, gen_id: str) -> Iterator[None]:
    lock_dir = home.path / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{gen_id}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise Busy(
                f"generation {gen_id} is being processed by another aigen process (pid {pid})",
                hint="wait for it to finish, or stop that process and run `aigen retry` again",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


# One pool per provider for the whole process: several generations run at once (the
# gallery's tests, a benchmark, a future server mode) share it. The provider's cap
# holds its calls, not its threads: a call takes one of the provider's slots (a
# semaphore sized to the cap) and gives it back as soon as the provider returns, so
# the file's check, previews and database writes do not keep the next call waiting.
# The pool has a thread for each slot and one more for each file being finished.
_POOLS: dict[str, ThreadPoolExecutor] = {}
_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_POOLS_LOCK = threading.Lock()
# Threads of a provider's pool per slot: one calling the provider, one finishing the file it returned.
THREADS_PER_SLOT = 2


def provider_pool(name: str, cap: int) -> tuple[ThreadPoolExecutor, threading.BoundedSemaphore]:
    """The provider's pool and its slots (see above), made for ``cap`` or remade when the cap changed."""
    cap = max(1, int(cap))
    with _POOLS_LOCK:
        pool = _POOLS.get(name)
        if pool is None or pool._max_workers != cap * THREADS_PER_SLOT:
            # A changed cap (tests swap providers) gets a fresh pool and fresh slots; the old
            # pool finishes its queued work (with the old slots) and its idle threads exit.
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=cap * THREADS_PER_SLOT, thread_name_prefix=f"aigen-{name}")
            _POOLS[name] = pool
            _SLOTS[name] = threading.BoundedSemaphore(cap)
        return pool, _SLOTS[name]


class _AssetReporter:
    """What a provider sees of the pipeline: save a job id, report progress, notice a stop."""

    def __init__(self, runner: "Runner", asset: dict):
        self.runner = runner
        self.asset = asset
        self._last_saved = 0.0

    def save_job_id(self, job_id: str) -> None:
        self.runner.store.save_job_id(self.asset["id"], job_id)
        self.asset["provider_job_id"] = job_id

    def progress(self, fraction: float) -> None:
        fraction = max(0.0, min(1.0, float(fraction)))
        self.runner._emit(self.asset, "running", fraction, None)
        # Throttle database writes: progress is for display, not for recovery.
        if fraction - self._last_saved >= 0.25 or fraction >= 1.0:
            self._last_saved = fraction
            try:
                self.runner.store.set_progress(self.asset["id"], fraction)
            except Exception:  # display only; never fail an asset over it
                log.debug("could not save progress", exc_info=True)

    def should_stop(self) -> bool:
        return self.runner.stop.is_set() or self.runner.cancel_requested()

    def cancel_requested(self) -> bool:
        """`aigen cancel` was asked (cluster mode): the work is abandoned, not paused as by Ctrl-C or SIGTERM,
        so a provider may cancel its job at the vendor (fal does)."""
        return self.runner.cancel_requested()

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("stopped before this asset finished")


class SourceImages:
    """--video-from-images: each video waits for the image it animates (video i uses image ((i-1) % n)+1).

    Images settle as they finish (done: their storage key; otherwise: why
    not). A video blocks on its image's event in short waits, so a stop is
    still noticed. Images are queued before videos, so even when one provider
    (one pool) makes both, every image has started before any video can wait:
    no deadlock. The Runner turns the key into a local file for the provider
    (the file itself in the home's folder; a downloaded copy from S3).
    """

    def __init__(self, home: Home, assets: list[dict], image_count: int):
        self.home = home
        self.count = image_count
        self._events = {i: threading.Event() for i in range(1, image_count + 1)}
        self._results: dict[int, tuple[str | None, str | None]] = {}
        for a in assets:
            if a["kind"] == "image" and a["status"] == "done" and a.get("path"):
                self.settle(a)

    def source_index(self, video_idx: int) -> int:
        return (video_idx - 1) % self.count + 1

    def settle(self, image: dict) -> None:
        idx = image["idx"]
        if image.get("status") == "done" and image.get("path"):
            self._results[idx] = (image["path"], None)
        else:
            self._results[idx] = (None, image.get("error") or "it was not made")
        if idx in self._events:
            self._events[idx].set()

    def ready(self, video_idx: int) -> tuple[int, str] | None:
        """The source image's key if it is already made, without waiting."""
        idx = self.source_index(video_idx)
        key, _ = self._results.get(idx, (None, None))
        return (idx, key) if key is not None else None

    def wait(self, video_idx: int, stop: threading.Event) -> tuple[int, str]:
        idx = self.source_index(video_idx)
        event = self._events[idx]
        while not event.wait(0.2):
            if stop.is_set():
                raise Cancelled("stopped while waiting for the source image")
        key, error = self._results[idx]
        if key is None and stop.is_set():
            raise Cancelled("stopped before the source image was made")
        if key is None:
            raise ProviderError(f"source image {idx} failed: {error}", provider_code="source_image_failed")
        return idx, key


class Runner:
    def __init__(
        self,
        store: Store,
        home: Home,
        *,
        listener: Listener | None = None,
        env: dict | None = None,
        providers: dict[str, Provider] | None = None,
        include_refused: bool = False,
        cancel_check: Callable[[str], bool] | None = None,
        storage: "Storage | None" = None,
    ):
        self.store = store
        # Cluster mode: cancel_check(generation_id) says whether `aigen cancel`
        # was asked (read from the store, throttled by the caller); providers
        # see it through the reporter's should_stop. None: never (embedded).
        self.cancel_check = cancel_check
        self._gen_id: str | None = None
        # Where kept files go (aigen.storage): the home's folder by default, S3 with AIGEN_STORAGE_URL.
        # (Imported here: `aigen status` imports this module and must load no storage code.)
        from aigen.storage import from_config
        from aigen.storage.local import LocalStorage

        if storage is None:
            storage = from_config(home.path, env)
        self.storage = storage
        # The home's folder (or another local root): files are checked next to their final name and renamed
        # into place, as always. Otherwise they are checked in a local scratch folder and uploaded.
        self._local = isinstance(storage, LocalStorage)
        # False: assets a provider refused stay failed (`aigen retry` without
        # --include-refused); True: they are submitted again, as a new job.
        self.include_refused = include_refused
        self.home = home
        self.listener = listener
        self.env = env
        self.providers: dict[str, Provider] = dict(providers or {})
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.no_space: NoSpace | None = None
        self.sources: SourceImages | None = None
        self._caps: dict[str, int] = {}
        # Each provider's slots (provider_pool) while run() uses the pools; None for run_asset (the cluster's
        # queue holds the caps there).
        self._slots: dict[str, threading.BoundedSemaphore] | None = None

    def cancel_requested(self) -> bool:
        if self.cancel_check is None or self._gen_id is None:
            return False
        try:
            return bool(self.cancel_check(self._gen_id))
        except Exception:  # a read that failed is not a cancel
            log.debug("could not read the cancel flag", exc_info=True)
            return False

    def _emit(self, asset: dict, state: str, fraction: float | None, error: str | None) -> None:
        if self.listener is not None:
            try:
                self.listener(asset, state, fraction, error)
            except Exception:  # a display bug must not fail the work
                log.debug("listener failed", exc_info=True)

    def provider(self, name: str) -> Provider:
        with self._lock:
            if name not in self.providers:
                self.providers[name] = get_provider(name, env=self.env, home=self.home.path)
            return self.providers[name]

    # -- one generation -------------------------------------------------------
    def run(self, gen_id: str) -> RunResult:
        with run_lock(self.home, gen_id):
            gen = self.store.get_generation(gen_id)
            # Each provider's cap (AIGEN_<NAME>_CONCURRENCY, config.toml, its
            # default), read before anything changes: a bad setting is an error
            # here, not half-way through the run.
            self._caps = {name: self.provider(name).concurrency_cap()[0]
                          for name in {a["provider"] for a in self.store.assets(gen_id)}}
            todo = self.store.reopen_generation(gen_id, worker_pid=os.getpid(),
                                                skip_refused=not self.include_refused)
            directory = self.work_dir(gen)
            directory.mkdir(parents=True, exist_ok=True)
            remove_stale_parts(directory)
            for asset in self.store.assets(gen_id):
                if asset["status"] == "done":
                    self._emit(asset, "done", 1.0, None)
            for asset in todo:
                self._emit(asset, "queued", 0.0, None)
            options = gen.get("options") or {}
            self.sources = None
            if options.get("video_from_images") and gen.get("image_count"):
                self.sources = SourceImages(self.home, self.store.assets(gen_id), int(gen["image_count"]))
            self.no_space = None
            try:
                self._run_assets(gen, todo, directory)
            except NoSpace as e:
                self.no_space = self.no_space or e
            if self.no_space is not None:
                raise NoSpace(
                    f"{self.no_space.message}: generation {gen_id} stopped, what was made is kept",
                    hint=f"free some space, then complete it with `aigen retry {gen_id}`",
                )
            if not self.stop.is_set():
                self.store.finalize_generation(gen_id)
            return RunResult(self.store.get_generation(gen_id), self.store.assets(gen_id))

    # -- one asset, alone (cluster mode: one queued job) --------------------
    def run_asset(self, gen_id: str, asset_id: int) -> str:
        """Make one asset of a generation, as a cluster worker's job; return its status after.

        The same path as a run's thread (`_run_one`), without the run lock or
        the pools: the job queue holds the caps. The asset's row says what an
        earlier attempt left (money rules on a takeover):

        * done: nothing to do (the job was recovered after it finished);
        * a saved provider job id: the provider polls that job, never creates it again;
        * `running` without a job id (the worker making it died): a free
          provider (`local`) simply makes it again; a paid one may have made and
          billed it, so it is failed, not sent again (the user decides with `aigen retry`).
        """
        self._gen_id = gen_id
        gen = self.store.get_generation(gen_id)
        asset = self.store.get_asset(asset_id)
        if asset is None:
            raise AigenError(f"asset {asset_id} of generation {gen_id} does not exist")
        if asset["status"] in ("done", "failed"):
            return asset["status"]
        provider = self.provider(asset["provider"])
        if asset["status"] == "running" and not asset.get("provider_job_id") and not getattr(provider, "free", False):
            msg = (f"the worker making it stopped mid-call: {provider.name} may have made and billed it; not retried "
                   f"so it is not paid for twice (make it again with `aigen retry {gen_id}`)")
            self.store.fail_asset(asset_id, msg, code="worker_lost")
            self._emit(asset, "failed", None, msg)
            return "failed"
        if self.cancel_requested():
            return asset["status"]
        directory = self.work_dir(gen)
        directory.mkdir(parents=True, exist_ok=True)
        options = gen.get("options") or {}
        self.sources = None
        if options.get("video_from_images") and gen.get("image_count") and asset["kind"] == "video":
            # The images were made first (the generation's workflow waits for them).
            self.sources = SourceImages(self.home, self.store.assets(gen_id), int(gen["image_count"]))
        self.no_space = None
        self._run_one(gen, asset, directory)
        row = self.store.get_asset(asset_id) or asset
        if self.no_space is not None:
            raise self.no_space
        return row["status"]

    def _run_assets(self, gen: dict, todo: list[dict], directory: Path) -> None:
        futures: set[Future] = set()
        if self.sources is None:
            # Longest jobs first: videos take several times as long as images, so
            # starting them first keeps every worker busy to the end instead of
            # leaving the last video alone on one core (bench/fig2_local_renderer.py).
            # With --video-from-images the images must go first: videos wait on them.
            todo = sorted(todo, key=lambda a: (a["kind"] != "video", a["idx"]))
        try:
            self._slots = {}
            for asset in todo:
                pool, self._slots[asset["provider"]] = provider_pool(asset["provider"], self._caps[asset["provider"]])
                futures.add(pool.submit(self._run_one, gen, asset, directory))
            pending = futures
            while pending:
                # A timeout keeps the main thread responsive to Ctrl-C.
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        f.result()  # _run_one raises only when the database itself cannot be written
                    except (NoSpace, DatabaseUnavailable):
                        # Stop the others and wait for them, so no thread still writes when the lock goes.
                        self.stop.set()
                        wait(pending)
                        raise
        except KeyboardInterrupt:
            self.stop.set()
            for f in futures:
                f.cancel()
            # Keep the run lock until the assets already started have stopped:
            # providers notice the stop within moments (between frames, between
            # polls). Leaving earlier would let `aigen retry` start on the same
            # assets while these threads still write them. A second Ctrl-C leaves
            # at once (the lock goes with this process anyway when it exits).
            log.warning("stopping: waiting for the assets already started to stop")
            wait([f for f in futures if not f.cancelled()])
            raise

    def _run_one(self, gen: dict, asset: dict, directory: Path) -> None:
        try:
            self._run_one_inner(gen, asset, directory)
        finally:
            if self.sources is not None and asset["kind"] == "image":
                # Always settle, or the videos made from this image would wait forever.
                try:
                    row = self.store.get_asset(asset["id"]) or asset
                except Exception:
                    log.warning("could not read image %s after its run", asset["idx"], exc_info=True)
                    row = {**asset, "status": "failed", "error": "its state could not be read back"}
                self.sources.settle(row)

    def _run_one_inner(self, gen: dict, asset: dict, directory: Path) -> None:
        if self.stop.is_set():
            return
        try:
            self._make(gen, asset, directory)
        except Cancelled:
            # Left queued: the next `aigen retry` picks it up (an async job id, if
            # any, is already saved, so it will be polled, not paid for again).
            self.store.requeue_asset(asset["id"])
            self._emit(asset, "queued", None, "stopped")
        except ProviderError as e:
            self.store.fail_asset(asset["id"], e.message, code=e.provider_code or e.code,
                                  refused=isinstance(e, Refused))
            self._emit(asset, "failed", None, e.message)
        except MediaCheckError as e:
            msg = f"the file received is not valid: {e.message}"
            self.store.fail_asset(asset["id"], msg, code=e.code)
            self._emit(asset, "failed", None, msg)
        except NoSpace as e:
            self._no_space(asset, e)
        except AigenError as e:
            self.store.fail_asset(asset["id"], e.message, code=e.code)
            self._emit(asset, "failed", None, e.message)
        except OSError as e:
            known = describe_os_error(e, directory)
            if known is None:
                # A fault of the machine (an I/O error, a permission), not a bug: name the file and the cause.
                log.warning("asset %s: %s", asset["id"], e)
                msg = (f"cannot use {e.filename or directory}: {e.strerror or e} (check the disk and the "
                       f"permissions of {directory}, then `aigen retry`)")
                self.store.fail_asset(asset["id"], msg, code="os_error")
                self._emit(asset, "failed", None, msg)
            elif isinstance(known, NoSpace):
                self._no_space(asset, known)
            else:
                self.store.fail_asset(asset["id"], known.message, code=known.code)
                self._emit(asset, "failed", None, known.message)
        except Exception as e:  # a bug or an unexpected library error: record it, keep going
            self._internal(asset, e)

    def _internal(self, asset: dict, e: BaseException) -> None:
        log.error("asset %s failed unexpectedly", asset["id"], exc_info=e)
        msg = f"internal error: {type(e).__name__}: {e}"
        self.store.fail_asset(asset["id"], msg, code="internal")
        self._emit(asset, "failed", None, msg)

    def _no_space(self, asset: dict, e: NoSpace) -> None:
        """No space for a file: say so on the asset and start nothing more (each would fail the same
        way, and a paid one would be paid for nothing); the run then ends with NoSpace, resumable."""
        with self._lock:
            if self.no_space is None:
                self.no_space = e
        self.stop.set()
        self.store.fail_asset(asset["id"], e.message, code=e.code)
        self._emit(asset, "failed", None, e.message)

    def work_dir(self, gen: dict) -> Path:
        """The local folder where this generation's files are written and checked: the generation's own
        folder with local storage (files are renamed into place from there), else a scratch folder."""
        if self._local:
            return self.storage.root / "generated_content" / gen["user_id"] / gen["id"]
        return scratch_dir(self.home, gen)

    def _final_keys(self, gen: dict, asset: dict) -> list[str]:
        from aigen.storage import content_key

        stem = f"{asset['kind']}_{asset['idx']}"
        exts = ("mp4",) if asset["kind"] == "video" else ("png", "jpg")
        return [content_key(gen["user_id"], gen["id"], f"{stem}.{ext}") for ext in exts]

    def _stored_copy(self, key: str, directory: Path) -> tuple[Path, bool] | None:
        """A local file with the bytes stored under key, and whether it is a downloaded copy to remove;
        None when nothing is stored there."""
        if self._local:
            path = self.storage.path_of(key)
            return (path, False) if path.exists() else None
        if not self.storage.exists(key):
            return None
        tmp = temp_path_for(directory / key.rsplit("/", 1)[-1])
        try:
            download_to(self.storage, key, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, True

    def _discard(self, key: str) -> None:
        if self._local:
            self.storage.path_of(key).unlink(missing_ok=True)
        else:
            self.storage.delete(key)

    def _make(self, gen: dict, asset: dict, directory: Path) -> None:
        # A run killed between storing the file and the database update left a
        # complete, checked file under its final key: keep it rather than pay
        # again. From S3 it is downloaded and checked exactly as a local file is
        # (the upload is atomic, so what exists is whole; the check also gives
        # the sizes the row needs). Rare: once per asset per crash.
        provider_exact = None
        if not self._local:
            # A file paid for and checked whose upload failed in an earlier run waits in the scratch folder
            # under its final name: check it again and upload it, without calling the provider.
            for key in self._final_keys(gen, asset):
                kept = directory / key.rsplit("/", 1)[-1]
                if not kept.is_file():
                    continue
                if provider_exact is None:
                    provider_exact = self.provider(asset["provider"]).guarantees_size
                try:
                    info = self._check(asset, kept, exact=provider_exact)
                except MediaCheckError:
                    log.warning("asset %s: the file kept in %s is not valid; it is made again", asset["id"], kept)
                    kept.unlink(missing_ok=True)
                    continue
                self._keep(gen, asset, key, kept, info, directory, upload=True)
                return
        for key in self._final_keys(gen, asset):
            found = self._stored_copy(key, directory)
            if found is None:
                continue
            local, downloaded = found
            try:
                if provider_exact is None:
                    provider_exact = self.provider(asset["provider"]).guarantees_size
                try:
                    info = self._check(asset, local, exact=provider_exact)
                except MediaCheckError:
                    self._discard(key)
                    continue
                self._keep(gen, asset, key, local, info, directory)
            finally:
                if downloaded:
                    local.unlink(missing_ok=True)
            return

        extra: dict = {}
        source_tmp: Path | None = None
        if self.sources is not None and asset["kind"] == "video":
            if asset.get("provider_job_id"):
                # Its job was created from the image in an earlier run, so the image
                # is done: no waiting; the path still matters if the provider must
                # replace a job that failed.
                found_src = self.sources.ready(asset["idx"])
            else:
                found_src = self.sources.wait(asset["idx"], self.stop)
            if found_src is not None:
                idx, src_key = found_src
                if self._local:
                    src = self.storage.path_of(src_key)
                else:
                    # The provider reads a local file: a copy of the image from S3, removed after this video.
                    src = source_tmp = temp_path_for(directory / f"source_{src_key.rsplit('/', 1)[-1]}")
                    try:
                        download_to(self.storage, src_key, src)
                    except BaseException:
                        src.unlink(missing_ok=True)
                        raise
                extra = {"source_image": str(src), "source_image_index": idx}
        try:
            self._generate(gen, asset, directory, extra)
        finally:
            if source_tmp is not None:
                source_tmp.unlink(missing_ok=True)

    def _slot(self, asset: dict) -> threading.BoundedSemaphore | None:
        """Take one of the provider's slots (the cap on its calls) for this asset's call; None when run()'s
        pools are not in use (run_asset). Raises Cancelled when the run stops while it waits."""
        slot = (self._slots or {}).get(asset["provider"])
        if slot is None:
            return None
        while not slot.acquire(timeout=0.2):
            if self.stop.is_set():
                raise Cancelled("stopped while waiting for the provider")
        if self.stop.is_set():  # the slot came free as the run stopped: start nothing new
            slot.release()
            raise Cancelled("stopped while waiting for the provider")
        return slot

    def _generate(self, gen: dict, asset: dict, directory: Path, extra: dict) -> None:
        slot = self._slot(asset)
        try:
            out, provider, tmp = self._call(gen, asset, directory, extra)
        finally:
            if slot is not None:
                slot.release()
        self._finish(gen, asset, directory, out, provider, tmp)

    def _call(self, gen: dict, asset: dict, directory: Path, extra: dict) -> tuple[AssetOutput, Provider, Path]:
        """The provider's call, in one of its slots: the asset is `running` from here. Returns what the provider
        said, the provider, and the temporary file it wrote (removed here if the call fails)."""
        self.store.start_asset(asset["id"])
        self._emit(asset, "running", 0.0, None)
        provider = self.provider(asset["provider"])
        req = AssetRequest(
            kind=asset["kind"],
            prompt=gen["prompt"],
            index=asset["idx"],
            seed=asset["seed"],
            width=asset["width"],
            height=asset["height"],
            generation_id=gen["id"],
            model=asset["model"],
            duration=asset["duration"],
            fps=asset["fps"] or 24,
            provider_job_id=asset.get("provider_job_id"),
            options={**(gen.get("options") or {}), "directory": str(directory), **extra,
                     **({"resubmit_refused": True} if self.include_refused else {})},
        )
        tmp = temp_path_for(directory / f"{asset['kind']}_{asset['idx']}")
        try:
            return provider.generate(req, tmp, _AssetReporter(self, asset)), provider, tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _finish(self, gen: dict, asset: dict, directory: Path, out: AssetOutput, provider: Provider,
                tmp: Path) -> None:
        """Check the file the provider wrote to `tmp`, put it in place and record it (outside the slot)."""
        stem = f"{asset['kind']}_{asset['idx']}"
        try:
            ext = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "mp4": "mp4"}.get(out.format)
            if ext is None:
                raise MediaCheckError(f"unsupported format {out.format!r} from {provider.name}")
            info = self._check(asset, tmp, exact=provider.guarantees_size)
            from aigen.storage import content_key

            key = content_key(gen["user_id"], gen["id"], f"{stem}.{ext}")
            if out.model:
                info["model"] = out.model
            if out.cost is not None:
                info["cost"] = out.cost
            if self._local:
                final = self.storage.path_of(key)
                place(tmp, final)
            else:
                # Object storage: the checked file is first renamed to its final name in the scratch folder
                # (atomic, as in the home), so a failed upload leaves it there for `aigen retry` and the provider
                # is not paid again. The row's facts (and the poster) come from it; it is then uploaded (atomic
                # for readers) and removed; the row is written after the upload.
                kept = directory / key.rsplit("/", 1)[-1]
                place(tmp, kept)
                self._keep(gen, asset, key, kept, info, directory, upload=True)
                return
        finally:
            tmp.unlink(missing_ok=True)
        self._keep(gen, asset, key, final, info, directory)

    def _check(self, asset: dict, path: Path, *, exact: bool) -> dict:
        """Check the file decodes; return its real size (and length), with a note when it differs from the ask.

        `exact` (the provider guarantees the size: Provider.guarantees_size)
        makes another size an error. Without it, a valid file of another size
        was paid for and is kept, with its real size and a note.
        """
        from aigen.media import probe

        if asset["kind"] == "image":
            im = probe.probe_image(path, keep_pixels=True)
            if im.format not in ("png", "jpeg"):
                raise MediaCheckError(f"expected a PNG or JPEG image, got {im.format}")
            if exact and (im.width, im.height) != (asset["width"], asset["height"]):
                raise MediaCheckError(
                    f"image is {im.width}x{im.height}, expected {asset['width']}x{asset['height']}"
                )
            # The previews are made from the pixels decoded here, not from a second decode of the file.
            info = {"width": im.width, "height": im.height, _PICTURE: im.pixels}
        else:
            # The check decodes the first second anyway (its sample): the frame shown at
            # POSTER_AT_S comes back with it and becomes the poster, without a second decode.
            if exact:
                from aigen.media.video import frame_count

                frames = frame_count(asset["duration"], asset["fps"]) if asset["duration"] and asset["fps"] else None
                vi = probe.check_video(
                    path, width=asset["width"], height=asset["height"], duration=asset["duration"],
                    frames=frames, frame_at=POSTER_AT_S,
                )
            else:
                vi = probe.check_video(path, frame_at=POSTER_AT_S)
            info = {"width": vi.width, "height": vi.height, "duration": round(vi.duration, 3),
                    "fps": round(vi.fps)}
            if vi.frame is not None:
                info[_POSTER_FRAME] = vi.frame
        note = size_note(asset, info)
        if note:
            info["note"] = note
        return info

    def _keep(self, gen: dict, asset: dict, key: str, local: Path, info: dict, directory: Path, *,
              upload: bool = False) -> None:
        """Record a checked file: `local` holds the bytes stored under `key` (or, with `upload`, to be
        stored there now, before the row says it is done)."""
        info = dict(info, path=key, bytes=local.stat().st_size, sha256=sha256_file(local))
        frame = info.pop(_POSTER_FRAME, None)
        picture = info.pop(_PICTURE, None)
        if asset["kind"] == "video":
            self._poster(local, key, directory, info, frame)
        else:
            info.update(self._thumbs(local, key, directory, picture))
        if upload:
            from aigen.storage import StorageError

            try:
                self.storage.put_file(local, key)
            except StorageError as e:
                # put_file leaves the file where it was on failure: it stays under its final name.
                raise self._upload_pending(gen, asset, local, info, e) from None
        self.store.complete_asset(asset["id"], info)
        asset.update(info, status="done")
        self._emit(asset, "done", 1.0, None)

    def _upload_pending(self, gen: dict, asset: dict, kept: Path, info: dict, e: AigenError) -> UploadPending:
        """The failure of an asset whose checked file could not be uploaded: the file stays in the scratch
        folder; what the provider said of it (model, cost) is saved on the row now, as it is not asked again."""
        fields = {k: info[k] for k in ("model", "cost") if info.get(k) is not None}
        if fields:
            try:
                with self.store.transaction() as db:
                    sets = ", ".join(f"{k} = ?" for k in fields)
                    db.conn.execute(f"UPDATE assets SET {sets} WHERE id = ?", [*fields.values(), asset["id"]])
            except Exception:  # the file is what matters; the row's model/cost are a detail
                log.warning("could not save the model and cost of asset %s", asset["id"], exc_info=True)
        reason = e.message.rstrip(".")
        return UploadPending(
            f"{asset['kind']} {asset['idx']} was made and checked, but its upload failed ({reason}). "
            f"The file is kept locally in {kept} and will be uploaded by `aigen retry {gen['id']}` on this "
            f"machine, without calling the provider again",
            hint=f"once the storage is reachable: aigen retry {gen['id']}",
        )

    def _thumbs(self, picture: Path, key: str, directory: Path, image=None) -> dict:
        """The gallery's previews of the file stored under `key`, from the local picture `picture`
        (the image, or a video's poster frame; `image` is it decoded, when the check kept it): the row's
        fields, or {} when they could not be made (not fatal: the gallery makes them when it first shows
        the file)."""
        from aigen.pipeline.thumbs import store_thumbnails

        try:
            return store_thumbnails(self.storage, picture, key, directory, image=image)
        except (AigenError, OSError) as e:
            log.warning("could not make the previews of %s: %s", key, getattr(e, "message", None) or e)
        except Exception:
            log.warning("could not make the previews of %s", key, exc_info=True)
        return {}

    def _poster(self, video: Path, video_key: str, directory: Path, info: dict, frame=None) -> None:
        """A poster frame for the gallery's <video poster> (info["poster_path"]), and the previews made from it;
        a failure here is not fatal.

        `frame` is the frame the check decoded at POSTER_AT_S; without it the video is decoded again.
        """
        from aigen.media.probe import make_poster, poster_image, write_poster

        stem = video_key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        key = video_key.rsplit("/", 1)[0] + f"/{stem}.poster.jpg"
        if self._local:
            poster = self.storage.path_of(key)
            tmp = temp_path_for(poster)
        else:
            poster = None
            tmp = temp_path_for(directory / f"{stem}.poster.jpg")
        try:
            picture = None
            if frame is not None:
                # The previews are made from this picture, not from the JPEG written of it.
                picture = poster_image(frame)
                write_poster(picture, tmp)
            else:
                make_poster(video, tmp, at_seconds=POSTER_AT_S)
            info.update(self._thumbs(tmp, video_key, directory, picture))
            if poster is not None:
                place(tmp, poster)
            else:
                self.storage.put_file(tmp, key)
            info["poster_path"] = key
        except (AigenError, OSError) as e:  # a known fault (the store refused, a full disk): one line
            log.warning("could not make a poster for %s: %s", video_key, getattr(e, "message", None) or e)
        except Exception:
            log.warning("could not make a poster for %s", video_key, exc_info=True)
        finally:
            tmp.unlink(missing_ok=True)


# The poster is the frame shown this far into a video (frame 0 is often a fade or a blank).
POSTER_AT_S = 1.0
# Key of the poster frame in the dict _check returns; _keep takes it out before the row is written.
_POSTER_FRAME = "_poster_frame"
# Key of an image's decoded pixels (from the check) in the same dict: the previews are made from them.
_PICTURE = "_picture"

# A video this much longer or shorter than asked gets a note (frame rounding is not a difference).
DURATION_TOLERANCE_S = 0.25


def size_note(asked: dict, got: dict) -> str | None:
    """'asked 1024x1024, got 512x512' (and the length for a video), or None when the file is as asked."""
    parts = []
    if asked.get("width") and asked.get("height") and (got["width"], got["height"]) != (asked["width"], asked["height"]):
        parts.append(f"asked {asked['width']}x{asked['height']}, got {got['width']}x{got['height']}")
    want, have = asked.get("duration"), got.get("duration")
    if asked.get("kind") == "video" and want and have is not None and abs(have - want) > DURATION_TOLERANCE_S:
        parts.append(f"asked {want:g} s, got {have:.1f} s")
    return "; ".join(parts) or None


def run_generation(store: Store, home: Home, gen_id: str, **kw) -> RunResult:
    return Runner(store, home, **kw).run(gen_id)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll a condition (used by tests and the detach path); returns whether it came true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
