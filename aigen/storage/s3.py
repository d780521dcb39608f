"""Files in S3-compatible object storage (AWS S3, SeaweedFS, MinIO, R2, ...). Needs ``aigen[cluster]`` (boto3).

Configuration (environment):

- ``AIGEN_STORAGE_URL=s3://BUCKET/PREFIX``: the bucket, and a key prefix every object goes under (optional).
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``): when unset, boto3's own chain
  (shared config file, instance role) is used.
- ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``): default ``us-east-1``.
- ``AIGEN_S3_ENDPOINT_URL``: an S3-compatible server instead of AWS.
- ``AIGEN_S3_PATH_STYLE``: ``1`` for path-style addressing (``http://host/bucket/key``), ``0`` for virtual-hosted
  (``http://bucket.host/key``); default ``1`` when an endpoint URL is set, else ``0``.
- ``AIGEN_S3_CONNECT_TIMEOUT`` / ``AIGEN_S3_READ_TIMEOUT`` (seconds, default 5 / 60), ``AIGEN_S3_MAX_ATTEMPTS``
  (default 3, with botocore's standard backoff on throttling and 5xx).

boto3 is imported here only, and only when an S3Storage is made.
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import BadInput
from . import (ByteStream, ObjectMissing, Storage, StorageError, BadRange, check_expiry, check_range, validate_key,
               validate_prefix)

_CRED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
               "AuthorizationHeaderMalformed", "InvalidSecurity", "403", "Forbidden"}


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        v = float(raw)
    except ValueError:
        raise BadInput(f"{name}={raw!r} is not a number of seconds") from None
    if v <= 0:
        raise BadInput(f"{name}={raw!r} must be more than 0")
    return v


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise BadInput(f"{name}={raw!r}: use 1 or 0")


_SESSION_LOCK = threading.Lock()
_SESSION = None


def _session(boto3):
    """One boto3 session per process: loading S3's service model costs ~0.3 s, so it is done once."""
    global _SESSION
    if _SESSION is None:
        _SESSION = boto3.session.Session()
    return _SESSION


