"""Figure 6, cluster mode: requests of 5 images served by 1, 2 and 4 `aigen worker` processes over DBOS.

Load: 50 requests of 5 images against a fake provider that takes 1 s per call
(tests/fakes/testproviders.py PacedProvider, which records every call's start and
end across processes), with a global cap of 10 (AIGEN_PACED_CONCURRENCY=10).

Baseline: the ideal set by the cap alone, 50 x 5 / 10 x 1 s = 25 s. The ratio
ideal / wall must be >= 0.90 with 2 and 4 workers, and the calls in flight never
above the cap. Also reported: enqueue-to-start latency on an idle cluster
(p50/p99 over single-image requests), the gap between a freed slot and the next
call under load, the CPU an idle worker burns, and the embedded pipeline on the
same load (one process, 50 Runners in threads, the provider's pool sized to the cap).

The PostgreSQL is a throwaway one (tests/fakes/cluster_services.py).

    python bench/fig6_cluster.py            # about 3 minutes
    python bench/fig6_cluster.py --quick    # under a minute, numbers meaningless
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(TESTS))
import benchlib  # noqa: E402
from benchlib import Check, Report, Stats  # noqa: E402

PLUGIN = "paced=fakes.testproviders:PacedProvider"


def read_calls(path: Path) -> list[tuple[str, float, int, str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, t, pid, gen, idx = line.split()
        out.append((what, float(t), int(pid), gen, int(idx)))
    return out


def _spans(calls) -> list[tuple[float, float]]:
    """(begin, end) of every finished call, matched by generation and index."""
    begun = {(c[3], c[4]): c[1] for c in calls if c[0] == "begin"}
    return [(begun[(c[3], c[4])], c[1]) for c in calls if c[0] == "end" and (c[3], c[4]) in begun]


def most_in_flight(calls) -> int:
    n = best = 0
    for what, *_ in sorted(calls, key=lambda c: (c[1], c[0] == "begin")):
        n += 1 if what == "begin" else -1
        best = max(best, n)
    return best


def refill_gaps(calls, cap: int) -> list[float]:
    """Under load: for each call that started while the cap was full just before, the wait since a slot freed."""
    events = sorted(calls, key=lambda c: (c[1], c[0] == "begin"))
    gaps, n, last_end = [], 0, None
    for what, t, *_ in events:
        if what == "end":
            n -= 1
            if n == cap - 1:
                last_end = t
        else:
            if n == cap - 1 and last_end is not None:
                gaps.append(t - last_end)
                last_end = None
            n += 1
    return gaps


def cpu_ticks(pid: int, children: bool = False) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime + stime (fields 14, 15 of stat), plus cutime + cstime of reaped children when asked
    return int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def postgres_ticks(port: int) -> int:
    """CPU ticks of the bench's PostgreSQL: its postmaster (with reaped backends) and live children."""
    master = None
    pids = [d.name for d in Path("/proc").iterdir() if d.name.isdigit()]
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"postgres") and b"-p" in cmd and str(port).encode() in cmd:
            master = int(pid)
            break
    if master is None:
        return 0
    total = cpu_ticks(master, children=True)
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == master:
            total += int(stat[11]) + int(stat[12])
    return total


def contention(logs: list[Path]) -> tuple[int, float]:
    """DBOS's "Contention detected" warnings in the workers' logs, and the largest polling interval they reached."""
    import re

    n, top = 0, 0.0
    for log in logs:
        for m in re.finditer(r"Contention detected .*?Increasing polling interval to ([0-9]+(?:\.[0-9]+)?)",
                             log.read_text(errors="replace")):
            n += 1
            top = max(top, float(m.group(1)))
    return n, top


class Cluster:
    def __init__(self, tmp: Path, url: str, env: dict):
        self.tmp = tmp
        self.url = url
        self.env = env
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int) -> None:
        for i in range(n):
            name = f"w{len(self.procs) + 1}"
            home = self.tmp / f"home-{name}" if _pg_store() else self.tmp / "shared"
            log = open(self.tmp / f"{name}.log", "ab")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "aigen", "--home", str(home), "worker", "--id", name, "--providers", "paced"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 90
        for i, p in enumerate(self.procs):
            log = self.tmp / f"w{i + 1}.log"
            while "serving" not in log.read_text(errors="replace"):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker w{i + 1} did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.05)
        time.sleep(0.5)  # its queue threads are up

    def stop(self) -> None:
        import signal

        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def _pg_store() -> bool:
    import aigen.store

    return hasattr(aigen.store, "open_store")


