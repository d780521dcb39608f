"""What every benchmark script shares: statistics, the result block, JSON results, stores built in bulk.

The machines these run on are shared and noisy, so every figure is a ratio
against a baseline measured in the same run, timings are repeated, measurement
and baseline are interleaved (a slow patch hits both), and what is reported is
the median with the spread (min-max and the interquartile range).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # The scripts run from a checkout (`python bench/x.py`), installed or not.
    sys.path.insert(0, str(ROOT))
RESULTS_DIR = ROOT / "bench" / "results"


# ----------------------------------------------------------------------------
# Statistics


@dataclass
class Stats:
    """Samples in seconds (or any unit), summarised robustly."""

    samples: list[float]
    unit: str = "s"

    def __post_init__(self):
        if not self.samples:
            raise ValueError("no samples")
        self.samples = list(self.samples)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def quantile(self, q: float) -> float:
        """Linear interpolation between order statistics (numpy's default method)."""
        xs = sorted(self.samples)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def q1(self) -> float:
        return self.quantile(0.25)

    @property
    def q3(self) -> float:
        return self.quantile(0.75)

    def to_dict(self) -> dict:
        return {
            "unit": self.unit,
            "n": self.n,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "q1": self.q1,
            "q3": self.q3,
            "p99": self.quantile(0.99),
        }

    def describe(self, unit: str | None = None) -> str:
        """'1.052 s (min 1.041, max 1.080, IQR 1.045-1.061, n=5)' in the unit asked for."""
        unit = unit or self.unit
        f = _unit_factor(self.unit, unit)
        digits = _digits(self.median * f)
        fmt = lambda v: f"{v * f:.{digits}f}"  # noqa: E731
        return (f"{fmt(self.median)} {unit} (min {fmt(self.min)}, max {fmt(self.max)}, "
                f"IQR {fmt(self.q1)}-{fmt(self.q3)}, n={self.n})")


def _unit_factor(have: str, want: str) -> float:
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
    if have in scale and want in scale:
        return scale[have] / scale[want]
    if have != want:
        raise ValueError(f"cannot convert {have} to {want}")
    return 1.0


def _digits(v: float) -> int:
    v = abs(v)
    if v >= 100:
        return 1
    if v >= 10:
        return 2
    return 3


def fmt_value(v: float, unit: str) -> str:
    return f"{v:.{_digits(v)}f} {unit}"


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, *, warmup: int = 1,
                shuffle_seed: int = 1) -> dict[str, list[float]]:
    """Time each callable `repeat` times, in rounds whose order is shuffled.

    Rounds (one call of each, in a random order) rather than blocks (all calls
    of one, then all of the next) so that a burst of load from another process
    on the shared machine lands on both sides of a comparison.
    """
    rng = random.Random(shuffle_seed)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeat):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - t0)
    return out


