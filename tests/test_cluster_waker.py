"""The worker's Waker: a NOTIFY for one queue cuts short that queue's DBOS polling wait, and only that one.

No database: the Waker is driven the way DBOS drives its stop event, from threads
named like DBOS's queue threads (``queue-worker-<queue>``).
"""

from __future__ import annotations

import threading
import time

from aigen.cluster.worker import Waker


def _waiter(waker: Waker, queue: str, timeout: float, out: list):
    def run():
        t0 = time.monotonic()
        stopped = waker.event.wait(timeout)
        out.append((time.monotonic() - t0, stopped))

    t = threading.Thread(target=run, name=f"queue-worker-{queue}", daemon=True)
    t.start()
    return t


def test_a_wake_up_for_a_queue_ends_only_that_queues_wait():
    waker = Waker(threading.Event())
    a, b = [], []
    ta = _waiter(waker, "aigen-paced", 30.0, a)
    tb = _waiter(waker, "aigen-generations", 1.0, b)
    time.sleep(0.05)  # both threads are inside wait()
    waker.wake("aigen-paced")
    ta.join(5)
    assert a and a[0][0] < 5 and a[0][1] is False
    tb.join(5)
    # The other queue slept its whole timeout.
    assert b and b[0][0] >= 0.95


def test_a_wake_up_while_the_thread_polls_is_not_lost():
    waker = Waker(threading.Event())
    out = []
    t = _waiter(waker, "aigen-paced", 0.01, out)  # a first wait, then "polling"
    t.join(5)
    waker.wake("aigen-paced")  # comes while no thread waits
    out.clear()
    t = _waiter(waker, "aigen-paced", 30.0, out)
    t.join(5)
    assert out and out[0][0] < 1.0
    # Answered once: the next wait sleeps again.
    out.clear()
    t = _waiter(waker, "aigen-paced", 0.3, out)
    t.join(5)
    assert out and out[0][0] >= 0.25


def test_a_peers_freed_slot_is_polled_after_the_delay_and_wake_all_reaches_every_queue():
    waker = Waker(threading.Event())
    out = []
    waker.wake("aigen-paced", delay=0.3)
    t = _waiter(waker, "aigen-paced", 30.0, out)
    t.join(5)
    assert out and 0.25 <= out[0][0] < 5
    a, b = [], []
    waker.wake()
    ta, tb = _waiter(waker, "aigen-paced", 30.0, a), _waiter(waker, "aigen-x", 30.0, b)
    ta.join(5), tb.join(5)
    assert a and b and a[0][0] < 1 and b[0][0] < 1


def test_no_wait_is_longer_than_the_idle_poll_whatever_dbos_backed_off_to():
    waker = Waker(threading.Event(), max_wait=0.2)
    out = []
    t = _waiter(waker, "aigen-paced", 120.0, out)  # DBOS's backoff after conflicts
    t.join(5)
    assert out and out[0][0] < 2


def test_the_stop_event_still_stops_every_thread():
    event = threading.Event()
    waker = Waker(event)
    out = []
    t = _waiter(waker, "aigen-paced", 30.0, out)
    time.sleep(0.05)
    event.set()
    t.join(5)
    assert out and out[0][1] is True and out[0][0] < 2
    # A thread that is not a queue thread waits on the plain event.
    assert event.wait(0.01) is True


def test_the_queue_manager_waits_the_idle_poll_once_every_queue_has_its_thread():
    """DBOS's manager lists the queues every second; once each queue of this worker has a thread, it need not."""
    out: list = []
    holder: dict = {}

    def manager():
        t0 = time.monotonic()
        holder["waker"].event.wait(0.05)
        out.append(time.monotonic() - t0)
        holder["go"].wait(5)
        t0 = time.monotonic()
        holder["waker"].event.wait(0.05)
        out.append(time.monotonic() - t0)

    thread = threading.Thread(target=manager, name="queue-manager", daemon=True)
    holder["waker"] = waker = Waker(threading.Event(), max_wait=0.6, manager=thread, queues={"aigen-paced"})
    holder["go"] = threading.Event()
    thread.start()
    time.sleep(0.2)
    assert out and out[0] < 0.4, "before the queue has its thread, the manager keeps DBOS's 1 s check"
    done: list = []
    _waiter(waker, "aigen-paced", 0.01, done).join(2)
    holder["go"].set()
    thread.join(5)
    assert len(out) == 2 and out[1] >= 0.55, out
    # A stop still ends the manager's wait at once.
    waker.event.set()
    t0 = time.monotonic()
    assert threading.Event.wait(waker.event, 5) and time.monotonic() - t0 < 1
