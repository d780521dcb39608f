"""The Storage interface, one suite over both backends: a folder, and S3 against a real `weed mini`.

The S3 cases need the SeaweedFS server (session fixture ``s3_server``): they
skip with the reason when it cannot start, and fail when AIGEN_REQUIRE_CLUSTER=1.
"""

from __future__ import annotations

import subprocess
import uuid
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from aigen.errors import AigenError, BadInput
from aigen.storage import BadKey, BadRange, ObjectMissing, StorageError, content_key, from_config, validate_key


def _s3_env(s3, prefix):
    return {
        "AIGEN_STORAGE_URL": f"s3://{s3.bucket}/{prefix}",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_REGION": s3.region,
        "AIGEN_S3_ENDPOINT_URL": s3.endpoint_url,
        "AIGEN_S3_MAX_ATTEMPTS": "1",
        "AIGEN_S3_CONNECT_TIMEOUT": "2",
        "AIGEN_S3_READ_TIMEOUT": "5",
    }


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return from_config(tmp_path / "home", env={})
    s3 = request.getfixturevalue("s3_server")
    # A prefix of its own per test, so tests never see each other's objects.
    return from_config(None, env=_s3_env(s3, f"t/{uuid.uuid4().hex}"))


def _tmpfile(tmp_path, data: bytes, name="upload.part"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


KEY = "generated_content/alice/7/video_1.mp4"


def test_put_then_read_back_and_the_temporary_is_consumed(storage, tmp_path):
    data = bytes(range(256)) * 40
    tmp = _tmpfile(tmp_path, data)
    assert not storage.exists(KEY)
    storage.put_file(tmp, KEY)
    assert not tmp.exists()
    assert storage.exists(KEY)
    assert storage.size(KEY) == len(data)
    assert storage.read_bytes(KEY) == data
    # Overwriting is a whole replacement, never a mix.
    storage.put_file(_tmpfile(tmp_path, b"second"), KEY)
    assert storage.read_bytes(KEY) == b"second"


def test_range_reads_like_http_range(storage, tmp_path):
    data = b"0123456789" * 1000
    storage.put_file(_tmpfile(tmp_path, data), KEY)
    with storage.open_range(KEY, 10, 19) as s:
        assert s.length == 10
        assert s.read() == data[10:20]
    with storage.open_range(KEY, 9990) as s:  # open-ended
        assert b"".join(s) == data[9990:]
    with storage.open_range(KEY, 9995, 10_500) as s:  # clamped to the end, as a server does
        assert s.read() == data[9995:]
    chunks = list(storage.open_range(KEY, 0, None))
    assert b"".join(chunks) == data
    with pytest.raises(BadRange):
        storage.open_range(KEY, 20_000, 20_010)
    with pytest.raises(BadRange):
        storage.open_range(KEY, 5, 2)


def test_missing_objects(storage):
    key = "generated_content/alice/7/nothing.png"
    assert not storage.exists(key)
    with pytest.raises(ObjectMissing):
        storage.size(key)
    with pytest.raises(ObjectMissing):
        storage.open_range(key, 0, 3)
    storage.delete(key)  # deleting what is not there is not an error


def test_list_and_delete(storage, tmp_path):
    keys = ["generated_content/alice/1/image_1.png", "generated_content/alice/1/video_1.mp4",
            "generated_content/alice/2/image_1.png", "generated_content/bob/1/image_1.png"]
    for i, k in enumerate(keys):
        storage.put_file(_tmpfile(tmp_path, b"x" * (i + 1), f"t{i}"), k)
    assert storage.list("generated_content/alice/") == keys[:3]
    assert storage.list("generated_content/alice/1/") == keys[:2]
    assert storage.list("generated_content/al") == keys[:3]
    assert storage.list("generated_content/") == keys
    storage.delete(keys[0])
    assert not storage.exists(keys[0])
    assert storage.list("generated_content/alice/1/") == keys[1:2]


@pytest.mark.parametrize("bad", [
    "../etc/passwd", "generated_content/../../etc/passwd", "/etc/passwd", "generated_content/a//b",
    "generated_content/./x", "generated_content/a\x00b", "generated_content/a\nb", "generated_content/a\x7fb",
    "generated_content\\..\\x", "generated_content/x/", "", "a" * 1100,
], ids=lambda k: repr(k[:40]))
def test_unsafe_keys_are_refused_before_any_backend_call(storage, tmp_path, bad):
    tmp = _tmpfile(tmp_path, b"data")
    with pytest.raises(BadKey) as e:
        storage.put_file(tmp, bad)
    assert isinstance(e.value, BadInput) and "storage key" in e.value.message
    assert tmp.exists()  # the refused file is not lost
    for op in (storage.exists, storage.size, storage.delete, lambda k: storage.open_range(k, 0, 1),
               lambda k: storage.presigned_url(k, 60)):
        with pytest.raises(BadKey):
            op(bad)
    if bad and not bad.endswith("/"):  # "" and "dir/" are fine listing prefixes
        with pytest.raises(BadKey):
            storage.list(bad + "/")


def test_content_key_keeps_a_user_in_its_folder():
    assert content_key("alice", 7, "image_1.png") == "generated_content/alice/7/image_1.png"
    for user in ("../bob", "a/b", "..", ".", "", "al\x00ice"):
        with pytest.raises(BadKey):
            content_key(user, 7, "image_1.png")
    with pytest.raises(BadKey):
        content_key("alice", 7, "../../x.png")
    assert validate_key("generated_content/alice/7/image 1.png")  # spaces and unicode are fine
    assert validate_key("generated_content/zoë/7/a.png")


def test_presigned_url(storage, tmp_path):
    import requests

    data = b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000
    storage.put_file(_tmpfile(tmp_path, data), KEY)
    url = storage.presigned_url(KEY, 120)
    if not storage.has_urls:
        assert url is None  # a folder has no URLs: the gallery streams the file instead
        return
    r = requests.get(url, timeout=5)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "video/mp4"  # so a browser plays it
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert r.status_code == 206 and r.content == data[100:200]

    # The same URL with one character of its signature changed is refused: signatures are checked.
    parts = urlsplit(url)
    q = parse_qsl(parts.query)
    q = [(k, (("1" if v[0] == "0" else "0") + v[1:] if k == "X-Amz-Signature" else v)) for k, v in q]
    assert any(k == "X-Amz-Signature" for k, _ in q)
    tampered = urlunsplit(parts._replace(query=urlencode(q)))
    assert tampered != url
    r = requests.get(tampered, timeout=5)
    assert r.status_code == 403, r.text
    assert b"Signature" in r.content or b"AccessDenied" in r.content
    # ... and so is the object without any signature.
    assert requests.get(url.split("?")[0], timeout=5).status_code == 403
    with pytest.raises(BadInput):
        storage.presigned_url(KEY, 0)


# -- S3 only: configuration and failures become aigen's errors ------------------------------------------------------

def test_s3_wrong_secret_is_a_clear_error(s3_server, tmp_path):
    env = _s3_env(s3_server, "t/wrong")
    env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    st = from_config(None, env=env)
    tmp = _tmpfile(tmp_path, b"paid for")
    with pytest.raises(StorageError) as e:
        st.put_file(tmp, KEY)
    assert "refused the credentials" in e.value.message and "AWS_SECRET_ACCESS_KEY" in e.value.hint
    assert tmp.exists() and tmp.read_bytes() == b"paid for"  # nothing lost
    with pytest.raises(StorageError, match="refused the credentials"):
        st.exists(KEY)
    with pytest.raises(StorageError, match="refused the credentials"):
        st.open_range(KEY, 0, 1)


def test_s3_missing_bucket_is_a_clear_error(s3_server, tmp_path):
    env = _s3_env(s3_server, "p")
    env["AIGEN_STORAGE_URL"] = "s3://no-such-bucket-aigen/p"
    st = from_config(None, env=env)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-aigen' does not exist"):
        st.put_file(_tmpfile(tmp_path, b"x"), KEY)
    with pytest.raises(StorageError, match="does not exist"):
        st.exists(KEY)
    with pytest.raises(StorageError, match="does not exist"):
        st.check()


def test_s3_unreachable_endpoint_is_a_clear_error(tmp_path):
    pytest.importorskip("boto3")
    from fakes.cluster_services import free_port

    env = {"AIGEN_STORAGE_URL": "s3://b/p", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
           "AIGEN_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AIGEN_S3_MAX_ATTEMPTS": "1",
           "AIGEN_S3_CONNECT_TIMEOUT": "1"}
    st = from_config(None, env=env)
    tmp = _tmpfile(tmp_path, b"x")
    with pytest.raises(StorageError) as e:
        st.put_file(tmp, KEY)
    assert "cannot reach the S3 endpoint" in e.value.message and e.value.retryable
    assert tmp.exists()


@pytest.mark.parametrize("env, words", [
    ({"AIGEN_STORAGE_URL": "gs://b/p"}, "not understood"),
    ({"AIGEN_STORAGE_URL": "s3:///p"}, "not s3://BUCKET/PREFIX"),
    ({"AIGEN_STORAGE_URL": "s3://b/p", "AIGEN_S3_ENDPOINT_URL": "127.0.0.1:9000"}, "http:// or https://"),
    ({"AIGEN_STORAGE_URL": "s3://b/p", "AIGEN_S3_PATH_STYLE": "maybe"}, "use 1 or 0"),
    ({"AIGEN_STORAGE_URL": "s3://b/p", "AIGEN_S3_READ_TIMEOUT": "soon"}, "not a number"),
    ({"AIGEN_STORAGE_URL": "s3://b/../p"}, "storage key"),
])
def test_bad_storage_configuration_is_bad_input(env, words):
    if env["AIGEN_STORAGE_URL"].startswith("s3://"):
        pytest.importorskip("boto3")
    with pytest.raises(BadInput, match=words.replace("(", r"\(").replace(")", r"\)").replace("/", "/")):
        from_config(None, env=env)


def test_s3_path_style_and_prefix(s3_server, tmp_path):
    """Objects land under the prefix, at path-style URLs of the configured endpoint."""
    import boto3

    st = from_config(None, env=_s3_env(s3_server, "team/a"))
    st.put_file(_tmpfile(tmp_path, b"abc"), KEY)
    assert st.presigned_url(KEY, 60).startswith(f"{s3_server.endpoint_url}/{s3_server.bucket}/team/a/{KEY}?")
    raw = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                       aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region)
    assert raw.get_object(Bucket=s3_server.bucket, Key=f"team/a/{KEY}")["Body"].read() == b"abc"


