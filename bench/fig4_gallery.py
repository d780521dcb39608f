"""Figure 4, gallery: page latency under 20 and 100 concurrent clients, and video bytes per second in Range requests.

Setup: a store with 1,000 generations of one user (real schema, executemany),
the real gallery run as `aigen serve --port 0` (waitress, 4 worker threads) on
127.0.0.1, and one real H.264 MP4 of about 32 MiB registered as an asset of
the newest generation (its row points to the file, with its size and sha256,
so /media/ID serves it after the ownership check). Both servers run in their
own processes, and the clients in this one: a client thread must not compete
with the server for the same interpreter lock.

Page latency: 20 client threads, each logged in with its own session on its
own keep-alive connection, request the first 10 pages of the gallery (GET
/?page=N) back to back, no think time (a closed loop: every client always has
a request in flight). Baseline: Python's `http.server` (ThreadingHTTPServer,
SimpleHTTPRequestHandler, HTTP/1.1 keep-alive, TCP_NODELAY) serving the same page's HTML
as a static file to the same 20 clients: the floor of a Python server on this
machine, without any of the work of a page (session, database, template,
event row). Target: p99 under 50 ms.

Many clients: 100 client threads, each logged in with its own session on its
own connection, as people would use it: a page, then a look at it (0.25-0.75
s, --think 0.5 on average), each starting at a random point of one think
time. Same baseline, same clients. Target: p99 under 50 ms. The same 100
clients with no think time at all (saturation) are printed as a note.

Media: one client fetches the file the way a <video> element does, with
open-ended Range requests (`bytes=N-`) from the start and from 7 seek points,
each answer read to the end; in fixed 1 MiB Range requests, one after
another; and whole (for the record); then 100 clients at once, each on its
own connection and session, each fetching 4 MiB from its own point in fixed
1 MiB Range requests. Targets: at least the baseline's bytes per second in
each of the three. The one-client comparisons run in --media-rounds rounds,
aigen and baseline back to back in a shuffled order; each round's ratio is
printed with its spread. Baseline: the same
requests to http.server serving the same file. SimpleHTTPRequestHandler ignores Range
(it answers 200 with the whole file), so the baseline handler adds single
Range support on top of it (seek, then its own copyfile of that many bytes):
the same requests and responses on both sides, a fair comparison. Whole-file
GETs are timed too, for the record.

Page weight and timing in a real browser: a second home with one page of 10
generations of 5 images (1024x1024 PNG, about 1.2 MB each) and 5 videos
(1280x720 H.264), made by the `local` provider (one generation, copied 9
times), served by `aigen serve`, loaded in headless Chromium (Debian's, through
Playwright) at 1280x800 and as a 390x844 phone at 3x. Measured from Chromium's
network log (the DevTools protocol's bytes on the wire, headers included,
cache off) up to network idle with nothing clicked or scrolled, and from
PerformanceObserver: cumulative layout shift and largest contentful paint.
Target: at most 1.5 MB, CLS under 0.02, LCP under 2.5 s. With --lighthouse
PATH (the `lighthouse` CLI from npm; CHROME_PATH defaults to
/usr/bin/chromium) the same page is also scored by Lighthouse, mobile and
desktop presets; target: performance 95 or more on both.

    python bench/fig4_gallery.py             # about a minute
    python bench/fig4_gallery.py --quick     # a few seconds, numbers meaningless
    python bench/fig4_gallery.py --lighthouse /path/to/node_modules/.bin/lighthouse
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from fractions import Fraction
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Check, HttpClient, Report, Stats  # noqa: E402

MiB = 2**20
# Passes over the file per round of the fixed-range comparison (twice until the fifth round: a round of
# ~45 ms, where one stall of the machine moved its ratio by a fifth).
PASSES = 4


class _Limited:
    """A file object that reads at most `left` bytes: copyfile() stops at the end of the range."""

    def __init__(self, f, left: int):
        self.f, self.left = f, left

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


class RangeHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler with keep-alive and one byte range, for a like-for-like baseline."""

    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle's algorithm on, each
    # keep-alive response waits ~40 ms for the client's delayed ACK, which
    # would make the baseline look slow for a reason that has nothing to do
    # with serving. Waitress sets TCP_NODELAY too.
    disable_nagle_algorithm = True
    _RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def send_head(self):
        m = self._RANGE.match(self.headers.get("Range") or "")
        if not m:
            return super().send_head()
        path = self.translate_path(self.path)
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start > end:
            f.close()
            self.send_error(416, "Range Not Satisfiable")
            return None
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return _Limited(f, end - start + 1)


