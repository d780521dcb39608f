"""aigen.web.server's TaskTurns: waitress's worker threads take turns (one request at a time while requests
are quick, the next one beside a request that has run its turn), in arrival order, and nothing is lost:
every task runs once, a failing task does not stop its thread, shutdown ends the threads and cancels what
is left. Events, not timings: the only times asserted are lower bounds the rule itself sets."""

from __future__ import annotations

import random
import threading
import time

import pytest

from aigen.web.server import TASK_TURN_S, GalleryServer, task_turns_class


class Task:
    """A waitress task: service() runs `body`, records when and in which thread, and how many ran at once."""

    def __init__(self, log: "Log", name, body=None):
        self.log, self.name, self.body = log, name, body
        self.cancelled = False

    def service(self):
        log = self.log
        with log.lock:
            log.now += 1
            log.most = max(log.most, log.now)
            log.started.append((self.name, time.monotonic(), threading.current_thread().name))
        try:
            if self.body:
                self.body()
        finally:
            with log.lock:
                log.now -= 1
                log.done.append(self.name)
                log.cond.notify_all()

    def cancel(self):
        self.cancelled = True


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.now = self.most = 0
        self.started: list = []
        self.done: list = []

    def wait_done(self, n: int, timeout: float = 20.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.done) >= n, timeout), f"{len(self.done)} of {n} done"


@pytest.fixture
def pool():
    made = []

    def make(threads=4, turn_s=TASK_TURN_S):
        d = task_turns_class()(turn_s=turn_s)
        d.set_thread_count(threads)
        made.append(d)
        return d

    yield make
    for d in made:
        d.shutdown(timeout=5)


def busy(seconds: float):
    """Python work (holding the interpreter lock, as a page does) for about `seconds`."""
    def body():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    return body


def test_quick_requests_run_one_at_a_time_in_arrival_order(pool):
    # A turn far longer than any of these tasks: they never overlap, and start in the order they came,
    # although each lets go of the interpreter lock on the way (as a page does on every SQLite call).
    d = pool(threads=4, turn_s=30.0)
    log = Log()

    def page():
        busy(0.0002)()
        time.sleep(0.0005)
        busy(0.0002)()

    for i in range(60):
        d.add_task(Task(log, i, page))
    log.wait_done(60)
    assert log.most == 1
    assert [name for name, _, _ in log.started] == list(range(60))


def test_a_request_that_has_run_its_turn_lets_the_next_start_beside_it(pool):
    d = pool(threads=4, turn_s=0.05)
    log = Log()
    second_ran = threading.Event()

    def first():
        # Blocks until the second task has run: it can only finish if the pool started the second beside it.
        assert second_ran.wait(20), "the second request never started beside a long one"

    d.add_task(Task(log, "long", first))
    d.add_task(Task(log, "next", second_ran.set))
    log.wait_done(2)
    starts = {name: at for name, at, _ in log.started}
    assert log.done == ["next", "long"]
    assert log.most == 2
    # Not sooner than the long one's turn.
    assert starts["next"] - starts["long"] >= 0.05 - 0.002


def test_several_long_requests_each_let_one_more_start(pool):
    # Three requests that wait on something, and quick ones behind them: every thread gets used, nothing
    # waits for the long ones to end.
    d = pool(threads=4, turn_s=0.02)
    log = Log()
    release = threading.Event()
    for i in range(3):
        d.add_task(Task(log, f"long{i}", lambda: release.wait(20)))
    quick_done = threading.Event()
    for i in range(5):
        d.add_task(Task(log, f"quick{i}", quick_done.set if i == 4 else None))
    assert quick_done.wait(20), "quick requests waited for long ones to end"
    assert log.most == 4
    assert not any(name.startswith("long") for name in log.done)
    release.set()
    log.wait_done(8)


def test_many_tasks_of_every_length_all_run_once(pool):
    d = pool(threads=4, turn_s=0.003)
    log = Log()
    rnd = random.Random(7)
    n = 400
    for i in range(n):
        kind = rnd.random()
        body = (busy(0.0002) if kind < 0.7 else (lambda: time.sleep(0.004)) if kind < 0.95 else busy(0.006))
        d.add_task(Task(log, i, body))
        if rnd.random() < 0.1:
            time.sleep(0.001)  # arrivals in bursts and gaps
    log.wait_done(n)
    assert sorted(log.done) == list(range(n))
    assert len(log.started) == n
    assert 1 <= log.most <= 4


def test_a_failing_request_is_logged_and_the_thread_goes_on(pool, caplog):
    d = pool(threads=1, turn_s=30.0)
    log = Log()

    def boom():
        raise RuntimeError("the request failed")

    d.add_task(Task(log, "bad", boom))
    d.add_task(Task(log, "good"))
    log.wait_done(2)
    assert log.done == ["bad", "good"]
    assert any("Exception when servicing" in r.getMessage() for r in caplog.records)


def test_shutdown_ends_the_threads_and_cancels_what_is_left():
    d = task_turns_class()(turn_s=30.0)
    d.set_thread_count(2)
    log = Log()
    started, release = threading.Event(), threading.Event()
    d.add_task(Task(log, "running", lambda: started.set() or release.wait(20)))
    assert started.wait(20)
    left = [Task(log, f"left{i}") for i in range(3)]
    for t in left:
        d.add_task(t)  # behind the running one's turn (30 s): queued
    # The threads are told to stop while one request runs; it ends, and the queued ones never start.
    d.set_thread_count(0)
    release.set()
    assert d.shutdown(cancel_pending=True, timeout=10) is True
    assert d.threads == set()
    assert log.done == ["running"]
    ran = set(log.done)
    assert all(t.cancelled or t.name in ran for t in left)
    assert all(t.cancelled for t in left if t.name not in ran)


def test_the_gallery_server_uses_it():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    import http.client

    with GalleryServer(app, "127.0.0.1", 0, threads=3) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/", headers={"Host": "127.0.0.1"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
        conn.close()
        d = server.server.task_dispatcher
        assert isinstance(d, task_turns_class())
        assert len(d.threads) == 3
        assert d.turn_s == TASK_TURN_S