def test_local_storage_is_todays_layout(tmp_path):
    home = tmp_path / "home"
    st = from_config(home, env={})
    st.put_file(_tmpfile(tmp_path, b"png"), "generated_content/alice/3/image_1.png")
    assert (home / "generated_content" / "alice" / "3" / "image_1.png").read_bytes() == b"png"
    # a half-written temporary next to the files is not an object
    (home / "generated_content" / "alice" / "3" / ".image_2.png.1.ab.part").write_bytes(b"half")
    assert st.list("generated_content/alice/") == ["generated_content/alice/3/image_1.png"]


def test_errors_are_aigen_errors():
    assert issubclass(StorageError, AigenError) and issubclass(ObjectMissing, StorageError)
    assert issubclass(BadKey, BadInput) and issubclass(BadRange, BadInput)


def test_cli_help_and_status_import_no_cluster_library(tmp_path):
    """The embedded path loads neither boto3 nor psycopg nor the storage layer."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aigen.cli import app\n"
        "r = CliRunner()\n"
        "for args in (['--help'], ['status']):\n"
        "    res = r.invoke(app, args)\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'psycopg', 'dbos', "
        "'s3transfer') or m.startswith('aigen.storage'))\n"
        "print('LOADED', bad)\n"
    )
    env = {**__import__("os").environ, "AIGEN_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
