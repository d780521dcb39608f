"""Notify daemons on several "machines": separate processes, each with its own empty home and its own
host name (AIGEN_HOST_NAME), sharing one PostgreSQL store (AIGEN_DATABASE_URL); email to a real SMTP
server (aiosmtpd) in this process, counted by generation id (the Message-ID carries it)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from aigen.config import Home
from aigen.notify import queue
from aigen.store.core import utcnow
from fakes.notify import make_generation
from fakes.smtp import SmtpServer

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
LEASE_S = 3.0
MSGID = re.compile(r"<aigen\.([0-9a-f]+)\.(\d+)@")


@pytest.fixture
def store(pg_database, tmp_path):
    from aigen.store import open_store

    s = open_store(Home(tmp_path / "setup", "--home"), env={"AIGEN_DATABASE_URL": pg_database})
    assert s.backend == "postgresql"
    yield s
    s.close_all()


@pytest.fixture
def smtp():
    with SmtpServer() as srv:
        yield srv


class Daemon:
    """`aigen notify-daemon` as its own process, on a "machine" of its own."""

    def __init__(self, tmp_path: Path, host: str, url: str, smtp_port: int):
        self.host = host
        self.home = tmp_path / f"home-{host}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIGEN_")}
        env.update({
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
            "AIGEN_DATABASE_URL": url, "AIGEN_HOST_NAME": host, "AIGEN_NOTIFY_LEASE_S": str(LEASE_S),
            "AIGEN_SMTP_HOST": "127.0.0.1", "AIGEN_SMTP_PORT": str(smtp_port), "AIGEN_SMTP_SECURITY": "none",
            "AIGEN_SMTP_FROM": "aigen@example.org", "AIGEN_SMTP_TIMEOUT": "30",
        })
        self.log_path = tmp_path / f"daemon-{host}.log"
        self.err = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aigen", "--home", str(self.home), "notify-daemon", "--json", "--max-sleep",
             "0.2"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.deliveries: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.deliveries.append(json.loads(line))

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "notify daemon started" in self.log():
                return
            assert self.proc.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"daemon {self.host} did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self.err.close()


def make_batch(store, tmp_path, n: int) -> list[str]:
    """n generations that finished a minute ago (past the daemons' settle time), each asking for an email."""
    home = Home(tmp_path / "setup", "--home")
    home.ensure()
    done = utcnow() - timedelta(minutes=1)
    return [make_generation(store, home, user=f"user{i % 7}", images=1, via=["email"],
                            email=f"user{i % 7}@example.org", finished=done) for i in range(n)]


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def delivered_ids(smtp) -> list[str]:
    return [MSGID.search(r.message["Message-ID"]).group(1) for r in smtp.received]


def test_two_daemons_on_two_machines_deliver_100_notifications_exactly_once(store, smtp, pg_database, tmp_path):
    smtp.slow_down(0.01)  # each send takes a moment, so both daemons are sending at once
    daemons = [Daemon(tmp_path, host, pg_database, smtp.port) for host in ("machine-a", "machine-b")]
    try:
        for d in daemons:
            d.wait_started()
        from aigen.cli.notify import daemon_status_line
        from aigen.notify.daemon import live_daemons

        # `aigen generate` on any machine can tell that daemons run elsewhere: they register in the database.
        wait_for(lambda: len(live_daemons(store, utcnow())) == 2, 30, "both daemons in notify_daemons")
        line = daemon_status_line(Home(tmp_path / "laptop", "--home"), store)
        assert "machine-a" in line and "machine-b" in line, line
        t0 = time.monotonic()
        ids = make_batch(store, tmp_path, 100)
        wait_for(lambda: len(smtp.received) >= 100, 120, "100 emails")
        elapsed = time.monotonic() - t0
        time.sleep(0.5)  # polling is over; a late duplicate would show up in this moment
    finally:
        for d in daemons:
            d.stop()
    assert live_daemons(store, utcnow()) == [], "a daemon stopped by SIGTERM marks itself stopped"
    got = delivered_ids(smtp)
    dupes = len(got) - len(set(got))
    lost = set(ids) - set(got)
    print(f"100 notifications by 2 daemons in {elapsed:.2f} s; "
          f"by host: {[len(d.deliveries) for d in daemons]}; duplicates {dupes}, lost {len(lost)}")
    assert dupes == 0 and not lost and len(got) == 100
    rows = store.query("SELECT status, attempts, claimed_by FROM notifications")
    assert len(rows) == 100 and {r["status"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}
    hosts = {queue.owner_host(r["claimed_by"]) for r in rows}
    assert hosts == {"machine-a", "machine-b"}, "both machines took part"
    assert sum(len(d.deliveries) for d in daemons) == 100
    assert all(d.proc.returncode == 0 for d in daemons), [d.log() for d in daemons]


def test_a_daemon_killed_mid_send_has_its_row_taken_over_by_the_other_machine_after_the_lease(
        store, smtp, pg_database, tmp_path):
    daemons = {host: Daemon(tmp_path, host, pg_database, smtp.port) for host in ("machine-a", "machine-b")}
    try:
        for d in daemons.values():
            d.wait_started()
        smtp.hold_next(1)  # the first email is caught mid-send: its sender is then killed
        ids = make_batch(store, tmp_path, 20)
        held = smtp.wait_held(60)
        assert held is not None, "no email was sent"
        gid, row_id = MSGID.search(held.message["Message-ID"]).groups()
        [row] = store.query("SELECT * FROM notifications WHERE id = ?", (int(row_id),))
        assert row["status"] == "sending"
        victim = daemons[queue.owner_host(row["claimed_by"])]
        survivor = next(d for d in daemons.values() if d is not victim)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        killed_at = utcnow()
        smtp.release()
        wait_for(lambda: len(smtp.received) >= 20, 60, "20 emails")
        time.sleep(0.5)
    finally:
        for d in daemons.values():
            d.stop()
    got = delivered_ids(smtp)
    assert sorted(got) == sorted(ids), "every notification exactly once (the held one was not stored)"
    [after] = store.query("SELECT * FROM notifications WHERE id = ?", (int(row_id),))
    assert after["status"] == "sent" and after["attempts"] == 2
    assert queue.owner_host(after["claimed_by"]) == survivor.host
    # Taken over only once the victim's lease had run out: its host is another, so no pid check applies.
    assert queue.parse_utc(after["claimed_at"]) >= queue.parse_utc(row["lease_until"])
    took = [x for x in survivor.deliveries if x["generation_id"] == gid]
    assert len(took) == 1 and took[0].get("taken_over") is True
    wait_s = (queue.parse_utc(after["claimed_at"]) - killed_at).total_seconds()
    print(f"killed {victim.host} mid-send; {survivor.host} took its row over {wait_s:.2f} s after the kill "
          f"(lease {LEASE_S:g} s from the claim)")
    assert "took over a claim by daemon@" + victim.host in survivor.log()
