"""Files in a folder (the home): what the embedded pipeline does today, behind the Storage interface."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import describe_os_error
from ..pipeline.files import PART_SUFFIX, fsync_dir, place, temp_path_for
from . import (ByteStream, ObjectMissing, Storage, StorageError, check_range, check_expiry, validate_key,
               validate_prefix)


class LocalStorage(Storage):
    """Objects are files under ``root``: key ``generated_content/alice/3/image_1.png`` is ``root/<key>``."""

    has_urls = False

    def __init__(self, root):
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _fail(self, e: OSError, what: str, path) -> StorageError:
        known = describe_os_error(e, path)
        if known is not None:
            raise known from None
        return StorageError(f"could not {what} {path}: {e.strerror or e}")

    def put_file(self, local_tmp_path, key: str) -> None:
        final = self.path_of(key)
        tmp = Path(local_tmp_path)
        if not tmp.is_file():
            raise StorageError(f"cannot store {key}: the temporary file {tmp} does not exist")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                place(tmp, final)  # same filesystem: fsync + rename, atomic
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                # Another filesystem: copy next to the final name, then rename; the temporary goes last.
                part = temp_path_for(final)
                try:
                    shutil.copyfile(tmp, part)
                    place(part, final)
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                tmp.unlink()
        except OSError as e:
            raise self._fail(e, "write", final) from None

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def size(self, key: str) -> int:
        return self.stat(key)[0]

    def stat(self, key: str) -> tuple[int, float]:
        p = self.path_of(key)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ObjectMissing(f"no file is stored under {key} (looked for {p})") from None
        except OSError as e:
            raise self._fail(e, "read", p) from None
        if not p.is_file():
            raise ObjectMissing(f"no file is stored under {key} ({p} is not a file)")
        return st.st_size, st.st_mtime

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> ByteStream:
        p = self.path_of(key)
        try:
            fh = open(p, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectMissing(f"no file is stored under {key} (looked for {p})") from None
        except OSError as e:
            raise self._fail(e, "read", p) from None
        try:
            first, length = check_range(key, os.fstat(fh.fileno()).st_size, start, end)
            fh.seek(first)
        except BaseException:
            fh.close()
            raise
        return ByteStream(fh, length, on_error=lambda e: self._fail(e, "read", p) if isinstance(e, OSError) else e)

    def presigned_url(self, key: str, expires_s: int = 300, *, download_name: str | None = None) -> str | None:
        validate_key(key)
        check_expiry(expires_s)
        return None  # a folder has no URLs: the gallery streams the file after its ownership check

    def delete(self, key: str) -> None:
        p = self.path_of(key)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._fail(e, "delete", p) from None
        fsync_dir(p.parent)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Walk the deepest folder the prefix names, then filter by the rest of it.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*head.split("/")) if head else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                if name.startswith(".") and name.endswith(PART_SUFFIX):
                    continue  # a file being written, not an object yet
                key = rel + name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)
