"""Figure 2, local renderer: the wall time of one 5+5 request on the offline `local` provider.

Measurement: the whole request, in-process, at the defaults of `aigen generate`
(5 images 1024x1024 PNG, 5 videos 1280x720, 4 s at 24 fps): `prepare`,
`create_generation` and `Runner.run`, which renders and encodes, checks every
file (images fully decoded; videos demuxed and frame-counted, every packet's
H.264 NAL units walked, the first second decoded), hashes it and makes each
video's poster frame. Everything a user waits for after start-up.

Baseline: pure encoding. The same 5 videos' frames, rendered beforehand (not
timed) into ready numpy arrays, encoded with `aigen.media.video.encode_frames`
(the same function, so the same encoder settings: libx264 veryfast crf 25,
High, yuv420p, faststart), the same size, fps and frame count, and with the
same parallelism as the pipeline (a pool of LocalProvider.concurrency workers).
The images are in the measurement only: the baseline is the encode cost of the
request's video frames, so everything else the request does (painting frames
and images, PNG compression, checks, posters, database) is what the ratio puts
a price on.

Measurement and baseline alternate in shuffled rounds; the target is judged on
the ratio of their medians. The block also gives the ratio within each round
(a burst of load from elsewhere hits both sides of a round), the CPU seconds of
each side (this process's, x264's threads included: what the request costs
whatever the machine's load) and the load average before and after.

    python bench/fig2_local_renderer.py            # about two minutes
    python bench/fig2_local_renderer.py --quick    # a few seconds, numbers meaningless
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Check, Report, Stats  # noqa: E402

PROMPT = "a red fox at dawn in a misty forest"
SEED = 1234
TARGET = 1.5  # measurement / baseline, at most


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=7)
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

        cpu: dict[str, list[float]] = {"request": [], "encode": []}

        def cpu_timed(name, fn):
            def run() -> None:
                c0 = time.process_time()
                fn()
                cpu[name].append(time.process_time() - c0)
            return run

        load_before = os.getloadavg()
        # One untimed request first: lazy imports and the pool's threads are start-up, not rendering.
        request()
        times = benchlib.interleaved({"request": cpu_timed("request", request),
                                      "encode": cpu_timed("encode", encode_pool)}, args.repeat, warmup=0)
        load_after = os.getloadavg()
        m, b = Stats(times["request"]), Stats(times["encode"])
        r = benchlib.ratio(m.median, b.median)
        paired = Stats([benchlib.ratio(x, y) for x, y in zip(times["request"], times["encode"])], unit="x")
        mc, bc = Stats(cpu["request"]), Stats(cpu["encode"])

        # Where the time goes: the CPU seconds of each piece of one asset, one piece at a time
        # (the encoder's own threads included).
        parts = {}
        t0 = time.process_time()
        img = render_image(args.prompt, asset_seed(SEED, "image", 1), 1, iw, ih)
        parts["paint one image"] = time.process_time() - t0
        t0 = time.process_time()
        save_png(img, tmp / "one.png")
        parts["save it as PNG"] = time.process_time() - t0
        t0 = time.process_time()
        probe.probe_image(tmp / "one.png")
        parts["check it (full decode)"] = time.process_time() - t0
        t0 = time.process_time()
        for _ in render_frames(args.prompt, asset_seed(SEED, "video", 1), 1, vw, vh, args.fps, args.duration):
            pass
        parts["paint one video's frames"] = time.process_time() - t0
        t0 = time.process_time()
        encode_one(0)
        parts["encode them"] = time.process_time() - t0
        t0 = time.process_time()
        info = probe.check_video(enc_dir / "v0.mp4", width=vw, height=vh, duration=args.duration,
                                 frames=n_frames, frame_at=1.0)
        parts["check the video (all packets read, first second decoded)"] = time.process_time() - t0
        t0 = time.process_time()
        probe.save_poster(info.frame, tmp / "poster.jpg")
        parts["poster from the frame the check decoded"] = time.process_time() - t0
        breakdown = "; ".join(f"{k} {1000 * v:.0f} ms" for k, v in parts.items())
        rep.extra["breakdown_ms"] = {k: round(1000 * v, 1) for k, v in parts.items()}

        load = lambda la: "/".join(f"{x:.2f}" for x in la)  # noqa: E731
        rep.extra["cpu_s"] = {"request": mc.to_dict(), "encode": bc.to_dict()}
        rep.extra["paired_ratios"] = paired.samples
        rep.extra["loadavg_before_after"] = [load_before, load_after]
        rep.add(Check(
            name="one 5+5 request on local, against pure encoding of its video frames",
            measurement_label="the whole request: prepare + create_generation + Runner.run (wall)",
            measurement=m,
            baseline_label=f"encode_frames of the 5 videos' ready frames, {workers} at a time (wall)",
            baseline=b,
            ratio=r, ratio_label="measurement / baseline (medians)",
            target=f"ratio <= {TARGET} on {os.cpu_count()} cores",
            met=r <= TARGET,
            notes=[
                f"ratio within each round: median {paired.median:.2f}x (min {paired.min:.2f}, max {paired.max:.2f}, "
                f"IQR {paired.q1:.2f}-{paired.q3:.2f}, n={paired.n})",
                f"CPU seconds (this process, encoder threads included): request {mc.describe()}; "
                f"encoding {bc.describe()}; ratio {benchlib.ratio(mc.median, bc.median):.2f}x",
                f"load average (1/5/15 min) before the rounds {load(load_before)}, after {load(load_after)}",
                f"CPU per asset, one piece at a time: {breakdown}",
            ],
        ))
        store.close()
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