def run_timed(cmd: list[str], *, env: dict | None = None, cwd: str | os.PathLike | None = None,
              check: bool = True) -> float:
    """Wall time of one subprocess, output discarded; a failing command is an error, not a fast sample."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    dt = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    return dt


# ----------------------------------------------------------------------------
# Results


@dataclass
class Check:
    """One comparison: a measurement against its baseline, and the target it must meet."""

    name: str
    measurement_label: str
    measurement: Stats | float
    baseline_label: str
    baseline: Stats | float
    ratio: float
    ratio_label: str
    target: str
    met: bool
    unit: str = "s"  # the unit to print measurement and baseline in
    notes: list[str] = field(default_factory=list)

    def _show(self, v: Stats | float) -> str:
        if isinstance(v, Stats):
            return v.describe(self.unit)
        return fmt_value(v, self.unit)

    def lines(self) -> list[str]:
        out = [
            f"-- {self.name}",
            f"  measurement: {self.measurement_label}: {self._show(self.measurement)}",
            f"  baseline:    {self.baseline_label}: {self._show(self.baseline)}",
            f"  ratio:       {self.ratio:.2f}x ({self.ratio_label})",
            f"  target:      {self.target}",
            f"  result:      {'MET' if self.met else 'MISSED'}",
        ]
        out += [f"  note:        {n}" for n in self.notes]
        return out

    def to_dict(self) -> dict:
        def val(v):
            return v.to_dict() if isinstance(v, Stats) else {"value": v}

        return {
            "name": self.name,
            "measurement_label": self.measurement_label,
            "measurement": val(self.measurement),
            "baseline_label": self.baseline_label,
            "baseline": val(self.baseline),
            "ratio": self.ratio,
            "ratio_label": self.ratio_label,
            "target": self.target,
            "met": self.met,
            "display_unit": self.unit,
            "notes": self.notes,
        }


class Report:
    """Collects the checks of one figure, prints the block and writes bench/results/<figure>.json."""

    def __init__(self, figure: str, title: str, args: argparse.Namespace, params: dict | None = None):
        self.figure = figure
        self.title = title
        self.args = args
        self.params = dict(params or {})
        self.checks: list[Check] = []
        self.extra: dict = {}
        self.info: list[str] = []
        self.started = time.time()

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def note(self, line: str) -> None:
        """A line printed under the header: what was built, how, and anything worth knowing."""
        self.info.append(line)
        print(f"   {line}", flush=True)

    def header(self) -> None:
        print(f"=== {self.title} ===", flush=True)
        desc = ", ".join(f"{k}={v}" for k, v in self.params.items())
        print(f"   {machine_line()}; {desc}", flush=True)

    def finish(self) -> int:
        for c in self.checks:
            print("\n".join(c.lines()), flush=True)
        met = all(c.met for c in self.checks)
        try:
            load = f", load average {os.getloadavg()[0]:.2f} at the end"
        except OSError:
            load = ""
        print(f"=== {self.figure}: {'all targets MET' if met else 'some targets MISSED'} "
              f"({time.time() - self.started:.0f} s{load}) ===", flush=True)
        out_dir = Path(self.args.results_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = self.figure + ("-quick" if self.args.quick else "")
        data = {
            "figure": self.figure,
            "title": self.title,
            "quick": bool(self.args.quick),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - self.started, 1),
            "machine": machine_info(),
            "params": self.params,
            "info": self.info,
            "checks": [c.to_dict() for c in self.checks],
            "all_met": met,
            **self.extra,
        }
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"   results: {path}", flush=True)
        return 0


def machine_info() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": load,
    }


def machine_line() -> str:
    try:
        load = "load %.2f" % os.getloadavg()[0]
    except OSError:
        load = "load ?"
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {load}"


def parser(description: str, *, repeat: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeat", type=int, default=repeat, help=f"timed repetitions (default {repeat})")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repeats: proves the script runs; the numbers mean nothing")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where to write <figure>.json")
    return p


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


# ----------------------------------------------------------------------------
# Stores built in bulk


USERS_PREFIX = "user"
PROMPTS = [
    "a red fox at dawn in a misty forest", "blue ocean waves at night", "a neon city street in the rain",
    "golden desert dunes under a storm", "snow falling on a quiet village", "aurora over a frozen lake",
    "a lighthouse on a cliff at sunset", "spring flowers in a mountain meadow",
]
T_END = datetime(2026, 11, 24, 9, 0, 0, tzinfo=timezone.utc)
EVENT_KINDS = [("gallery_view", 30), ("asset_view", 40), ("generation_view", 12), ("api_view", 5),
               ("login_ok", 8), ("login_failed", 4), ("logout", 1)]


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class BuiltStore:
    home: object  # aigen.config.Home
    user: str  # the user the figures ask about
    generations: int
    user_generations: int
    assets: int
    events: int
    seconds: float

    def describe(self) -> str:
        return (f"{self.generations:,} generations ({self.user_generations:,} of user {self.user!r}), "
                f"{self.assets:,} assets, {self.events:,} events, built in {self.seconds:.1f} s")


def build_store(home_dir: Path, *, generations: int, users: int, user_generations: int, assets_per_gen: int = 10,
                events: int = 0, seed: int = 7, span_days: int = 365) -> BuiltStore:
    """A store with the real schema (Store() creates it and applies every migration), filled with executemany.

    `user_generations` of the generations belong to USER (the one the figures
    ask about); the rest are spread over `users - 1` others, interleaved in
    time. 95% are Completed, 4% Failed, 1% Processing; every Completed one has
    `assets_per_gen` done assets (half images, half videos) with paths, sizes
    and hashes, as the pipeline leaves them. Files are not written: listing and
    paging never open them (figure 4 writes the one file it serves).
    """
    from aigen.config import resolve_home
    from aigen.store import Store

    t0 = time.perf_counter()
    home = resolve_home(home_dir)
    home.ensure()
    Store(home.db_path).close()  # creates the schema with every migration
    rng = random.Random(seed)
    user = f"{USERS_PREFIX}0"
    others = [f"{USERS_PREFIX}{i}" for i in range(1, max(users, 2))]
    owners = [user] * user_generations + [rng.choice(others) for _ in range(generations - user_generations)]
    rng.shuffle(owners)
    step = timedelta(days=span_days) / max(generations, 1)
    start = T_END - timedelta(days=span_days)
    ids: set[str] = set()

    conn = sqlite3.connect(str(home.db_path), isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.executemany("INSERT OR IGNORE INTO users (user_id, created_at) VALUES (?, ?)",
                     [(u, _iso(start)) for u in [user, *others]])
    gen_rows, asset_rows = [], []
    half = assets_per_gen // 2
    kinds = [("image", i) for i in range(1, assets_per_gen - half + 1)] + [("video", i) for i in range(1, half + 1)]
    n_assets = 0
    gen_ids: list[tuple[str, str]] = []
    for i, owner in enumerate(owners):
        gid = f"{rng.getrandbits(48):012x}"
        while gid in ids:
            gid = f"{rng.getrandbits(48):012x}"
        ids.add(gid)
        created = start + step * i
        x = rng.random()
        status = "Completed" if x < 0.95 else "Failed" if x < 0.99 else "Processing"
        done_kinds = kinds if status == "Completed" else kinds[: len(kinds) // 2] if status == "Failed" else []
        img = [f"generated_content/{owner}/{gid}/image_{k}.png" for kind, k in done_kinds if kind == "image"]
        vid = [f"generated_content/{owner}/{gid}/video_{k}.mp4" for kind, k in done_kinds if kind == "video"]
        generated = _iso(created + timedelta(seconds=40)) if status != "Processing" else None
        gen_rows.append((
            gid, owner, PROMPTS[i % len(PROMPTS)], status, json.dumps(vid), json.dumps(img), _iso(created),
            generated or _iso(created), generated, "local", "local", "procedural-v1", "procedural-v1",
            assets_per_gen - half, half, i, json.dumps({"image_size": [1024, 1024], "video_size": [1280, 720],
                                                        "duration": 4.0, "fps": 24}),
            "none" if status != "Processing" else None,
            "1 of 10 assets failed: image 5: provider said no" if status == "Failed" else None,
        ))
        gen_ids.append((gid, owner))
        for kind, k in kinds:
            made = (kind, k) in done_kinds
            failed = status == "Failed" and not made
            path = f"generated_content/{owner}/{gid}/{kind}_{k}.{'png' if kind == 'image' else 'mp4'}"
            asset_rows.append((
                gid, kind, k, "local", "procedural-v1", i * 100 + k,
                1024 if kind == "image" else 1280, 1024 if kind == "image" else 720,
                4.0 if kind == "video" else None, 24 if kind == "video" else None,
                "done" if made else "failed" if failed else "queued",
                path if made else None,
                path.replace(".mp4", ".poster.jpg") if made and kind == "video" else None,
                (1_200_000 if kind == "image" else 900_000) if made else None,
                hashlib.sha256(path.encode()).hexdigest() if made else None,
                1 if made or failed else 0,
                "provider said no" if failed else None,
                _iso(created), _iso(created), generated if made or failed else None, _iso(created),
                1.0 if made else None,
            ))
            n_assets += 1
        if len(asset_rows) >= 50_000:
            _flush(conn, gen_rows, asset_rows)
    _flush(conn, gen_rows, asset_rows)
    conn.execute("COMMIT")

    if events:
        _insert_events(conn, rng, events, gen_ids, [user, *others], start, span_days)
    conn.close()
    return BuiltStore(home, user, generations, user_generations, n_assets, events, time.perf_counter() - t0)


def _flush(conn: sqlite3.Connection, gen_rows: list, asset_rows: list) -> None:
    conn.executemany(
        "INSERT INTO generations (id, user_id, prompt, status, video_paths, image_paths, created_at, updated_at, "
        "generated_at, image_provider, video_provider, image_model, video_model, image_count, video_count, seed, "
        "options, notify_status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        gen_rows)
    conn.executemany(
        "INSERT INTO assets (generation_id, kind, idx, provider, model, seed, width, height, duration, fps, status, "
        "path, poster_path, bytes, sha256, attempts, error, created_at, started_at, finished_at, updated_at, "
        "progress) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        asset_rows)
    gen_rows.clear()
    asset_rows.clear()


def _insert_events(conn, rng: random.Random, n: int, gen_ids: list[tuple[str, str]], users: list[str],
                   start: datetime, span_days: int) -> None:
    kinds = [k for k, w in EVENT_KINDS for _ in range(w)]
    sessions = [hashlib.sha256(f"s{i}".encode()).hexdigest()[:22] for i in range(max(1, n // 50))]
    step = timedelta(days=span_days) / n
    rows = []
    conn.execute("BEGIN")
    for i in range(n):
        kind = kinds[rng.randrange(len(kinds))]
        gid, owner = gen_ids[rng.randrange(len(gen_ids))]
        ok = 0 if kind == "login_failed" else 1
        rows.append((
            _iso(start + step * i), kind, owner, ok,
            "invalid_user_id" if kind == "login_failed" else None,
            f"127.0.0.{1 + i % 250}", "Mozilla/5.0 (X11; Linux x86_64) bench",
            sessions[rng.randrange(len(sessions))],
            gid if kind in ("generation_view", "asset_view", "api_view") else None,
            rng.randrange(1, 1_000_000) if kind == "asset_view" else None,
            "view video 1" if kind == "asset_view" else "page 1 of 1" if kind == "gallery_view" else None,
        ))
        if len(rows) >= 100_000:
            conn.executemany(
                "INSERT INTO events (at, kind, user_id, ok, reason, address, user_agent, session_id, generation_id, "
                "asset_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            rows.clear()
    if rows:
        conn.executemany(
            "INSERT INTO events (at, kind, user_id, ok, reason, address, user_agent, session_id, generation_id, "
            "asset_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")


# ----------------------------------------------------------------------------
# Query plans


BIG_TABLES = ("generations", "assets", "events", "notifications")


class QueryLog:
    """Records every statement the store's connections run (expanded, with their values)."""

    def __init__(self):
        self.statements: list[str] = []
        self.active = False

    def install(self) -> None:
        """Trace every connection opened from now on; patches Store for the rest of this (benchmark) process."""
        from aigen.store.core import Store

        orig = Store._connect
        log = self

        def _connect(store):
            db = orig(store)
            db.conn.set_trace_callback(lambda sql: log.statements.append(sql) if log.active else None)
            return db

        Store._connect = _connect

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        self.statements.clear()
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False


