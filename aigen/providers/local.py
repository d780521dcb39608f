"""`local`: an offline procedural renderer, so aigen works with no key and no network.

It is not an AI model. It paints prompt-seeded procedural art (palettes and
compositions picked from the words of the prompt) and encodes short H.264
clips with real motion, deterministically for (prompt, seed, index). It exists
so a fresh install can exercise the whole system: store, pipeline, gallery and
notifications.
"""

from __future__ import annotations

import os
from pathlib import Path

from aigen.providers.base import AssetOutput, AssetRequest, Provider, Reporter


class LocalProvider(Provider):
    name = "local"
    kinds = frozenset({"image", "video"})
    description = "offline procedural renderer (not an AI model): prompt-seeded art and H.264 clips"
    key_env = ()
    default_models = {"image": "procedural-v1", "video": "procedural-v1"}
    # Rendering and encoding are CPU-bound; one job per core keeps every core busy
    # without thrashing.
    concurrency = max(2, os.cpu_count() or 2)
    # It renders exactly the asked size and length: a file that differs is broken.
    guarantees_size = True
    free = True  # nothing is paid: a job cut off by a dead worker is simply made again

    def generate(self, req: AssetRequest, dest: Path, reporter: Reporter) -> AssetOutput:
        if req.kind == "image":
            from aigen.media.art import render_image, save_png

            img = render_image(req.prompt, req.seed, req.index, req.width, req.height)
            save_png(img, dest)
            reporter.progress(1.0)
            return AssetOutput(format="png", model=self.default_models["image"], cost=0.0)
        from aigen.media.video import render_video

        def progress(fraction: float) -> None:
            reporter.progress(fraction)
            # Stop between frames when the run is being stopped (Ctrl-C): the
            # encoder then removes its partial file.
            check = getattr(reporter, "check_stop", None)
            if check is not None:
                check()

        render_video(
            req.prompt,
            req.seed,
            req.index,
            req.width,
            req.height,
            req.duration or 4.0,
            req.fps,
            dest,
            progress=progress,
        )
        return AssetOutput(format="mp4", model=self.default_models["video"], cost=0.0)
