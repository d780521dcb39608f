"""Figure 2, local renderer: the wall time of one 5+5 request on the offline `local` provider.

Measurement: the whole request, in-process, at the defaults of `aigen generate`
(5 images 1024x1024 PNG, 5 videos 1280x720, 4 s at 24 fps): `prepare`,
`create_generation` and `Runner.run`, which renders and encodes, checks every
file (images fully decoded, videos fully decoded and frame-counted), hashes it
and makes each video's poster frame. Everything a user waits for after start-up.

Baseline: pure encoding. The same 5 videos' frames, rendered beforehand (not
timed) into ready numpy arrays, encoded with `aigen.media.video.encode_frames`
(the same function, so the same encoder settings: libx264 veryfast crf 25,
High, yuv420p, faststart), the same size, fps and frame count, and with the
same parallelism as the pipeline (a pool of LocalProvider.concurrency workers).
The images are in the measurement only: the baseline is the encode cost of the
request's video frames, so everything else the request does (painting frames
and images, PNG compression, checks, posters, database) is what the ratio puts
a price on.

    python bench/fig2_local_renderer.py            # about a minute
    python bench/fig2_local_renderer.py --quick    # a few seconds, numbers meaningless
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Check, Report, Stats  # noqa: E402

PROMPT = "a red fox at dawn in a misty forest"
SEED = 1234


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=3)
    p.add_argument("--image-size", default="1024x1024")
    p.add_argument("--video-size", default="1280x720")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--prompt", default=PROMPT)
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.video_size, args.duration, args.repeat = "128x128", "128x72", 1.0, 1

    import numpy as np

    from aigen.config import resolve_home
    from aigen.media import probe
    from aigen.media.art import render_image, save_png
    from aigen.media.video import encode_frames, frame_count, render_frames
    from aigen.pipeline.plan import RequestSpec, asset_seed, prepare
    from aigen.pipeline.run import Runner
    from aigen.providers.local import LocalProvider
    from aigen.store import Store

    iw, ih = parse_size(args.image_size)
    vw, vh = parse_size(args.video_size)
    n_frames = frame_count(args.duration, args.fps)
    workers = LocalProvider.concurrency
    rep = Report("fig2_local_renderer", "Figure 2: local renderer (one 5+5 request on `local`)", args, {
        "images": f"5 x {iw}x{ih} PNG", "videos": f"5 x {vw}x{vh} {args.duration:g} s {args.fps} fps "
        f"({n_frames} frames)", "local_workers": workers, "repeat": args.repeat,
    })
    rep.header()

    with benchlib.temp_dir("aigen-bench-fig2-") as tmp:
        home = resolve_home(tmp / "home")
        home.ensure()
        store = Store(home.db_path)
        spec = dict(user_id="bench", prompt=args.prompt, image_provider="local", video_provider="local",
                    image_size=args.image_size, video_size=args.video_size, duration=args.duration, fps=args.fps,
                    seed=SEED)

        def request() -> None:
            gen, assets = prepare(RequestSpec(**spec), home=home.path)
            gid = store.create_generation(gen, assets)
            res = Runner(store, home).run(gid)
            if not res.ok:
                raise RuntimeError(f"the benchmark request failed: {res.generation.get('error')}")

        # The same frames the request's videos are made of: same prompt, seeds and indices.
        t0 = time.perf_counter()
        clips = [np.stack(list(render_frames(args.prompt, asset_seed(SEED, "video", i), i, vw, vh, args.fps,
                                             args.duration))) for i in range(1, 6)]
        rep.note(f"baseline frames rendered beforehand in {time.perf_counter() - t0:.1f} s "
                 f"({sum(c.nbytes for c in clips) / 2**20:.0f} MiB of RGB)")
        enc_dir = tmp / "encode"
        enc_dir.mkdir()

        def encode_one(i: int) -> None:
            encode_frames(iter(clips[i]), enc_dir / f"v{i}.mp4", vw, vh, args.fps, total=n_frames)

        def encode_pool() -> None:
            with ThreadPoolExecutor(workers) as ex:
                list(ex.map(encode_one, range(5)))

        def encode_sequential() -> None:
            for i in range(5):
                encode_one(i)

        # One untimed request first: lazy imports and the pool's threads are start-up, not rendering.
        request()
        times = benchlib.interleaved({"request": request, "encode": encode_pool, "encode_seq": encode_sequential},
                                     args.repeat, warmup=0)
        m, b, bs = Stats(times["request"]), Stats(times["encode"]), Stats(times["encode_seq"])
        r = benchlib.ratio(m.median, b.median)

        # Where the time goes, one piece at a time on one thread (CPU seconds per asset, roughly).
        parts = {}
        t0 = time.perf_counter()
        img = render_image(args.prompt, asset_seed(SEED, "image", 1), 1, iw, ih)
        parts["paint one image"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        save_png(img, tmp / "one.png")
        parts["save it as PNG"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe.probe_image(tmp / "one.png")
        parts["check it (full decode)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in render_frames(args.prompt, asset_seed(SEED, "video", 1), 1, vw, vh, args.fps, args.duration):
            pass
        parts["paint one video's frames"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        encode_one(0)
        parts["encode them"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe.check_video(enc_dir / "v0.mp4", width=vw, height=vh, duration=args.duration)
        parts["check the video (full decode)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe.make_poster(enc_dir / "v0.mp4", tmp / "poster.jpg")
        parts["poster frame"] = time.perf_counter() - t0
        breakdown = "; ".join(f"{k} {1000 * v:.0f} ms" for k, v in parts.items())
        rep.extra["breakdown_ms"] = {k: round(1000 * v, 1) for k, v in parts.items()}

        rep.add(Check(
            name="one 5+5 request on local, against pure encoding of its video frames",
            measurement_label="the whole request: prepare + create_generation + Runner.run (wall)",
            measurement=m,
            baseline_label=f"encode_frames of the 5 videos' ready frames, {workers} at a time (wall)",
            baseline=b,
            ratio=r, ratio_label="measurement / baseline",
            target=f"ratio <= 2.0 on {benchlib.os.cpu_count()} cores",
            met=r <= 2.0,
            notes=[
                f"the same encodes one after another: {bs.describe()} "
                f"(ratio against it {benchlib.ratio(m.median, bs.median):.2f}x)",
                f"single-thread breakdown per asset: {breakdown}",
            ],
        ))
        store.close()
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
