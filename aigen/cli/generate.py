"""`aigen generate`: check everything, write the request, make the assets."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from aigen import config
from aigen.cli.output import console, escape, fail, print_json
from aigen.errors import AigenError, BadInput


def generate(
    ctx: typer.Context,
    prompt: str = typer.Argument(..., help="What to make. Use '-' to read the prompt from standard input. CR and CRLF become newlines; "
                              "invisible-only prompts and bidirectional control characters are refused."),
    user: str = typer.Option(..., "--user", "-u", help="Who the content is for (letters, digits, . _ -; 1-64 chars)."),
    images: int = typer.Option(config.DEFAULT_IMAGES, "--images", help="How many images to make (0-10)."),
    videos: int = typer.Option(config.DEFAULT_VIDEOS, "--videos", help="How many videos to make (0-10)."),
    image_provider: str = typer.Option("local", "--image-provider", help="Provider for the images: local (procedural renderer, no key; not an AI model), openai, stability, runway, fal (FLUX and any fal model), gemini (Imagen, Gemini image models), comfyui (your ComfyUI server, AIGEN_COMFYUI_URL). See `aigen providers`."),
    video_provider: str = typer.Option("local", "--video-provider", help="Provider for the videos: local (procedural renderer, no key; not an AI model), runway, pictory, fal (Kling, Hailuo, Veo, Seedance and any fal model), gemini (Veo, Omni Flash), comfyui (your ComfyUI server, AIGEN_COMFYUI_URL). See `aigen providers`."),
    image_model: Optional[str] = typer.Option(None, "--image-model", help="Image model (default: the provider's; for comfyui, the checkpoint file its workflow loads)."),
    video_model: Optional[str] = typer.Option(None, "--video-model", help="Video model (default: the provider's; for comfyui, the model file its workflow loads)."),
    image_option: Optional[list[str]] = typer.Option(
        None,
        "--image-option",
        help="A model input passed through to the image provider (fal, comfyui, gemini), for example steps=30, "
        "workflow=PATH or negative_prompt=blur; repeat for more. A value that reads as JSON (number, true/false, list, object) is "
        "sent as that, anything else as text.",
        metavar="KEY=VALUE",
    ),
    video_option: Optional[list[str]] = typer.Option(
        None,
        "--video-option",
        help="A model input passed through to the video provider (fal, comfyui, gemini), for example "
        "negative_prompt=blur or generate_audio=false; repeat for more. "
        "Values as for --image-option.",
        metavar="KEY=VALUE",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Base seed; each asset gets its own seed derived from it. Default: random."
    ),
    image_size: str = typer.Option(config.DEFAULT_IMAGE_SIZE, "--image-size", help="Image size WIDTHxHEIGHT."),
    video_size: str = typer.Option(
        config.DEFAULT_VIDEO_SIZE, "--video-size", help="Video size WIDTHxHEIGHT (even numbers)."
    ),
    duration: float = typer.Option(config.DEFAULT_DURATION, "--duration", help="Video length in seconds (0.5-60)."),
    fps: int = typer.Option(config.DEFAULT_FPS, "--fps", help="Video frames per second (1-60)."),
    video_from_images: bool = typer.Option(
        False,
        "--video-from-images",
        help="Make each video from this request's own images (video i animates image i, cycling when there "
        "are more videos than images), so videos and images match. Needs a video provider that can "
        "(runway).",
    ),
    voice: Optional[str] = typer.Option(
        None,
        "--voice",
        help="Narrator of the videos (pictory): a Pictory voice name or id (default Martin), or 'none' for "
        "silent videos.",
        metavar="NAME|none",
    ),
    notify_at: Optional[str] = typer.Option(
        None,
        "--notify-at",
        help="When to be notified: a clock time (18:00, 6:30pm), an ISO date-time, or a delay (+30m, in 2 hours).",
    ),
    notify_via: Optional[str] = typer.Option(
        None,
        "--notify-via",
        help="How to be notified: desktop, email, console (comma-separated) or none. Default: desktop "
        "(the console where there is no desktop), plus email when --email is given.",
        metavar="CHANNELS",
    ),
    email: Optional[str] = typer.Option(
        None, "--email", help="Address for email notifications; remembered for the user.", metavar="ADDRESS"
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Run in a background process and print the generation id at once."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check everything (keys too), print the plan: providers, models, counts and the estimated "
        "cost where the price is known. Calls no provider and writes nothing.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or file table: one summary line (id, status, counts)."),
) -> None:
    """Make videos and images from PROMPT into generated_content/<user>/<generation>/.

    Every input is checked before anything is written. Exit codes: 0 all assets made,
    1 some failed (see `aigen status ID`, finish with `aigen retry ID`), 2 bad input,
    130 Ctrl-C, 143 SIGTERM (started assets finish first; resume with `aigen retry ID`).
    """
    from aigen.cli.runview import Terminated, catch_sigterm, stopped
    from aigen.pipeline.plan import RequestSpec, prepare

    state = ctx.obj
    # SIGTERM (kill, timeout, systemctl stop) takes Ctrl-C's path from here on:
    # a clean stop, a message, exit 143. The handler is restored when the command ends.
    ctx.call_on_close(catch_sigterm())
    gen_id = None
    try:
        if prompt == "-":
            prompt = sys.stdin.read()
        when = None
        if notify_at is not None:
            from datetime import datetime, timezone

            from aigen.notify.when import parse_notify_at

            when = parse_notify_at(notify_at, datetime.now(timezone.utc))
        from aigen.cli.notify import resolve_notify_options

        channels, address = resolve_notify_options(state, user, notify_via, email)
        image_options = config.parse_pass_options("--image-option", image_option)
        video_options = config.parse_pass_options("--video-option", video_option)
        spec = RequestSpec(
            user_id=user,
            prompt=prompt,
            images=images,
            videos=videos,
            image_provider=image_provider,
            video_provider=video_provider,
            image_model=image_model,
            video_model=video_model,
            seed=seed,
            image_size=image_size,
            video_size=video_size,
            duration=duration,
            fps=fps,
            notify_at=when,
            notify_via=channels,
            notify_email=address,
            options={**({"video_from_images": True} if video_from_images else {}),
                     **({"voice": voice} if voice is not None else {}),
                     **({"image_options": image_options} if image_options else {}),
                     **({"video_options": video_options} if video_options else {})},
        )
        home = state.home
        gen_row, asset_rows = prepare(spec, home=home.path)
        if os.environ.get("AIGEN_STORAGE_URL"):
            # Files go to object storage: a bad URL, a missing bucket or refused credentials are said now, in
            # one line, before a row is written or a provider is paid. (Unset: nothing is loaded.)
            from aigen.storage import from_config

            storage = from_config(home.path)
            check = getattr(storage, "check", None)
            if check is not None:
                check()
        if dry_run:
            _print_plan(gen_row, asset_rows, home=home.path, seed_given=seed is not None, as_json=as_json)
            raise typer.Exit(0)
        store = state.store()
        gen_id = store.create_generation(gen_row, asset_rows)
        if email:
            store.ensure_user(user, email=email.strip())
    except AigenError as e:
        fail(e, as_json=as_json)
    except Terminated as e:
        raise stopped(gen_id, e, state.home) from None
    try:
        _start(state, store, home, gen_id, gen_row, user, images, videos, image_provider, video_provider,
               detach=detach, as_json=as_json, quiet=quiet)
    except Terminated as e:
        raise stopped(gen_id, e, state.home) from None


def _start(state, store, home, gen_id, gen_row, user, images, videos, image_provider, video_provider, *,
           detach: bool, as_json: bool, quiet: bool) -> None:
    from aigen.cluster import database_url

    from aigen.cli.cluster import use_workers

    url = database_url(home=home.path)
    if use_workers(store, url):
        _start_cluster(state, store, home, url, gen_id, gen_row, user, images, videos, image_provider,
                       video_provider, detach=detach, as_json=as_json, quiet=quiet)
    if url is not None and not as_json and not quiet:
        # Say it: on a cluster store nobody is taking jobs, so this machine makes the assets itself
        # (with its own keys, its own per-process caps), as in embedded mode.
        console.print("[dim]No live worker on the cluster (`aigen cluster status`): making the assets in this "
                      "process. Start `aigen worker` on a machine to have them queued for the cluster.[/]",
                      highlight=False)
    if detach:
        pid, log_path = spawn_detached(home, gen_id)
        store.set_generation_fields(gen_id, log_path=str(log_path))
        from aigen.cli.notify import describe_schedule, print_schedule

        schedule = describe_schedule(home, store.get_generation(gen_id), store)
        if as_json:
            print_json({"id": gen_id, "status": "Processing", "detached": True, "pid": pid, "log": str(log_path),
                        "notification": schedule})
        else:
            console.print(f"{gen_id}")
            console.print(
                f"[dim]Running in the background (pid {pid}); log: {log_path}. "
                f"Follow it with `aigen status {gen_id}`.[/]",
                highlight=False,
            )
            print_schedule(home, schedule, store)
        raise typer.Exit(0)

    if not as_json and not quiet:
        for note in gen_row["options"].get("notes") or []:
            console.print(f"[dim]Note: {escape(note)}[/]", highlight=False)
        into = config.stored_location(home.path, f"generated_content/{user}/{gen_id}")
        console.print(
            f"Generation [bold]{gen_id}[/] for {user}: {_count(images, 'image')} ({image_provider}), "
            f"{_count(videos, 'video')} ({video_provider}) into {into}"
        )
    from aigen.cli.runview import run_foreground

    try:
        from aigen.cli.notify import deliver_after_run

        code = run_foreground(
            store, home, gen_id, as_json=as_json, quiet=quiet,
            after_run=lambda gen: deliver_after_run(state, store, gen, as_json=as_json),
        )
    except AigenError as e:
        fail(e, as_json=as_json)
    raise typer.Exit(code)


def _start_cluster(state, store, home, url, gen_id, gen_row, user, images, videos, image_provider,
                   video_provider, *, detach: bool, as_json: bool, quiet: bool) -> None:
    """Cluster mode: enqueue the generation for the workers, then follow it from the store (or return at once)."""
    from aigen.cli import cluster

    try:
        cluster.enqueue(url, gen_id, store=store)
    except AigenError as e:
        fail(e, as_json=as_json)
    if detach:
        from aigen.cli.notify import describe_schedule, print_schedule

        schedule = describe_schedule(home, store.get_generation(gen_id))
        if as_json:
            print_json({"id": gen_id, "status": "Processing", "detached": True, "queued": True,
                        "notification": schedule})
        else:
            console.print(f"{gen_id}")
            console.print(f"[dim]Queued for the cluster's workers. Follow it with `aigen status {gen_id}`; "
                          f"stop it with `aigen cancel {gen_id}`.[/]", highlight=False)
            print_schedule(home, schedule)
        raise typer.Exit(0)
    if not as_json and not quiet:
        for note in gen_row["options"].get("notes") or []:
            console.print(f"[dim]Note: {escape(note)}[/]", highlight=False)
        console.print(
            f"Generation [bold]{gen_id}[/] for {user}: {_count(images, 'image')} ({image_provider}), "
            f"{_count(videos, 'video')} ({video_provider}), queued for the cluster's workers "
            f"(Ctrl-C detaches, it does not cancel)"
        )
    try:
        from aigen.cli.notify import deliver_after_run

        code = cluster.follow(store, home, gen_id, as_json=as_json, quiet=quiet,
                              after_run=lambda gen: deliver_after_run(state, store, gen, as_json=as_json))
    except AigenError as e:
        fail(e, as_json=as_json)
    raise typer.Exit(code)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def spawn_detached(home: config.Home, gen_id: str) -> tuple[int, "os.PathLike"]:
    """Start `aigen retry ID` in its own session so it outlives this terminal."""
    from aigen.pipeline.background import spawn_detached as spawn

    return spawn(home.path, gen_id)


def _print_plan(gen_row: dict, asset_rows: list[dict], *, home, seed_given: bool, as_json: bool) -> None:
    """The --dry-run answer: nothing is called or written, so it is only a plan."""
    from aigen.providers.pricing import plan

    p = plan(gen_row, asset_rows, home=home)
    # What providers will do differently from the ask (sizes, durations mapped to what they allow).
    p["notes"] = list(gen_row["options"].get("notes") or [])
    # A random base seed would differ on the real run: only a chosen one is worth showing.
    p["seed"] = gen_row["seed"] if seed_given else None
    if not seed_given:
        for item in p["items"]:
            item["seeds"] = None
    if as_json:
        print_json(p)
        return
    from rich.table import Table

    from aigen.cli.output import escape

    console.print(f"Dry run for {escape(p['user'])}: nothing will be called or written.")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("kind", "count", "provider", "model", "output", "estimated cost"):
        table.add_column(col)
    for i in p["items"]:
        output = i["output"] + (f", {i['duration']:g} s" if i["duration"] else "")
        table.add_row(i["kind"] + "s", str(i["count"]), i["provider"], escape(i["model"] or ""),
                      escape(output), escape(i["estimate"]["text"]))
    console.print(table)
    console.print(f"Estimated total: {escape(p['total']['text'])}")
    for i in p["items"]:
        note = i["estimate"].get("note") or i["estimate"].get("source")
        if note and note != "none":
            console.print(f"[dim]- {i['provider']} {i['kind']}s: {escape(note)}[/]")
    for note in p["notes"]:
        console.print(f"[dim]Note: {escape(note)}[/]")
    if p["seed"] is not None:
        console.print(f"[dim]Base seed {p['seed']}.[/]")
    if p.get("notify_at"):
        from aigen.cli.output import local_time

        console.print(f"[dim]Notification due at {local_time(p['notify_at'])}.[/]")


__all__ = ["generate", "BadInput"]
