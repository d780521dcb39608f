"""The previews of kept files, in whatever storage holds them (aigen.storage): made by the pipeline with
each file, by the gallery for a file shown without one, and by `aigen doctor --thumbnails`.

The previews live beside their file (``image_1.png`` -> ``image_1.thumb.webp``,
``image_1.thumb2x.webp``; a video's come from its poster frame) and the assets
row names them (``thumb_path``, ``thumb2x_path``), so the gallery serves only
what the database lists, after the same ownership check as the file itself.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from aigen.errors import AigenError, MediaCheckError
from aigen.pipeline.files import temp_path_for

log = logging.getLogger("aigen.thumbs")


def store_thumbnails(storage, picture: Path, key: str, scratch: Path, *, image=None) -> dict:
    """Make the previews of the local picture ``picture`` for the file stored under ``key`` and store them
    beside it (atomically, each). Returns the row's fields: {"thumb_path": ..., "thumb2x_path": ...}.

    ``image`` is ``picture`` already decoded, when the caller has it (the pipeline's check decoded it).

    ``scratch`` is a local folder for the temporary files when the storage is not a folder.
    Raises MediaCheckError (not a picture), StorageError or OSError.
    """
    from aigen.media.thumbs import make_thumbnails, thumb_keys
    from aigen.storage.local import LocalStorage

    keys = thumb_keys(key)
    if isinstance(storage, LocalStorage):
        tmps = [temp_path_for(storage.path_of(k)) for k in keys]  # beside the final name: a rename
    else:
        tmps = [temp_path_for(scratch / k.rsplit("/", 1)[-1]) for k in keys]
    try:
        make_thumbnails(picture, tmps, image=image)
        for tmp, k in zip(tmps, keys):
            storage.put_file(tmp, k)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return {"thumb_path": keys[0], "thumb2x_path": keys[1]}


def owned_key(row: dict, rel: str | None) -> str | None:
    """``rel`` if it is a valid key inside the asset's own generation folder, else None."""
    from aigen.storage import BadKey, validate_key

    try:
        key = validate_key(rel)
    except BadKey:
        return None
    return key if key.startswith(f"generated_content/{row['user_id']}/{row['generation_id']}/") else None


def ensure_thumbnails(store, storage, row: dict) -> dict:
    """Make and record the previews of one done asset that has none; returns the row's new fields.

    ``row`` needs id, kind, path, poster_path, generation_id and user_id (the
    generation's owner). The source is the image, or the video's poster frame
    (made from the video when it has no poster). The row is updated only if it
    still names the same file. Raises AigenError (or OSError) when they cannot
    be made.
    """
    from aigen.pipeline.files import download_to
    from aigen.storage.local import LocalStorage

    key = owned_key(row, row.get("path"))
    if key is None:
        raise MediaCheckError(f"asset {row['id']} has no file in its generation's folder to preview")
    poster = owned_key(row, row.get("poster_path")) if row.get("kind") == "video" else None
    source_key = poster or key
    local = isinstance(storage, LocalStorage)
    with tempfile.TemporaryDirectory(prefix="aigen-thumbs-") as scratch_name:
        scratch = Path(scratch_name)
        if local:
            source = storage.path_of(source_key)
            if not source.is_file():
                raise MediaCheckError(f"{source_key} is missing: no preview can be made")
        else:
            source = scratch / ("source" + Path(source_key).suffix)
            download_to(storage, source_key, source)
        if row.get("kind") == "video" and poster is None:
            from aigen.media.probe import make_poster

            frame = scratch / "frame.jpg"
            make_poster(source, frame)
            source = frame
        fields = store_thumbnails(storage, source, key, scratch)
    with store.transaction() as db:
        db.conn.execute(
            "UPDATE assets SET thumb_path = ?, thumb2x_path = ? WHERE id = ? AND status = 'done' AND path = ?",
            (fields["thumb_path"], fields["thumb2x_path"], row["id"], row["path"]))
    return fields


def missing(store, *, user_id: str | None = None) -> list[dict]:
    """Done assets without previews (with their owner), oldest generation first."""
    sql = ("SELECT a.id, a.kind, a.idx, a.path, a.poster_path, a.generation_id, g.user_id FROM assets a "
           "JOIN generations g ON g.id = a.generation_id WHERE a.status = 'done' AND a.path IS NOT NULL "
           "AND (a.thumb_path IS NULL OR a.thumb2x_path IS NULL)")
    params: list = []
    if user_id is not None:
        sql += " AND g.user_id = ?"
        params.append(user_id)
    return store.query(sql + " ORDER BY g.created_at, a.generation_id, a.kind, a.idx", params)


def make_missing(store, storage, *, progress=None) -> tuple[int, list[tuple[dict, str]]]:
    """`aigen doctor --thumbnails`: previews for every done asset without them.
    Returns (how many were made, [(row, why) for each that could not be])."""
    made, failed = 0, []
    for row in missing(store):
        try:
            ensure_thumbnails(store, storage, row)
            made += 1
        except (AigenError, OSError) as e:
            failed.append((row, getattr(e, "message", None) or str(e)))
        if progress is not None:
            progress(row)
    return made, failed
