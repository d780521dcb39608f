"""`aigen export`: a generation's files and prompt as one zip (the gallery's Download all, from a shell)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from aigen.cli.output import console, fail, human_bytes, print_json
from aigen.errors import AigenError, BadInput, NotFound


def export(
    ctx: typer.Context,
    generation_id: str = typer.Argument(..., help="The generation id (or a unique prefix of 4+ characters)."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", metavar="PATH",
        help="Where to write the zip: a file, a folder (the zip gets its usual name there), or - for standard "
        "output. Default: aigen-<first words of the prompt>-<id>.zip in the current folder.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace the file if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write a generation's made files and its prompt as one zip: the gallery's "Download all".

    The same zip as the gallery's (image_1.png ... video_5.mp4 and prompt.txt in one folder; media stored, not
    recompressed), read from the home or from object storage alike and written as it is read (a temporary file
    beside the target, moved into place when complete). Logged as a `zip_download` event.
    """
    from aigen.storage import BadKey, ObjectMissing, StorageError, from_config
    from aigen.web.zipstream import check_members, members, stream_zip, zip_name

    state = ctx.obj
    target = None
    try:
        store, gen_id = state.generation(generation_id)
        gen = store.get_generation(gen_id)
        files = members(gen, store.assets(gen_id))
        if not files:
            raise NotFound(f"generation {gen_id} has no files yet ({gen['status']})",
                           hint=f"see `aigen status {gen_id}`")
        storage = from_config(state.home.path)
        try:
            check_members(storage, gen, files)
        except (BadKey, ObjectMissing) as e:
            raise AigenError(f"a file of generation {gen_id} is missing or misplaced: {e}",
                             hint="`aigen doctor` says which and how to mend it") from None
        name = zip_name(gen)
        chunks = stream_zip(storage, gen, files, folder=name[:-4])
        total = 0
        if output == "-":
            if sys.stdout.isatty():
                raise BadInput("refusing to write a zip to a terminal", hint="redirect it: aigen export ID -o - > x.zip")
            out = sys.stdout.buffer
            for chunk in chunks:
                out.write(chunk)
                total += len(chunk)
            out.flush()
            target = None
        else:
            target = Path(output) if output else Path.cwd() / name
            if target.is_dir():
                target = target / name
            if target.exists() and not force:
                raise BadInput(f"{target} exists", hint="pass --force to replace it, or choose another --output")
            if not target.parent.is_dir():
                raise BadInput(f"no folder {target.parent} to write the zip in")
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            try:
                with open(tmp, "wb") as fh:
                    for chunk in chunks:
                        fh.write(chunk)
                        total += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        store.log_event("zip_download", ok=True, user_id=gen["user_id"], generation_id=gen_id,
                        detail=f"by aigen export: {len(files)} file(s), {total} bytes")
    except StorageError as e:
        fail(AigenError(f"the file store cannot be read: {e.message}"), as_json=as_json)
    except AigenError as e:
        fail(e, as_json=as_json)
    except OSError as e:
        from aigen.errors import describe_os_error

        where = target if output != "-" else "standard output"
        fail(describe_os_error(e, where) or AigenError(f"cannot write {where}: {e.strerror or e}"), as_json=as_json)
    if target is None:
        return
    if as_json:
        print_json({"id": gen_id, "path": str(target), "files": len(files), "bytes": total})
    else:
        console.print(f"Wrote {target} ({len(files)} file(s) and prompt.txt, {human_bytes(total)}).")