class BaselineServer(ThreadingHTTPServer):
    # The listen backlog of `aigen serve` (waitress's 1024), not socketserver's 5: with 100 clients
    # connecting at once, a backlog of 5 drops SYNs, and the clients retry a second later.
    request_queue_size = 1024


def serve_baseline(directory: str) -> None:
    """The baseline server, run in its own process (`--baseline-server DIR`): prints its port, serves until killed."""
    server = BaselineServer(("127.0.0.1", 0), partial(RangeHandler, directory=directory))
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


class Server:
    """A server in a child process (so its threads do not share a GIL with the clients), stopped with SIGTERM."""

    def __init__(self, cmd: list[str], env: dict, log: Path):
        # stderr to a file, never a pipe nobody reads: waitress warns on every
        # queued request under load, and a full pipe would stall the server.
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
                                     cwd=benchlib.ROOT)
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            text += line
            try:
                info = json.loads(text)
            except ValueError:
                continue
            self.port = int(info["port"])
            return
        self.close()
        raise RuntimeError(f"{' '.join(cmd)} did not start: {text} {log.read_text()[-2000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()


def make_big_video(path: Path, target_bytes: int) -> int:
    """A valid H.264 MP4 of about target_bytes: one second of noise encoded once, its packets muxed again and again.

    Stream copy (no re-encoding) keeps this to a second or two; every copy
    starts with a keyframe, so the result decodes like any long clip.
    """
    import av
    import numpy as np

    from aigen.media.video import encode_frames

    w, h, fps = 640, 360, 24
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frames = [np.roll(base, 7 * i, axis=1) for i in range(fps)]
    clip = path.with_name("clip.mp4")
    encode_frames(iter(frames), clip, w, h, fps)
    per_copy = clip.stat().st_size
    copies = max(1, round(target_bytes / per_copy))
    with av.open(str(clip)) as src:
        template = src.streams.video[0]
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            ost = out.add_stream_from_template(template)
            step = None
            for k in range(copies):
                with av.open(str(clip)) as again:
                    stream = again.streams.video[0]
                    if step is None:
                        step = int(round(Fraction(1, 1) / stream.time_base))  # one second in ticks
                    for pkt in again.demux(stream):
                        if pkt.dts is None:
                            continue
                        pkt.pts += k * step
                        pkt.dts += k * step
                        pkt.stream = ost
                        out.mux(pkt)
    clip.unlink()
    return copies


def register_video(built: benchlib.BuiltStore, video: Path) -> int:
    """Point the first video asset of the user's newest generation at `video`; return its asset id."""
    data_hash = hashlib.sha256()
    with open(video, "rb") as fh:
        for block in iter(lambda: fh.read(MiB), b""):
            data_hash.update(block)
    with sqlite3.connect(built.home.db_path) as conn:
        gid = conn.execute("SELECT id FROM generations WHERE user_id = ? AND status = 'Completed' "
                           "ORDER BY created_at DESC LIMIT 1", (built.user,)).fetchone()[0]
        aid = conn.execute("SELECT id FROM assets WHERE generation_id = ? AND kind = 'video' AND idx = 1",
                           (gid,)).fetchone()[0]
        conn.execute("UPDATE assets SET path = ?, bytes = ?, sha256 = ?, poster_path = NULL WHERE id = ?",
                     (video.relative_to(built.home.path).as_posix(), video.stat().st_size, data_hash.hexdigest(),
                      aid))
    return aid


def closed_loop(port: int, clients: int, requests: int, paths: list[str], login_as: str | None,
                think_s: float = 0.0) -> tuple[list, float]:
    """`clients` threads, each on its own connection, each sending `requests` GETs, waiting `think_s` between.

    With think_s = 0 every client always has a request in flight (the
    strictest reading of "20 concurrent clients"). Returns every request's
    latency (s) and the wall time from the common start to the last answer.
    """
    import random

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        c = HttpClient(port)
        mine = []
        pause = random.Random(k)
        try:
            if login_as:
                c.login(login_as)
            # Connected and warm before the common start: connection set-up is not page latency.
            c.get(paths[k % len(paths)])
            ready.wait()
            if think_s:
                # People do not all click at the same instant: each starts at a random point of one
                # think time (else every round would open with a burst of `clients` requests at once).
                time.sleep(pause.uniform(0.0, 2.0) * think_s)
            for i in range(requests):
                path = paths[(k + i) % len(paths)]
                t0 = time.perf_counter()
                status, _, body = c.get(path)
                mine.append(time.perf_counter() - t0)
                if status != 200 or len(body) < 500:
                    raise RuntimeError(f"GET {path}: {status}, {len(body)} bytes")
                if think_s:
                    time.sleep(pause.uniform(0.5, 1.5) * think_s)
        except Exception as e:  # reported by the caller: a failed request is not a fast one
            errors.append(f"{type(e).__name__}: {e}")
            if not ready.broken:
                ready.abort()
        finally:
            c.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    return latencies, wall


def fetch_ranges(c: HttpClient, path: str, size: int, chunk: int) -> float:
    """Fetch the whole file in `chunk`-byte Range requests; returns the wall time."""
    t0 = time.perf_counter()
    got = 0
    for start in range(0, size, chunk):
        end = min(start + chunk, size) - 1
        status, headers, body = c.get(path, headers={"Range": f"bytes={start}-{end}"})
        if status != 206 or len(body) != end - start + 1:
            raise RuntimeError(f"Range {start}-{end} of {path}: {status}, {len(body)} bytes")
        got += len(body)
    dt = time.perf_counter() - t0
    assert got == size
    return dt


def fetch_seeks(c: HttpClient, path: str, size: int, points: int = 8) -> tuple[float, int]:
    """What a <video> element sends: open-ended `Range: bytes=N-` from several seek points.

    Each answer runs to the end of the file; returns (wall time, bytes moved).
    """
    t0 = time.perf_counter()
    got = 0
    for k in range(points):
        start = size * k // points
        status, _, body = c.get(path, headers={"Range": f"bytes={start}-"})
        if status != 206 or len(body) != size - start:
            raise RuntimeError(f"Range {start}- of {path}: {status}, {len(body)} bytes")
        got += len(body)
    return time.perf_counter() - t0, got


def fetch_whole(c: HttpClient, path: str, size: int) -> float:
    t0 = time.perf_counter()
    status, _, body = c.get(path)
    dt = time.perf_counter() - t0
    if status != 200 or len(body) != size:
        raise RuntimeError(f"GET {path}: {status}, {len(body)} bytes of {size}")
    return dt


def media_concurrent(port: int, clients: int, path: str, size: int, login_as: str | None, span: int,
                     chunk: int) -> tuple[int, float]:
    """`clients` threads, each on its own connection (and, logged in, its own session), each fetching `span`
    bytes of the file in `chunk`-byte Range requests from its own starting point, all at once.

    Returns (bytes moved, wall time from the common start to the last byte).
    """
    errors: list[str] = []
    moved = [0] * clients
    ready = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        c = HttpClient(port)
        try:
            if login_as:
                c.login(login_as)
            c.get(path, headers={"Range": "bytes=0-0"})  # connected, and the first view logged, before the start
            ready.wait()
            start = (k * span) % max(1, size - span)
            for a in range(start, start + span, chunk):
                b = min(a + chunk, size) - 1
                status, _, body = c.get(path, headers={"Range": f"bytes={a}-{b}"})
                if status != 206 or len(body) != b - a + 1:
                    raise RuntimeError(f"Range {a}-{b} of {path}: {status}, {len(body)} bytes")
                moved[k] += len(body)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            if not ready.broken:
                ready.abort()
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    return sum(moved), wall


BUDGET_BYTES = 1_500_000
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


def chromium() -> str | None:
    exe = os.environ.get("AIGEN_CHROMIUM") or "/usr/bin/chromium"
    return exe if os.path.exists(exe) else None


def browser_page(args, rep: Report, tmp: Path) -> None:
    """Page weight, CLS and LCP of a page of 10 generations in Chromium (and Lighthouse's score, when asked)."""
    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        rep.note("browser page: skipped (" + ("no Chromium" if exe is None else "no playwright package") + ")")
        return
    sys.path.insert(0, str(benchlib.ROOT / "tests"))
    from fakes.pages import PERF_OBSERVER, measure_load, realistic_generations

    from aigen.config import resolve_home
    from aigen.store import Store

    home = resolve_home(tmp / "home")
    home.ensure()
    store = Store(home.db_path)
    sizes = ("256x256", "320x240", 1.0) if args.quick else ("1024x1024", "1280x720", 2.0)
    t0 = time.perf_counter()
    realistic_generations(home, store, "alice", 10, image_size=sizes[0], video_size=sizes[1], duration=sizes[2])
    files = store.query("SELECT kind, sum(bytes) AS b, count(*) AS n FROM assets GROUP BY kind")
    store.close()
    shown = {r["kind"]: r for r in files}
    rep.note(f"browser page: 10 generations, images {sizes[0]} ({shown['image']['b'] / MiB:.1f} MiB of PNG in "
             f"all), videos {sizes[1]} {sizes[2]:g} s ({shown['video']['b'] / MiB:.1f} MiB), made in "
             f"{time.perf_counter() - t0:.1f} s")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(benchlib.ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("AIGEN_HOME", None)
    server = Server([sys.executable, "-m", "aigen", "--home", str(home.path), "serve", "--port", "0", "--json"],
                    env, tmp / "gallery.log")
    base = f"http://127.0.0.1:{server.port}"
    loads: dict[str, list[dict]] = {"desktop": [], "phone": []}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
            try:
                for name, viewport, scale in (("desktop", {"width": 1280, "height": 800}, 1),
                                              ("phone", {"width": 390, "height": 844}, 3)):
                    for _ in range(max(1, args.repeat)):
                        ctx = browser.new_context(viewport=viewport, device_scale_factor=scale)
                        try:
                            page = ctx.new_page()
                            page.goto(base + "/login")
                            page.fill("#user_id", "alice")
                            page.click("button[type=submit]")
                            page.wait_for_url(base + "/")
                            page.add_init_script(PERF_OBSERVER)
                            loads[name].append(measure_load(page, base + "/"))
                        finally:
                            ctx.close()
            finally:
                browser.close()
        if args.lighthouse:
            c = HttpClient(server.port)
            c.login("alice")
            cookie = c.cookies.get("aigen_session")
            c.close()
            scores = {preset: lighthouse(args.lighthouse, base + "/", cookie, preset, tmp)
                      for preset in ("mobile", "desktop")}
    finally:
        server.close()

    d, ph = loads["desktop"], loads["phone"]
    weight = max(m["bytes"] for m in d + ph)
    cls = max(m["cls"] or 0.0 for m in d + ph)
    rep.add(Check(
        name="gallery page weight in Chromium before any interaction (10 generations: 50 images, 50 videos)",
        measurement_label=f"bytes on the wire at 1280x800 ({len(d[0]['requests'])} requests; a 3x phone: "
                          f"{ph[0]['bytes'] / 1000:.0f} kB in {len(ph[0]['requests'])})",
        measurement=float(d[0]["bytes"] / 1000), unit="kB",
        baseline_label="the budget of issue 11 (1.5 MB)", baseline=BUDGET_BYTES / 1000,
        ratio=benchlib.ratio(weight, BUDGET_BYTES), ratio_label="heavier of the two loads / budget (lower is better)",
        target="<= 1.5 MB on both, and CLS < 0.02",
        met=weight <= BUDGET_BYTES and cls < 0.02,
        notes=[f"CLS: {max(m['cls'] or 0.0 for m in d):.4f} desktop, {max(m['cls'] or 0.0 for m in ph):.4f} phone",
               f"the full-size files behind the tiles: {(shown['image']['b'] + shown['video']['b']) / MiB:.1f} MiB "
               "(before previews, every image tile was its full PNG)"],
    ))
    lcp_d = Stats([m["lcp_ms"] for m in d], unit="ms")
    lcp_p = Stats([m["lcp_ms"] for m in ph], unit="ms")
    rep.add(Check(
        name="gallery page largest contentful paint in Chromium (PerformanceObserver, loopback, no throttling)",
        measurement_label=f"LCP at 1280x800 ({d[0]['lcp_element']})", measurement=lcp_d, unit="ms",
        baseline_label="the 'good' threshold of Core Web Vitals", baseline=2500.0,
        ratio=benchlib.ratio(max(lcp_d.median, lcp_p.median), 2500.0), ratio_label="slower median / 2.5 s",
        target="LCP < 2.5 s on both", met=max(lcp_d.median, lcp_p.median) < 2500.0,
        notes=[f"a 3x phone at 390x844: {lcp_p.describe('ms')} ({ph[0]['lcp_element']})"],
    ))
    rep.extra["browser_page"] = {"desktop": [{k: m[k] for k in ("bytes", "cls", "lcp_ms")} for m in d],
                                 "phone": [{k: m[k] for k in ("bytes", "cls", "lcp_ms")} for m in ph]}
    if not args.lighthouse:
        rep.note("Lighthouse: not run (--lighthouse PATH, e.g. node_modules/.bin/lighthouse after "
                 "`npm install lighthouse`)")
        return
    worst = min(s["score"] for s in scores.values())
    rep.add(Check(
        name="Lighthouse performance of the gallery page (mobile and desktop presets)",
        measurement_label="the lower of the two scores", measurement=float(worst), unit="points",
        baseline_label="the target of issue 11", baseline=95.0,
        ratio=benchlib.ratio(worst, 95.0), ratio_label="score / 95 (higher is better)",
        target=">= 95 on both, CLS < 0.02", met=worst >= 95 and max(s["cls"] for s in scores.values()) < 0.02,
        notes=[f"{preset}: {s['score']:.0f}; FCP {s['fcp']}, LCP {s['lcp']}, TBT {s['tbt']}, CLS {s['cls']:.3f}, "
               f"{s['bytes']}" for preset, s in scores.items()],
    ))
    rep.extra["lighthouse"] = scores


def lighthouse(cli: str, url: str, cookie: str | None, preset: str, tmp: Path) -> dict:
    """One Lighthouse run (performance only) of `url` with the session cookie; its score and metrics."""
    out = tmp / f"lighthouse-{preset}.json"
    cmd = [cli, url, "--only-categories=performance", "--output=json", f"--output-path={out}", "--quiet",
           "--chrome-flags=--headless=new " + " ".join(LAUNCH_ARGS)]
    if preset == "desktop":
        cmd.append("--preset=desktop")
    if cookie:
        cmd.append("--extra-headers=" + json.dumps({"Cookie": f"aigen_session={cookie}"}))
    env = dict(os.environ)
    env.setdefault("CHROME_PATH", chromium() or "/usr/bin/chromium")
    subprocess.run(cmd, check=True, env=env, timeout=600, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    a = data["audits"]
    return {"score": round(100 * (data["categories"]["performance"]["score"] or 0)),
            "fcp": a["first-contentful-paint"]["displayValue"], "lcp": a["largest-contentful-paint"]["displayValue"],
            "tbt": a["total-blocking-time"]["displayValue"], "cls": a["cumulative-layout-shift"]["numericValue"],
            "bytes": a["total-byte-weight"]["displayValue"], "lighthouse": data.get("lighthouseVersion")}


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=3)
    p.add_argument("--generations", type=int, default=1000, help="generations of the one user")
    p.add_argument("--clients", type=int, default=20, help="clients of the closed loop (no think time)")
    p.add_argument("--requests", type=int, default=50, help="page requests per client per round")
    p.add_argument("--many", type=int, default=100,
                   help="clients of the people-like run (with think time) and of the concurrent media run")
    p.add_argument("--many-requests", type=int, default=10, help="pages per client per round of the people-like run")
    p.add_argument("--video-mib", type=int, default=32, help="size of the served video")
    p.add_argument("--chunk-mib", type=float, default=1.0, help="size of each Range request")
    p.add_argument("--span-mib", type=int, default=4, help="bytes each client fetches in the concurrent media run")
    p.add_argument("--media-rounds", type=int, default=15, help="rounds of the one-client media comparisons")
    p.add_argument("--think", type=float, default=0.5, help="mean think time of the clients-as-people run (s)")
    p.add_argument("--lighthouse", metavar="PATH", default=os.environ.get("AIGEN_LIGHTHOUSE"),
                   help="the lighthouse CLI (npm install lighthouse): also score the page with it")
    p.add_argument("--baseline-server", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.baseline_server:
        serve_baseline(args.baseline_server)
        return 0
    if args.quick:
        args.generations, args.clients, args.requests, args.video_mib, args.repeat = 30, 4, 5, 2, 1
        args.think, args.many, args.many_requests, args.span_mib, args.media_rounds = 0.02, 6, 3, 1, 2
    chunk = int(args.chunk_mib * MiB)

    from aigen.web.server import THREADS

    rep = Report("fig4_gallery", "Figure 4: gallery (page latency under concurrency, video in Range requests)",
                 args, {"generations": args.generations, "clients": args.clients,
                        "requests_per_client": args.requests, "many_clients": args.many, "think_s": args.think,
                        "rounds": args.repeat, "media_rounds": args.media_rounds, "video_mib": args.video_mib,
                        "chunk_mib": args.chunk_mib, "waitress_threads": THREADS})
    rep.header()
    with benchlib.temp_dir("aigen-bench-fig4-") as tmp:
        built = benchlib.build_store(tmp / "home", generations=args.generations, users=1,
                                     user_generations=args.generations)
        rep.note(f"store: {built.describe()}")
        gen_dir = built.home.content_dir / built.user / "media"
        gen_dir.mkdir(parents=True)
        video = gen_dir / "video_1.mp4"
        t0 = time.perf_counter()
        copies = make_big_video(video, args.video_mib * MiB)
        size = video.stat().st_size
        from aigen.media.probe import probe_video

        info = probe_video(video)
        rep.note(f"video: {size / MiB:.1f} MiB, {info.codec} {info.width}x{info.height}, {info.duration:.0f} s "
                 f"({copies} copies of a 1 s clip, stream-copied), made in {time.perf_counter() - t0:.1f} s")
        asset_id = register_video(built, video)
        media_path = f"/media/{asset_id}"
        static_video = "/" + video.relative_to(built.home.path).as_posix()

        pages = [f"/?page={n}" for n in range(1, 11)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(benchlib.ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("AIGEN_HOME", None)
        gallery = Server([sys.executable, "-m", "aigen", "--home", str(built.home.path), "serve", "--port", "0",
                          "--json"], env, tmp / "gallery.log")
        try:
            baseline = Server([sys.executable, __file__, "--baseline-server", str(built.home.path)], env,
                              tmp / "baseline.log")
            try:
                # The static copy the baseline serves: the real first page, as the user sees it.
                c = HttpClient(gallery.port)
                c.login(built.user)
                status, _, html = c.get("/")
                if status != 200 or b"Your generations" not in html:
                    raise RuntimeError(f"GET / after login: {status} {html[:300]!r}")
                (built.home.path / "page.html").write_bytes(html)
                c.close()
                rep.note(f"gallery page: {len(html) / 1024:.0f} KiB of HTML, 10 generations of 10 assets each")

                import random

                shuffle = random.Random(4)
                sides = {"aigen": (gallery.port, pages, built.user), "baseline": (baseline.port, ["/page.html"], None)}
                lat = {"aigen": [], "baseline": []}
                walls = {"aigen": [], "baseline": []}
                many = {"aigen": [], "baseline": []}
                many_p99 = {"aigen": [], "baseline": []}
                for _ in range(args.repeat):
                    for name in shuffle.sample(list(sides), 2):
                        port, paths, who = sides[name]
                        samples, wall = closed_loop(port, args.clients, args.requests, paths, who)
                        lat[name] += samples
                        walls[name].append(len(samples) / wall)
                    # Many clients as people would be: a page, then a look at it (--think s on average).
                    for name in shuffle.sample(list(sides), 2):
                        port, paths, who = sides[name]
                        samples, _ = closed_loop(port, args.many, args.many_requests, paths, who, think_s=args.think)
                        many[name] += samples
                        many_p99[name].append(Stats(samples).quantile(0.99))
                # The same many clients with no think time at all (every one always waiting for a page): where
                # both servers saturate. Once, for the record.
                saturated = {}
                for name in shuffle.sample(list(sides), 2):
                    port, paths, who = sides[name]
                    samples, wall = closed_loop(port, args.many, max(3, args.many_requests), paths, who)
                    saturated[name] = (Stats(samples), len(samples) / wall)

                media = {k: [] for k in ("aigen", "baseline", "aigen_whole", "baseline_whole", "aigen_seek",
                                         "baseline_seek", "aigen_small", "baseline_small", "aigen_many",
                                         "baseline_many")}
                ca, cb = HttpClient(gallery.port), HttpClient(baseline.port)
                ca.login(built.user)
                fetch_ranges(ca, media_path, size, chunk)  # warm: the page cache holds the file for both
                fetch_ranges(cb, static_video, size, chunk)
                small = min(size, 4 * MiB)
                one = {
                    # Fixed ranges one after another (four times over the file per round, ~0.1 s, so that
                    # one stall of the machine does not decide a round): each request's fixed cost shows here.
                    "aigen": lambda: PASSES * size / sum(fetch_ranges(ca, media_path, size, chunk)
                                                         for _ in range(PASSES)),
                    "baseline": lambda: PASSES * size / sum(fetch_ranges(cb, static_video, size, chunk)
                                                            for _ in range(PASSES)),
                    "aigen_seek": lambda: (lambda dt, n: n / dt)(*fetch_seeks(ca, media_path, size)),
                    "baseline_seek": lambda: (lambda dt, n: n / dt)(*fetch_seeks(cb, static_video, size)),
                    "aigen_whole": lambda: size / fetch_whole(ca, media_path, size),
                    "baseline_whole": lambda: size / fetch_whole(cb, static_video, size),
                    # Small ranges: what each request costs apart from moving bytes.
                    "aigen_small": lambda: small / 65536 / fetch_ranges(ca, media_path, small, 65536),
                    "baseline_small": lambda: small / 65536 / fetch_ranges(cb, static_video, small, 65536),
                }
                for _ in range(max(args.media_rounds, 1)):
                    # aigen and baseline of each kind back to back, in a shuffled order, so that a burst of
                    # load from elsewhere lands on both; each round's ratio is kept.
                    for kind in shuffle.sample(["", "_seek", "_whole", "_small"], 4):
                        for name in shuffle.sample(["aigen", "baseline"], 2):
                            media[name + kind].append(one[name + kind]())
                ca.close()
                cb.close()
                span = min(size - chunk, args.span_mib * MiB)
                for _ in range(args.repeat):
                    for name in shuffle.sample(["aigen", "baseline"], 2):
                        port, path, who = ((gallery.port, media_path, built.user) if name == "aigen"
                                           else (baseline.port, static_video, None))
                        moved, wall = media_concurrent(port, args.many, path, size, who, span, chunk)
                        media[name + "_many"].append(moved / wall)
            finally:
                baseline.close()
        finally:
            gallery.close()

    la, lb = Stats(lat["aigen"]), Stats(lat["baseline"])
    p99a, p99b = la.quantile(0.99), lb.quantile(0.99)
    rate_a, rate_b = Stats(walls["aigen"], unit="req/s"), Stats(walls["baseline"], unit="req/s")
    rep.add(Check(
        name=f"gallery page latency, {args.clients} concurrent clients, closed loop",
        measurement_label=f"aigen GET /?page=1..10 ({la.n} requests; p99 {1000 * p99a:.1f} ms)",
        measurement=la, unit="ms",
        baseline_label=f"http.server, the same page as a static file ({lb.n} requests; p99 {1000 * p99b:.1f} ms)",
        baseline=lb,
        ratio=benchlib.ratio(p99a, p99b), ratio_label="p99 aigen / p99 baseline",
        target="p99 < 50 ms",
        met=p99a < 0.050,
        notes=[f"p50 {1000 * la.median:.1f} ms, p99 {1000 * p99a:.1f} ms (baseline p50 {1000 * lb.median:.1f} ms, "
               f"p99 {1000 * p99b:.1f} ms)",
               f"throughput {rate_a.median:.0f} pages/s (baseline {rate_b.median:.0f} req/s); in a closed loop "
               f"latency = clients / throughput, so p50 x throughput ~ {args.clients}"],
    ))
    rep.extra["page_latency_ms"] = {"aigen": {"p50": 1000 * la.median, "p99": 1000 * p99a},
                                    "baseline": {"p50": 1000 * lb.median, "p99": 1000 * p99b}}

    ta, tb = Stats(many["aigen"]), Stats(many["baseline"])
    p99ta, p99tb = ta.quantile(0.99), tb.quantile(0.99)
    rounds_p99 = Stats([1000 * v for v in many_p99["aigen"]], unit="ms")
    sat_a, sat_b = saturated["aigen"], saturated["baseline"]
    rep.add(Check(
        name=f"gallery page latency, {args.many} concurrent clients, {args.think:g} s think time",
        measurement_label=(f"aigen GET /?page=1..10, each client on its own connection and session, a page then "
                           f"a look of {args.think / 2:g}-{1.5 * args.think:g} s ({ta.n} requests; p99 "
                           f"{1000 * p99ta:.1f} ms)"),
        measurement=ta, unit="ms",
        baseline_label=f"http.server, the same page as a static file to the same clients ({tb.n} requests; p99 "
                       f"{1000 * p99tb:.1f} ms)",
        baseline=tb,
        ratio=benchlib.ratio(p99ta, p99tb), ratio_label="p99 aigen / p99 baseline",
        target="p99 < 50 ms",
        met=p99ta < 0.050,
        notes=[f"p50 {1000 * ta.median:.1f} ms, p99 {1000 * p99ta:.1f} ms over all rounds; each round's p99: "
               f"{rounds_p99.describe('ms')} (baseline p50 {1000 * tb.median:.1f} ms, p99 {1000 * p99tb:.1f} ms)",
               f"offered load about {args.many / (args.think + ta.median):.0f} pages/s; each client starts at a "
               "random point of one think time",
               f"the same {args.many} clients with no think time (saturation, not a target): aigen "
               f"{sat_a[1]:.0f} pages/s, p50 {1000 * sat_a[0].median:.0f} ms, p99 {1000 * sat_a[0].quantile(0.99):.0f} "
               f"ms; http.server {sat_b[1]:.0f} req/s, p50 {1000 * sat_b[0].median:.0f} ms, p99 "
               f"{1000 * sat_b[0].quantile(0.99):.0f} ms"],
    ))
    rep.extra["page_latency_many_ms"] = {"aigen": {"p50": 1000 * ta.median, "p99": 1000 * p99ta},
                                         "baseline": {"p50": 1000 * tb.median, "p99": 1000 * p99tb},
                                         "saturated_pages_per_s": {"aigen": sat_a[1], "baseline": sat_b[1]}}

    def mib(key: str) -> Stats:
        return Stats([v / MiB for v in media[key]], unit="MiB/s")

    def paired(a: str, b: str) -> Stats:
        # Each round's own ratio: aigen and baseline ran back to back in it.
        return Stats([x / y for x, y in zip(media[a], media[b])], unit="x")

    def spread(st: Stats) -> str:
        return f"median {st.median:.2f}, min {st.min:.2f}, max {st.max:.2f}, IQR {st.q1:.2f}-{st.q3:.2f}"

    sa, sb = mib("aigen_seek"), mib("baseline_seek")
    # What a browser's <video> sends: open-ended ranges from the start and from each seek.
    rep.add(Check(
        name=f"video served in Range requests as a <video> element asks for it ({size / MiB:.0f} MiB file)",
        measurement_label=f"aigen GET /media/{asset_id}, Range: bytes=N- from 8 seek points, one client, MiB/s",
        measurement=sa, unit="MiB/s",
        baseline_label="http.server (+ single Range) serving the same file the same way, MiB/s",
        baseline=sb,
        ratio=benchlib.ratio(sa.median, sb.median), ratio_label="aigen / baseline (higher is better)",
        target="ratio >= 1.0 (at least the baseline's bytes per second)",
        met=sa.median >= sb.median,
        notes=[f"each round's ratio: {spread(paired('aigen_seek', 'baseline_seek'))}",
               f"whole-file GET: aigen {mib('aigen_whole').describe('MiB/s')}, http.server "
               f"{mib('baseline_whole').describe('MiB/s')}"],
    ))
    fa, fb = mib("aigen"), mib("baseline")
    small_a, small_b = Stats(media["aigen_small"], unit="req/s"), Stats(media["baseline_small"], unit="req/s")
    rep.add(Check(
        name=f"video in fixed {args.chunk_mib:g} MiB Range requests, one after another ({size / MiB:.0f} MiB file)",
        measurement_label=f"aigen GET /media/{asset_id}, Range: bytes=N-(N+{args.chunk_mib:g} MiB-1) over the "
                          f"whole file, {PASSES} times per round, one client, MiB/s",
        measurement=fa, unit="MiB/s",
        baseline_label="http.server (+ single Range) serving the same file the same way, MiB/s",
        baseline=fb,
        ratio=benchlib.ratio(fa.median, fb.median), ratio_label="aigen / baseline (higher is better)",
        target="ratio >= 1.0",
        met=fa.median >= fb.median,
        notes=[f"each round's ratio: {spread(paired('aigen', 'baseline'))}",
               f"64 KiB Range requests (what a request costs apart from its bytes): aigen {small_a.median:.0f} "
               f"req/s, http.server {small_b.median:.0f} req/s, ratio "
               f"{benchlib.ratio(small_a.median, small_b.median):.2f}"],
    ))
    ca_, cb_ = mib("aigen_many"), mib("baseline_many")
    rep.add(Check(
        name=f"video to {args.many} concurrent clients in fixed {args.chunk_mib:g} MiB Range requests",
        measurement_label=f"aigen, {args.many} clients each on its own connection and session, each fetching "
                          f"{span / MiB:.0f} MiB from its own point, all at once: bytes / wall, MiB/s",
        measurement=ca_, unit="MiB/s",
        baseline_label="http.server (+ single Range), the same clients and requests, MiB/s",
        baseline=cb_,
        ratio=benchlib.ratio(ca_.median, cb_.median), ratio_label="aigen / baseline (higher is better)",
        target="ratio >= 1.0",
        met=ca_.median >= cb_.median,
        notes=[f"each round's ratio: {spread(paired('aigen_many', 'baseline_many'))}"],
    ))
    with benchlib.temp_dir("aigen-bench-fig4-page-") as tmp:
        browser_page(args, rep, tmp)
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