class S3Storage(Storage):
    has_urls = True

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None, session_token: str | None = None,
                 path_style: bool | None = None, connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 max_attempts: int = 3):
        try:
            import boto3
            import botocore.config
        except ImportError:
            raise StorageError("S3 storage needs boto3, which is not installed",
                               hint="pip install 'aigen[cluster]'") from None
        if not bucket:
            raise BadInput("the S3 storage needs a bucket name (AIGEN_STORAGE_URL=s3://BUCKET/PREFIX)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        if path_style is None:
            path_style = self.endpoint_url is not None
        cfg = botocore.config.Config(
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max(1, int(max_attempts))},
            s3={"addressing_style": "path" if path_style else "virtual"},
            signature_version="s3v4",
        )
        with _SESSION_LOCK:  # a boto3 session is not safe to make clients from in two threads at once
            self._client = _session(boto3).client(
                "s3", endpoint_url=self.endpoint_url, config=cfg, region_name=self.region,
                aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
                aws_session_token=session_token or None)
        self._bucket_checked = False

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> "S3Storage":
        env = os.environ if env is None else env
        u = urlsplit(url)
        if u.scheme != "s3" or not u.netloc:
            raise BadInput(f"AIGEN_STORAGE_URL={url!r} is not s3://BUCKET/PREFIX")
        try:
            attempts = int(env.get("AIGEN_S3_MAX_ATTEMPTS") or 3)
        except ValueError:
            raise BadInput(f"AIGEN_S3_MAX_ATTEMPTS={env.get('AIGEN_S3_MAX_ATTEMPTS')!r} is not a whole number") from None
        endpoint = (env.get("AIGEN_S3_ENDPOINT_URL") or "").strip() or None
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise BadInput(f"AIGEN_S3_ENDPOINT_URL={endpoint!r} must be an http:// or https:// URL")
        return cls(
            u.netloc, u.path, endpoint_url=endpoint,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            access_key=env.get("AWS_ACCESS_KEY_ID"), secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            path_style=_flag(env, "AIGEN_S3_PATH_STYLE", endpoint is not None),
            connect_timeout=_float(env, "AIGEN_S3_CONNECT_TIMEOUT", 5.0),
            read_timeout=_float(env, "AIGEN_S3_READ_TIMEOUT", 60.0),
            max_attempts=attempts,
        )

    # -- helpers --------------------------------------------------------------------------------------------------

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS ({self.region})"
        return f"s3://{self.bucket}/{self.prefix} at {where}"

    def _full(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, e: BaseException, what: str, key: str | None = None) -> Exception:
        """The AigenError for a boto3/botocore failure (or ``e`` itself when it is not one)."""
        import botocore.exceptions as bx

        where = self.describe()
        obj = f"{key} in {where}" if key else where
        if isinstance(e, bx.NoCredentialsError):
            return StorageError(f"no S3 credentials to {what} {obj}",
                                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                          bx.ConnectionClosedError)) or isinstance(e, bx.HTTPClientError):
            return StorageError(f"cannot reach the S3 endpoint to {what} {obj}: {e}", retryable=True,
                                hint="check AIGEN_S3_ENDPOINT_URL and the network; try again")
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {}) or {}
            code = str(err.get("Code") or "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            msg = err.get("Message") or code or str(status)
            if code == "NoSuchBucket":
                return StorageError(f"the bucket {self.bucket!r} does not exist ({where})",
                                    hint="create it, or fix the bucket in AIGEN_STORAGE_URL")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectMissing(f"no object is stored under {obj}")
            if code in ("InvalidRange", "416"):
                return BadRange(f"the byte range asked of {obj} is outside the object")
            if code in _CRED_CODES or status == 403:
                return StorageError(f"S3 refused the credentials to {what} {obj} ({code or status}: {msg})",
                                    hint="check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's "
                                         "permissions")
            retryable = code in ("SlowDown", "Throttling", "RequestTimeout") or (status or 0) >= 500
            return StorageError(f"S3 failed to {what} {obj}: {code or status}: {msg}", retryable=retryable)
        if isinstance(e, bx.BotoCoreError):
            return StorageError(f"S3 failed to {what} {obj}: {e}")
        return e

    def _missing_or_no_bucket(self, key: str) -> ObjectMissing:
        """A HEAD 404 says nothing of why: tell a missing bucket from a missing object (once)."""
        if not self._bucket_checked:
            self.check()
        return ObjectMissing(f"no object is stored under {key} in {self.describe()}")

    def check(self) -> None:
        """Raise a clear StorageError unless the bucket exists and the credentials may use it."""
        import botocore.exceptions as bx

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except bx.ClientError as e:
            err = e.response.get("Error", {}) or {}
            if str(err.get("Code")) in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"the bucket {self.bucket!r} does not exist ({self.describe()})",
                                   hint="create it, or fix the bucket in AIGEN_STORAGE_URL") from None
            raise self._error(e, "use the bucket") from None
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "use the bucket") from None
        self._bucket_checked = True

    def _head(self, key: str) -> dict | None:
        import botocore.exceptions as bx

        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except bx.ClientError as e:
            err = e.response.get("Error", {}) or {}
            if str(err.get("Code")) in ("404", "NoSuchKey", "NotFound"):
                self._missing_or_no_bucket(key)
                return None
            raise self._error(e, "look up", key) from None
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "look up", key) from None

    # -- the interface -------------------------------------------------------------------------------------------

    def put_file(self, local_tmp_path, key: str) -> None:
        full = self._full(key)
        tmp = Path(local_tmp_path)
        try:
            size = tmp.stat().st_size
        except OSError as e:
            raise StorageError(f"cannot store {key}: the temporary file {tmp} cannot be read ({e.strerror})") from None
        from boto3.s3.transfer import TransferConfig

        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"  # a browser plays what it is told
        try:
            # One PUT, or a multipart upload that becomes visible only when completed: atomic for readers.
            self._client.upload_file(str(tmp), self.bucket, full, ExtraArgs={"ContentType": ctype},
                                     Config=TransferConfig(multipart_threshold=64 << 20, use_threads=False))
        except Exception as e:  # noqa: BLE001
            import boto3.exceptions

            inner = e.__cause__ or e.__context__
            if isinstance(e, boto3.exceptions.S3UploadFailedError) and inner is not None:
                e = inner
            mapped = self._error(e, "upload", key)
            if mapped is e and isinstance(e, boto3.exceptions.S3UploadFailedError):
                mapped = StorageError(f"S3 failed to upload {key} to {self.describe()}: {e}")
            raise mapped from None
        head = self._head(key)
        if head is None or int(head.get("ContentLength", -1)) != size:
            got = None if head is None else head.get("ContentLength")
            raise StorageError(f"the upload of {key} to {self.describe()} did not land whole "
                               f"({got} bytes stored of {size}); the local file {tmp} is kept")
        try:
            tmp.unlink()
        except OSError:
            pass  # stored; a leftover temporary is cleaned with the others

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        return self.stat(key)[0]

    def stat(self, key: str) -> tuple[int, float]:
        head = self._head(key)
        if head is None:
            raise ObjectMissing(f"no object is stored under {key} in {self.describe()}")
        when = head.get("LastModified")
        return int(head["ContentLength"]), (when.timestamp() if when is not None else 0.0)

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> ByteStream:
        full = self._full(key)
        if not isinstance(start, int) or start < 0 or (end is not None and (not isinstance(end, int) or end < start)):
            check_range(key, 1 << 62, start, end)  # raises BadRange naming the bad bounds
        kw = {}
        if start or end is not None:
            kw["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            r = self._client.get_object(Bucket=self.bucket, Key=full, **kw)
        except Exception as e:  # noqa: BLE001
            mapped = self._error(e, "read", key)
            if isinstance(mapped, BadRange):
                try:
                    size = self.size(key)
                except ObjectMissing:
                    raise mapped from None
                check_range(key, size, start, end)  # an empty object asked from 0 is fine
                return ByteStream(_Empty(), 0)
            raise mapped from None
        return ByteStream(r["Body"], int(r["ContentLength"]), on_error=lambda e: self._error(e, "read", key))

    def presigned_url(self, key: str, expires_s: int = 300, *, download_name: str | None = None) -> str | None:
        full = self._full(key)
        check_expiry(expires_s)
        params = {"Bucket": self.bucket, "Key": full}
        if download_name is not None:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", download_name):
                raise BadInput(f"a download name must be letters, digits, '.', '_' or '-', not {download_name!r}")
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        try:
            return self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "sign a URL for", key) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as e:  # noqa: BLE001
            mapped = self._error(e, "delete", key)
            if isinstance(mapped, ObjectMissing):
                return
            raise mapped from None

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=base + prefix):
                for obj in page.get("Contents", []) or []:
                    keys.append(obj["Key"][len(base):])
        except Exception as e:  # noqa: BLE001
            raise self._error(e, "list") from None
        return sorted(keys)


class _Empty:
    def read(self, n=-1):
        return b""