def main(argv=None) -> int:
    p = benchlib.parser(__doc__.split("\n\n")[0], repeat=1)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--images", type=int, default=5)
    p.add_argument("--call-seconds", type=float, default=1.0)
    p.add_argument("--cap", type=int, default=10)
    p.add_argument("--workers", default="1,2,4", help="worker counts to measure (comma-separated)")
    p.add_argument("--latency-samples", type=int, default=20)
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.images, args.call_seconds, args.cap = 4, 5, 0.2, 4
        args.workers, args.latency_samples = "2", 3
    counts = [int(x) for x in args.workers.split(",")]
    ideal = args.requests * args.images / args.cap * args.call_seconds

    rep = Report("fig6_cluster", "Figure 6: cluster mode (aigen worker over DBOS, global cap)", args, {
        "requests": args.requests, "images": args.images, "call_seconds": args.call_seconds, "cap": args.cap,
        "workers": args.workers,
    })
    rep.header()

    from fakes.cluster_services import start_postgres

    from aigen.config import resolve_home
    from aigen.pipeline.plan import RequestSpec, prepare

    import signal

    # SIGTERM ends the run through the finally blocks: the workers and the PostgreSQL are stopped.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    pg = start_postgres()
    try:
        with benchlib.temp_dir("aigen-bench-fig6-") as tmp:
            inflight = tmp / "inflight.txt"
            base_env = {**os.environ, "AIGEN_PROVIDER_PLUGINS": PLUGIN,
                        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
                        "AIGEN_PACED_CONCURRENCY": str(args.cap), "AIGEN_TEST_DELAY": str(args.call_seconds),
                        "AIGEN_TEST_INFLIGHT": str(inflight)}
            base_env.pop("AIGEN_HOME", None)
            base_env.pop("AIGEN_STORAGE_URL", None)
            os.environ.update({k: base_env[k] for k in ("AIGEN_PROVIDER_PLUGINS", "AIGEN_PACED_CONCURRENCY",
                                                        "AIGEN_TEST_DELAY", "AIGEN_TEST_INFLIGHT")})
            spec_kw = dict(user_id="bench", prompt="a red fox at dawn", images=args.images, videos=0,
                           image_provider="paced", image_size="64x64", notify_via=["none"])

            # -- embedded: one process, 50 Runners in threads -----------------------------
            from aigen.pipeline.run import Runner
            from aigen.store import Store

            ehome = resolve_home(tmp / "embedded")
            ehome.ensure()
            estore = Store(ehome.db_path)
            gids = []
            for _ in range(args.requests):
                gen, assets = prepare(RequestSpec(**spec_kw), home=ehome.path)
                gids.append(estore.create_generation(gen, assets))
            inflight.unlink(missing_ok=True)
            threads = [threading.Thread(target=lambda g=g: Runner(estore, ehome).run(g)) for g in gids]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            embedded_wall = time.perf_counter() - t0
            embedded_max = most_in_flight(read_calls(inflight))
            bad = [g for g in gids if estore.get_generation(g)["status"] != "Completed"]
            if bad:
                raise RuntimeError(f"embedded: {len(bad)} requests did not complete")
            estore.close()
            rep.note(f"embedded pipeline, same load: {embedded_wall:.2f} s wall ({ideal / embedded_wall:.2f} of "
                     f"ideal), most calls in flight {embedded_max}")

            # -- cluster: 1, 2, 4 workers ----------------------------------------------------
            results = {}
            idle_cpu: list[float] = []
            latencies: list[float] = []
            for n in counts:
                db = f"fig6_{n}_{int(time.time())}"
                import psycopg

                with psycopg.connect(pg.url, autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{db}"')
                url = pg.url.rsplit("/", 1)[0] + f"/{db}"
                env = {**base_env, "AIGEN_DATABASE_URL": url}
                os.environ["AIGEN_DATABASE_URL"] = url
                cluster = Cluster(tmp / f"c{n}", url, env)
                (tmp / f"c{n}").mkdir()
                from aigen.cluster.engine import Client, first_phase
                from aigen.cluster.worker import open_store

                chome = resolve_home(tmp / f"c{n}" / ("client" if _pg_store() else "shared"))
                store = open_store(chome, env)
                client = Client(url)
                try:
                    cluster.start(n)
                    # Idle CPU of each worker over 5 s (3 s in --quick).
                    span = 3.0 if args.quick else 5.0
                    t_a = {p.pid: cpu_ticks(p.pid) for p in cluster.procs}
                    time.sleep(span)
                    hz = os.sysconf("SC_CLK_TCK")
                    for p in cluster.procs:
                        idle_cpu.append((cpu_ticks(p.pid) - t_a[p.pid]) / hz / span)
                    # Enqueue-to-start on an idle cluster (first worker count only, to keep the run short).
                    if n == counts[0]:
                        for _ in range(args.latency_samples):
                            inflight.unlink(missing_ok=True)
                            gen, assets = prepare(RequestSpec(**{**spec_kw, "images": 1}), home=chome.path)
                            g = store.create_generation(gen, assets)
                            t_enq = time.time()
                            client.enqueue_generation(g, first_assets=first_phase(store, g))
                            end = time.monotonic() + 60
                            while not read_calls(inflight):
                                if time.monotonic() > end:
                                    raise RuntimeError("a request on an idle cluster did not start in 60 s")
                                time.sleep(0.002)
                            latencies.append(read_calls(inflight)[0][1] - t_enq)
                            while store.get_generation(g)["status"] == "Processing":
                                time.sleep(0.01)
                    # The load.
                    gids = []
                    for _ in range(args.requests):
                        gen, assets = prepare(RequestSpec(**spec_kw), home=chome.path)
                        gids.append(store.create_generation(gen, assets))
                    inflight.unlink(missing_ok=True)
                    logs = [cluster.tmp / f"w{i + 1}.log" for i in range(n)]
                    c_before = contention(logs)[0]
                    hz = os.sysconf("SC_CLK_TCK")
                    w_a = {p.pid: cpu_ticks(p.pid) for p in cluster.procs}
                    pg_a, m_a = postgres_ticks(pg.port), machine_busy_ticks()
                    t0 = time.perf_counter()
                    t0_wall = time.time()
                    for g in gids:
                        client.enqueue_generation(g, first_assets=first_phase(store, g))
                    enqueued_s = time.perf_counter() - t0
                    pending = set(gids)
                    deadline = time.monotonic() + 20 * ideal + 120
                    while pending and time.monotonic() < deadline:
                        pending = {g for g in pending if store.get_generation(g)["status"] == "Processing"}
                        time.sleep(0.05)
                    wall = time.perf_counter() - t0
                    w_cpu = [(cpu_ticks(p.pid) - w_a[p.pid]) / hz / wall for p in cluster.procs]
                    pg_cpu = (postgres_ticks(pg.port) - pg_a) / hz / wall
                    m_b = machine_busy_ticks()
                    machine = (m_b[0] - m_a[0]) / max(1, m_b[1] - m_a[1])
                    c_n, c_top = contention(logs)
                    if pending:
                        raise RuntimeError(f"{n} workers: {len(pending)} requests not final in time")
                    calls = read_calls(inflight)
                    begins = [(c[3], c[4]) for c in calls if c[0] == "begin"]
                    # Where the time beyond the ideal goes: before the first call, after the last one (the
                    # generations' workflows noticing and finalizing), and slots left empty in between.
                    first_begin = min((c[1] for c in calls if c[0] == "begin"), default=t0_wall) - t0_wall
                    last_end = max((c[1] for c in calls if c[0] == "end"), default=t0_wall) - t0_wall
                    busy = sum(e - b for b, e in _spans(calls))
                    failed = [g for g in gids if store.get_generation(g)["status"] != "Completed"]
                    results[n] = {
                        "wall": wall, "max": most_in_flight(calls), "calls": len(begins),
                        "unique": len(set(begins)), "failed": len(failed),
                        "workers_used": len({c[2] for c in calls}), "gaps": refill_gaps(calls, args.cap),
                        "contention_warnings": c_n - c_before, "max_polling_interval_s": c_top,
                        "worker_cpu": w_cpu, "postgres_cpu": pg_cpu, "machine_busy": machine,
                        "enqueue_s": enqueued_s, "first_call_s": first_begin, "tail_s": wall - last_end,
                        "empty_slot_s": args.cap * (last_end - first_begin) - busy,
                    }
                    rep.note(f"{n} worker(s): {wall:.2f} s wall, most in flight {results[n]['max']}, "
                             f"{len(begins)} calls for {args.requests * args.images} assets, "
                             f"{results[n]['workers_used']} worker(s) made calls; DBOS contention warnings "
                             f"{c_n - c_before} (largest polling interval {c_top:g} s); CPU under load: workers "
                             f"{', '.join(f'{100 * c:.0f}%' for c in w_cpu)}, PostgreSQL {100 * pg_cpu:.0f}% of a "
                             f"core, machine {100 * machine:.0f}% busy")
                finally:
                    client.close()
                    cluster.stop()
                    store.close()

            for n in counts:
                r = results[n]
                eff = benchlib.ratio(ideal, r["wall"])
                gaps = Stats(r["gaps"]) if r["gaps"] else None
                exact = r["calls"] == r["unique"] == args.requests * args.images and r["failed"] == 0
                need = 0.90 if n >= 2 else 0.0
                rep.add(Check(
                    name=f"{args.requests} requests x {args.images} images, {n} worker process(es), global cap {args.cap}",
                    measurement_label="wall from the first enqueue until every request is Completed",
                    measurement=r["wall"],
                    baseline_label=(f"ideal set by the cap: {args.requests} x {args.images} / {args.cap} x "
                                    f"{args.call_seconds:g} s"),
                    baseline=ideal,
                    ratio=eff, ratio_label="ideal / measurement: 1.00 = limited only by the global cap",
                    target=(f"ratio >= {need:.2f}, " if need else "reported (one worker), ")
                    + f"never more than {args.cap} calls in flight, every asset made exactly once",
                    met=eff >= need and r["max"] <= args.cap and exact,
                    notes=[f"most calls in flight over all workers: {r['max']} (cap {args.cap})",
                           f"provider calls {r['calls']} for {args.requests * args.images} assets "
                           f"({r['unique']} distinct), failed requests {r['failed']}",
                           "slot freed -> next call started (under load): "
                           + (f"p50 {1000 * gaps.median:.0f} ms, p99 {1000 * gaps.quantile(0.99):.0f} ms"
                              if gaps else "no samples"),
                           f"DBOS contention warnings {r['contention_warnings']} (largest polling interval "
                           f"{r['max_polling_interval_s']:g} s); CPU under load: workers "
                           + ", ".join(f"{100 * c:.0f}%" for c in r["worker_cpu"])
                           + f" of a core, PostgreSQL {100 * r['postgres_cpu']:.0f}%, machine "
                           f"{100 * r['machine_busy']:.0f}% busy",
                           f"where the rest went: first enqueue -> first call {1000 * r['first_call_s']:.0f} ms "
                           f"(enqueueing all {args.requests} took {1000 * r['enqueue_s']:.0f} ms), last call's end "
                           f"-> all Completed {1000 * r['tail_s']:.0f} ms, slots left empty between "
                           f"{r['empty_slot_s']:.1f} slot-s ({r['empty_slot_s'] / args.cap:.2f} s of wall)",
                           f"embedded pipeline on the same load: {embedded_wall:.2f} s "
                           f"({ideal / embedded_wall:.2f} of ideal)"],
                ))
            lat = Stats(latencies)
            cpu = Stats(idle_cpu)
            rep.add(Check(
                name="enqueue-to-start on an idle cluster, and an idle worker's CPU",
                measurement_label="enqueue of a 1-image request -> its provider call starts",
                measurement=lat,
                baseline_label="the fake provider's time per call",
                baseline=args.call_seconds,
                ratio=benchlib.ratio(args.call_seconds, lat.median),
                ratio_label="time per call / latency",
                target="latency p99 < 1 s; idle worker CPU < 5% of a core",
                met=lat.quantile(0.99) < 1.0 and cpu.max < 0.05,
                notes=[f"latency p50 {1000 * lat.median:.0f} ms, p99 {1000 * lat.quantile(0.99):.0f} ms "
                       f"({lat.n} samples)",
                       f"idle worker CPU: median {100 * cpu.median:.1f}%, max {100 * cpu.max:.1f}% of a core "
                       f"({cpu.n} workers)"],
            ))
            rep.extra["embedded_wall_s"] = embedded_wall
            rep.extra["cluster"] = {str(n): {k: v for k, v in r.items() if k != "gaps"} for n, r in results.items()}
    finally:
        pg.stop()
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