def explain(db_path: Path, statements: list[str]) -> list[dict]:
    """EXPLAIN QUERY PLAN of each distinct SELECT/UPDATE/DELETE, and whether it is index-only on big tables.

    A plan is flagged when it SCANs one of the big tables without an index,
    or sorts its rows with a temporary B-tree for an ORDER BY or a GROUP BY.
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    seen, out = set(), []
    for sql in statements:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head not in ("SELECT", "UPDATE", "DELETE", "WITH"):
            continue
        key = _shape(sql)
        if key in seen:
            continue
        seen.add(key)
        try:
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
        except sqlite3.Error as e:
            out.append({"sql": sql, "plan": [f"(could not explain: {e})"], "problems": []})
            continue
        plan = [r[3] for r in rows]
        tables = {w.split()[1] for w in plan if w.split()[:1] in (["SCAN"], ["SEARCH"]) and len(w.split()) > 1}
        aliases = _aliases(sql)
        big = any(aliases.get(t, t) in BIG_TABLES for t in tables)
        problems = []
        for line in plan:
            words = line.split()
            if words[:1] == ["SCAN"] and len(words) >= 2 and aliases.get(words[1], words[1]) in BIG_TABLES \
                    and "INDEX" not in line:
                problems.append(f"full scan of {aliases.get(words[1], words[1])}")
            # A sort of a big table's rows (even only the "right part" of an
            # ORDER BY, or the groups of a GROUP BY) grows with the data; on a
            # small table (the migrations list) it does not matter.
            if big and "TEMP B-TREE" in line and ("ORDER BY" in line or "GROUP BY" in line):
                problems.append(line.strip())
        out.append({"sql": " ".join(sql.split()), "plan": plan, "problems": problems})
    conn.close()
    return out


def _aliases(sql: str) -> dict[str, str]:
    """alias -> table for `FROM table alias` / `JOIN table alias` in a statement."""
    import re

    return {m.group(2): m.group(1) for m in re.finditer(r"\b(?:FROM|JOIN)\s+\"?(\w+)\"?\s+(?:AS\s+)?(\w+)", sql,
                                                      re.IGNORECASE)
            if m.group(2).upper() not in ("WHERE", "ON", "JOIN", "ORDER", "GROUP", "LIMIT", "LEFT", "INNER",
                                           "CROSS", "USING", "SET", "VALUES")}


def _shape(sql: str) -> str:
    """A statement with its literal values blanked, so repeats with other values count once."""
    import re

    s = re.sub(r"'(?:[^']|'')*'", "?", sql)
    s = re.sub(r"\b\d+(?:\.\d+)?\b", "?", s)
    return " ".join(s.split())


def print_plans(plans: list[dict], *, width: int = 160) -> None:
    for p in plans:
        sql = p["sql"] if len(p["sql"]) <= width else p["sql"][: width - 1] + "…"
        print(f"   sql:  {sql}")
        for line in p["plan"]:
            print(f"         {line}")
        for prob in p["problems"]:
            print(f"         !! {prob}")


# ----------------------------------------------------------------------------
# The gallery over real HTTP


class Gallery:
    """The real gallery app (make_app) under waitress on 127.0.0.1, in a thread of this process."""

    def __init__(self, home, *, threads: int | None = None):
        from aigen.store import Store
        from aigen.web.app import WebSettings, make_app
        from aigen.web.server import THREADS, GalleryServer

        self.store = Store(home.db_path)
        settings = WebSettings(home=home, host="127.0.0.1", port=0, store=self.store)
        self.threads = threads or THREADS
        self.server = GalleryServer(make_app(settings), "127.0.0.1", 0, threads=self.threads).start_in_thread()
        self.port = self.server.port

    def close(self) -> None:
        self.server.shutdown()
        self.store.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HttpClient:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 with a cookie jar, as a browser tab would use."""

    def __init__(self, port: int, *, timeout: float = 60.0):
        import http.client

        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        from http.cookies import SimpleCookie

        h = {"Host": f"127.0.0.1:{self.port}", "User-Agent": "aigen-bench/1.0"}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        h.update(headers or {})
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        for value in resp.headers.get_all("Set-Cookie") or []:
            c = SimpleCookie()
            c.load(value)
            for name, morsel in c.items():
                self.cookies[name] = morsel.value
        return resp.status, dict(resp.headers.items()), data

    def get(self, path: str, **kw) -> tuple[int, dict, bytes]:
        return self.request("GET", path, **kw)

    def csrf(self) -> str:
        import re

        status, _, body = self.get("/login")
        m = re.search(rb'name="csrf_token" value="([0-9a-f]+)"', body)
        if status != 200 or not m:
            raise RuntimeError(f"GET /login: {status}, no CSRF token in {body[:300]!r}")
        return m.group(1).decode()

    def post_login(self, user_id: str, token: str) -> float:
        """POST the login form; returns its wall time. A refused login is an error, not a sample."""
        from urllib.parse import urlencode

        body = urlencode({"csrf_token": token, "user_id": user_id, "next": "/"}).encode()
        t0 = time.perf_counter()
        status, headers, data = self.request("POST", "/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        dt = time.perf_counter() - t0
        if status != 303:
            raise RuntimeError(f"POST /login for {user_id}: {status} {data[:300]!r}")
        return dt

    def login(self, user_id: str) -> None:
        self.post_login(user_id, self.csrf())

    def close(self) -> None:
        self.conn.close()
