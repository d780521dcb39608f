"""Small in-process providers for pipeline tests.

They are real Provider subclasses, made available to subprocesses through
AIGEN_PROVIDER_PLUGINS, and they record every call in a file named by
AIGEN_TEST_CALLS so a test can prove that done work was not redone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from aigen.errors import ProviderError, Refused
from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter


def _record(req: AssetRequest) -> None:
    path = os.environ.get("AIGEN_TEST_CALLS")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{req.generation_id} {req.kind} {req.index}\n")


def tiny_png(path: Path, width: int, height: int, seed: int) -> None:
    from PIL import Image

    colour = ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)
    Image.new("RGB", (width, height), colour).save(path, format="PNG")


class FlakyProvider(Provider):
    """Images whose index is listed in AIGEN_TEST_FAIL (e.g. "2,4") fail; the rest succeed."""

    name = "flaky"
    kinds = frozenset({"image", "video"})
    description = "test provider"
    default_models = {"image": "flaky-1", "video": "flaky-1"}
    concurrency = 3
    guarantees_size = True  # it writes exactly the asked size

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        _record(req)
        failing = {int(x) for x in os.environ.get("AIGEN_TEST_FAIL", "").split(",") if x.strip()}
        refusing = {int(x) for x in os.environ.get("AIGEN_TEST_REFUSE", "").split(",") if x.strip()}
        if req.index in refusing:
            raise Refused(self.name, "the prompt was flagged by moderation")
        if req.index in failing:
            raise ProviderError(f"flaky: server error 500 for {req.kind} {req.index}", provider=self.name,
                                provider_code="http_500", status=500)
        if req.kind == "video":
            from aigen.media.video import render_video

            render_video(req.prompt, req.seed, req.index, req.width, req.height, req.duration or 1, req.fps, dest)
            return AssetOutput(format="mp4", model="flaky-1")
        tiny_png(dest, req.width, req.height, req.seed)
        return AssetOutput(format="png", model="flaky-1")


class SlowProvider(Provider):
    """One image at a time, each taking AIGEN_TEST_DELAY seconds: gives a test time to kill the run."""

    name = "slow"
    kinds = frozenset({"image"})
    description = "test provider"
    default_models = {"image": "slow-1"}
    concurrency = 1
    guarantees_size = True

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        _record(req)
        # Write half a file first, so a kill mid-asset leaves a real partial file behind.
        with open(dest, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
            fh.flush()
            time.sleep(float(os.environ.get("AIGEN_TEST_DELAY", "0.5")))
        tiny_png(dest, req.width, req.height, req.seed)
        return AssetOutput(format="png", model="slow-1")


class GarbageProvider(Provider):
    """Returns bytes that are not an image: the pipeline must refuse to keep them."""

    name = "garbage"
    kinds = frozenset({"image", "video"})
    description = "test provider"
    default_models = {"image": "garbage-1", "video": "garbage-1"}
    concurrency = 2

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        _record(req)
        dest.write_bytes(b"<html>not an image</html>")
        return AssetOutput(format="png" if req.kind == "image" else "mp4")


class OffsizeProvider(Provider):
    """Like a cloud provider that makes its own size: valid files at half the asked size, videos 1 s longer.

    It does not guarantee the size (the default), so the pipeline must keep them with a note.
    """

    name = "offsize"
    kinds = frozenset({"image", "video"})
    description = "test provider"
    default_models = {"image": "offsize-1", "video": "offsize-1"}
    concurrency = 2

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        _record(req)
        w, h = req.width // 2 // 2 * 2, req.height // 2 // 2 * 2
        if req.kind == "video":
            from aigen.media.video import render_video

            render_video(req.prompt, req.seed, req.index, w, h, (req.duration or 1) + 1, req.fps, dest)
            return AssetOutput(format="mp4", model="offsize-1")
        tiny_png(dest, w, h, req.seed)
        return AssetOutput(format="png", model="offsize-1")


class PacedProvider(Provider):
    """A paid-like provider taking AIGEN_TEST_DELAY seconds per image, recording its calls in flight.

    Each call appends "begin <time> <pid> <generation> <index>" and then "end ..." to the
    file named by AIGEN_TEST_INFLIGHT (O_APPEND: safe across processes), so a test
    can count the most calls in flight at once over every worker process. It is not
    `free`: a call cut off by a dead worker may have been billed. It notices a stop
    (cancel, drain) between short sleeps.
    """

    name = "paced"
    kinds = frozenset({"image"})
    description = "test provider"
    default_models = {"image": "paced-1"}
    concurrency = 2
    guarantees_size = True

    @staticmethod
    def _mark(what: str, req: AssetRequest) -> None:
        path = os.environ.get("AIGEN_TEST_INFLIGHT")
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{what} {time.time():.6f} {os.getpid()} {req.generation_id} {req.index}\n".encode())
            finally:
                os.close(fd)

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        _record(req)
        self._mark("begin", req)
        try:
            end = time.monotonic() + float(os.environ.get("AIGEN_TEST_DELAY", "0.5"))
            while time.monotonic() < end:
                if getattr(reporter, "should_stop", lambda: False)():
                    from aigen.pipeline.run import Cancelled

                    raise Cancelled("stopped")
                time.sleep(min(0.02, max(0.0, end - time.monotonic())))
            tiny_png(dest, req.width, req.height, req.seed)
        finally:
            self._mark("end", req)
        return AssetOutput(format="png", model="paced-1")


class GatedProvider(Provider):
    """Images that are finished only when the test says so: image N waits until the file N exists in the
    folder AIGEN_TEST_GATE (checked every 20 ms; after AIGEN_TEST_GATE_TIMEOUT seconds, default 120, it
    fails). A test can then look at a run with some files made and others not, for as long as it needs."""

    name = "gated"
    kinds = frozenset({"image"})
    description = "test provider"
    default_models = {"image": "gated-1"}
    concurrency = 4
    guarantees_size = True

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        _record(req)
        gate = Path(os.environ["AIGEN_TEST_GATE"]) / str(req.index)
        end = time.monotonic() + float(os.environ.get("AIGEN_TEST_GATE_TIMEOUT", "120"))
        while not gate.exists():
            if time.monotonic() > end:
                raise ProviderError(f"gated: image {req.index} was never let through", provider=self.name)
            time.sleep(0.02)
        tiny_png(dest, req.width, req.height, req.seed)
        return AssetOutput(format="png", model="gated-1")


PLUGINS = ",".join(
    f"{n}=fakes.testproviders:{c}" for n, c in
    [("flaky", "FlakyProvider"), ("slow", "SlowProvider"), ("garbage", "GarbageProvider"),
     ("offsize", "OffsizeProvider"), ("paced", "PacedProvider"), ("gated", "GatedProvider")]
)
