"""The gallery's actions: ask for content (the form, `POST /api/generations`), Make again, Delete, Download all.

Routes (each owner-only: another user's generation is a 404, exactly like a missing one, and nothing is done):

    GET  /new                        the form: prompt, counts, providers with keys, sizes, notification
    POST /new                        create a generation for the logged-in user and start it
    POST /api/generations            the same for scripts (JSON in, 201/400/429 JSON out)
    GET  /g/<id>/again               what Make again will ask for (and its `aigen generate` twin)
    POST /g/<id>/again               ask for it: a new generation with the same prompt and options
    GET  /g/<id>/delete              the confirmation page (no JavaScript needed)
    POST /g/<id>/delete              delete its files and rows (`aigen delete ID`); refused while it runs
    GET  /g/<id>/download.zip        every made file (and prompt.txt) as one zip, streamed

Every POST needs the session's CSRF token (a form field, or the X-CSRF-Token header for the JSON API
with a session cookie; HTTP Basic needs none: no browser form can send JSON with it) and is refused
when the browser says it comes from another site. Every action, done or refused, is an event:
generation_requested, generation_deleted, zip_download.
"""

from __future__ import annotations

import json
import logging
import re

from bottle import HTTPError, HTTPResponse, request

from aigen.errors import AigenError, BadInput

log = logging.getLogger("aigen.web")

_TOKEN_RE = re.compile(r"[0-9a-f]{64}")


class Actions:
    def __init__(self, gallery, *, start=None, limits=None):
        self.g = gallery
        self._start = start
        self._limits = limits

    # -- shared checks ---------------------------------------------------------------------------------
    @property
    def limits(self):
        from aigen.pipeline.limits import Limits

        # Read on each use: a change to config.toml applies without a restart (a small file, one parse).
        return self._limits if self._limits is not None else Limits.from_config(self.g.home.path)

    def start(self, gen_id: str) -> dict:
        if self._start is not None:
            return self._start(self.g.home.path, self.g.store, gen_id)
        from aigen.pipeline.background import start_in_background

        return start_in_background(self.g.home.path, self.g.store, gen_id)

    def _csrf_ok(self, token) -> bool:
        return isinstance(token, str) and bool(_TOKEN_RE.fullmatch(token)) and \
            self.g.codec.check_csrf(self.g.session(), token)

    def guard_form(self, kind: str, user: str, gen_id: str | None = None) -> None:
        """A form's POST: same site, and the session's CSRF token; else 403, logged, nothing done."""
        g = self.g
        problem = g.cross_site_problem()
        if problem:
            g.event(kind, ok=False, reason="cross_site", user_id=user, generation_id=gen_id, detail=problem)
            raise g.http_error(403, g.CROSS_SITE_MESSAGE)
        if not self._csrf_ok(request.forms.get("csrf_token")):
            g.event(kind, ok=False, reason="csrf", user_id=user, generation_id=gen_id)
            raise g.http_error(403, g.CSRF_MESSAGE)

    def form_user(self, next_path: str = "/") -> str:
        """The logged-in user of a page or a form's POST; the login page otherwise."""
        return self.g.require_user(next_path=next_path)

    def own(self, user: str, gen_id: str) -> dict:
        """The generation if it is the user's; 404 (the same for missing and not yours) otherwise."""
        from aigen.store.core import decode_generation

        row = self.g.store.query_one("SELECT * FROM generations WHERE id = ? AND user_id = ?", (gen_id, user))
        if row is None:
            raise HTTPError(404)
        return decode_generation(row)

    def _running(self, gen: dict) -> bool:
        if gen["status"] != "Processing":
            return False
        from aigen.pipeline.run import is_running

        return is_running(self.g.home, gen["id"])

    # -- creating a generation (form, API, Make again) ----------------------------------------------------
    def _create(self, user: str, asked, how: str) -> str:
        """Write the generation under the fairness limits (checked in the same transaction), then start it."""
        from aigen.pipeline import limits as fair

        g = self.g
        now = g.settings.clock()
        check = getattr(g.storage, "check", None)
        if check is not None:  # object storage: a missing bucket is said now, before a row is written
            check()
        store = g.store
        with store.transaction():
            fair.check(store, self.limits, user, len(asked.asset_rows), now)
            gen_id = store.create_generation(asked.gen_row, asked.asset_rows, now=now)
        if asked.email:
            store.ensure_user(user, email=asked.email, now=now)
        detail = f"{how}: {len(asked.asset_rows)} asset(s)"
        try:
            started = self.start(gen_id)
            detail += ", queued for the workers" if started.get("queued") else f", pid {started.get('pid')}"
        except Exception as e:  # written but not started: it shows as stalled, and Resume / `aigen retry` runs it
            log.exception("could not start generation %s", gen_id)
            detail += f", not started: {getattr(e, 'message', None) or type(e).__name__}"
        g.event("generation_requested", ok=True, user_id=user, generation_id=gen_id, detail=detail)
        return gen_id

    def _refused(self, user: str, e: AigenError, how: str, gen_id: str | None = None) -> None:
        from aigen.pipeline.limits import LimitReached

        reason = "limit_reached" if isinstance(e, LimitReached) else ("bad_input" if isinstance(e, BadInput)
                                                                       else e.code)
        self.g.event("generation_requested", ok=False, reason=reason, user_id=user, generation_id=gen_id,
                     detail=f"{how}: {e.message}"[:500])

    @staticmethod
    def status_of(e: AigenError) -> int:
        from aigen.pipeline.limits import LimitReached

        if isinstance(e, LimitReached):
            return 429
        return 400 if isinstance(e, BadInput) else 503

    def form_context(self, user: str) -> dict:
        from aigen.pipeline import limits as fair
        from aigen.web.ask import NOTIFY_CHOICES, provider_choices

        try:
            limits = self.limits
            use = fair.usage(self.g.store, user, self.g.settings.clock())
            limit_message = fair.problem(limits, use)
        except BadInput as e:  # a bad [limits] table: said on the page, and every request is refused with it
            limits, use, limit_message = None, None, e.message
        return {"choices": provider_choices(self.g.home.path), "limits": limits, "use": use,
                "limit_message": limit_message, "notify_choices": NOTIFY_CHOICES}

    def new_form(self):
        user = self.form_user("/new")
        from aigen.web.ask import defaults

        return self.g.page("new", user=user, title="Make something new", values=defaults(), message=None,
                           **self.form_context(user))

    def new_post(self):
        user = self.form_user("/new")
        self.guard_form("generation_requested", user)
        from aigen.web.ask import FIELDS, defaults, prepare_request

        forms = request.forms
        values = {**defaults(), **{k: forms.getunicode(k) for k in FIELDS if forms.getunicode(k) is not None}}
        try:
            asked = prepare_request(self.g.home, self.g.store, user, values, self.g.settings.clock())
            gen_id = self._create(user, asked, "form")
        except AigenError as e:
            self._refused(user, e, "form")
            return self.g.page("new", status=self.status_of(e), user=user, title="Make something new",
                               values=values, message=e.message, hint=e.hint, **self.form_context(user))
        raise self.g.redirect(f"/g/{gen_id}")

    def api_create(self):
        g = self.g
        ctype = (request.environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise g.http_error(415, "send the request as JSON (Content-Type: application/json)", api=True)
        problem = g.cross_site_problem()
        user = g.current_user()
        if problem:
            g.event("generation_requested", ok=False, reason="cross_site", user_id=user, detail=f"api; {problem}")
            raise g.http_error(403, g.CROSS_SITE_MESSAGE, api=True)
        if user is not None:
            if not self._csrf_ok(request.environ.get("HTTP_X_CSRF_TOKEN")):
                g.event("generation_requested", ok=False, reason="csrf", user_id=user, detail="api")
                raise g.http_error(403, "with a session cookie, send its CSRF token in the X-CSRF-Token header "
                                        "(or log in with HTTP Basic instead)", api=True)
        else:
            user = g.basic_user(api=True)
        if user is None:
            raise g.http_error(401, "log in first (HTTP Basic with user_id and access code, or a session cookie "
                                    "and its X-CSRF-Token)", api=True,
                               headers={"WWW-Authenticate": 'Basic realm="aigen"'})
        from aigen.web.ask import from_json, prepare_request

        try:
            try:
                body = json.loads(request.body.read().decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise BadInput(f"the body is not valid JSON: {e}") from None
            asked = prepare_request(g.home, g.store, user, from_json(body), g.settings.clock())
            gen_id = self._create(user, asked, "api")
        except AigenError as e:
            self._refused(user, e, "api")
            out = e.to_dict()
            res = g.json(out, status=self.status_of(e))
            if out["error"] == "limit_reached":
                res.set_header("Retry-After", "60")
            return res
        base = g._base_url()
        res = g.json({"id": gen_id, "status": "Processing", "url": f"{base}/g/{gen_id}",
                      "api_url": f"{base}/api/generations/{gen_id}",
                      "status_url": f"{base}/api/generations/{gen_id}/status"}, status=201)
        res.set_header("Location", f"/api/generations/{gen_id}")
        return res

    # -- Make again --------------------------------------------------------------------------------------
    def again_page(self, gen_id: str):
        user = self.form_user(f"/g/{gen_id}")
        gen = self.own(user, gen_id)
        return self._again_page(user, gen, None, None)

    def _again_page(self, user, gen, message, hint, status: int = 200):
        from aigen.web.ask import again_fields, generate_command

        fields, extra = again_fields(gen)
        return self.g.page("again", status=status, user=user, title="Make again", gen=gen, fields=fields,
                           extra=extra, command=generate_command(gen), message=message, hint=hint,
                           **self.form_context(user))

    def again_post(self, gen_id: str):
        user = self.form_user(f"/g/{gen_id}")
        self.guard_form("generation_requested", user, gen_id)
        gen = self.own(user, gen_id)
        from aigen.web.ask import prepare_again

        try:
            asked = prepare_again(self.g.home, self.g.store, gen, self.g.settings.clock())
            new_id = self._create(user, asked, f"make again from {gen_id}")
        except AigenError as e:
            self._refused(user, e, f"make again from {gen_id}")
            return self._again_page(user, gen, e.message, e.hint, status=self.status_of(e))
        raise self.g.redirect(f"/g/{new_id}")

    # -- Delete --------------------------------------------------------------------------------------------
    def delete_page(self, gen_id: str):
        user = self.form_user(f"/g/{gen_id}")
        gen = self.own(user, gen_id)
        files = self.g.store.query_one("SELECT count(*) AS n FROM assets WHERE generation_id = ? AND status = 'done'",
                                       (gen_id,))["n"]
        return self.g.page("delete", user=user, title="Delete this generation?", gen=gen, files=files,
                           running=self._running(gen), message=None)

    def delete_post(self, gen_id: str):
        from aigen.pipeline.delete import Running, delete_generation

        g = self.g
        user = self.form_user(f"/g/{gen_id}")
        self.guard_form("generation_deleted", user, gen_id)
        gen = self.own(user, gen_id)
        try:
            result = delete_generation(g.home, g.store, gen_id, storage=g.storage, user_id=user,
                                       now=g.settings.clock())
        except AigenError as e:
            g.grants.drop_generation(gen_id)  # some of its files may be gone already
            reason = "running" if isinstance(e, Running) else e.code
            g.event("generation_deleted", ok=False, reason=reason, user_id=user, generation_id=gen_id,
                    detail=e.message[:500])
            status = 409 if isinstance(e, Running) else (404 if isinstance(e, BadInput) else 503)
            if status == 404:
                raise HTTPError(404) from None
            files = g.store.query_one("SELECT count(*) AS n FROM assets WHERE generation_id = ? AND "
                                      "status = 'done'", (gen_id,))["n"]
            return g.page("delete", status=status, user=user, title="Delete this generation?", gen=gen,
                          files=files, running=isinstance(e, Running), message=e.message)
        g.grants.drop_generation(gen_id)  # what /media kept of its files, for every session
        g.event("generation_deleted", ok=True, user_id=user, generation_id=gen_id,
                detail=f"from the gallery: {result['files']} file(s)")
        raise g.redirect("/?deleted=1")

    # -- Copy prompt ---------------------------------------------------------------------------------------
    def prompt_copied(self, gen_id: str):
        """What the Copy prompt buttons send once the prompt is on the clipboard: the action's event.

        The copy itself happens in the browser; this only records it (`prompt_copied`), with the same checks as
        every POST: logged in, same site, the session's CSRF token (the X-CSRF-Token header), the owner's
        generation (404 otherwise). Answers 204.
        """
        g = self.g
        user = g.current_user()
        if user is None:
            raise g.http_error(401, "log in first", api=True)
        problem = g.cross_site_problem()
        if problem:
            g.event("prompt_copied", ok=False, reason="cross_site", user_id=user, generation_id=gen_id,
                    detail=problem)
            raise g.http_error(403, g.CROSS_SITE_MESSAGE, api=True)
        if not self._csrf_ok(request.environ.get("HTTP_X_CSRF_TOKEN")):
            g.event("prompt_copied", ok=False, reason="csrf", user_id=user, generation_id=gen_id)
            raise g.http_error(403, g.CSRF_MESSAGE, api=True)
        self.own(user, gen_id)
        where = (request.query.get("from") or "")[:20]
        g.event("prompt_copied", ok=True, user_id=user, generation_id=gen_id,
                detail="from the viewer" if where == "viewer" else "from the gallery")
        return HTTPResponse(status=204)

    # -- Download all --------------------------------------------------------------------------------------
    def download_zip(self, gen_id: str):
        from aigen.storage import BadKey, ObjectMissing, StorageError
        from aigen.web.zipstream import check_members, members, stream_zip, zip_name

        g = self.g
        user = g.current_user()
        if user is None:
            raise g.redirect(f"/login?next=/g/{gen_id}")
        gen = self.own(user, gen_id)
        files = members(gen, g.store.assets(gen_id))
        if not files:
            raise g.http_error(404, "This generation has no files yet.")
        try:
            check_members(g.storage, gen, files)
        except BadKey:  # a tampered row: a 404, never another file (as /media)
            raise HTTPError(404) from None
        except ObjectMissing:
            raise g.http_error(404, "A file of this generation is missing from the file store "
                                    "(`aigen doctor` on the server says which).") from None
        except StorageError as e:
            log.warning("zip %s: %s", gen_id, e.message)
            raise g.http_error(503, "The file store cannot be reached right now; try again.") from None
        name = zip_name(gen)
        if request.method != "HEAD":
            total = sum((a.get("bytes") or 0) for _, _, a in files)
            g.event("zip_download", ok=True, user_id=user, generation_id=gen_id,
                    detail=f"{len(files)} file(s), {total} bytes")
        headers = {"Content-Type": "application/zip",
                   "Content-Disposition": f'attachment; filename="{name}"',
                   "Cache-Control": "private, no-store",
                   "Content-Security-Policy": g.media_csp}
        return HTTPResponse(body=stream_zip(g.storage, gen, files, folder=name[:-4]), headers=headers)


def register(app, gallery, *, start=None, limits=None) -> Actions:
    """Add the action routes to the gallery's Bottle app."""
    from aigen.web.app import GEN_ID

    a = Actions(gallery, start=start, limits=limits)
    app.route("/new", "GET", a.new_form)
    app.route("/new", "POST", a.new_post)
    app.route("/api/generations", "POST", a.api_create)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/again", "GET", a.again_page)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/again", "POST", a.again_post)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/delete", "GET", a.delete_page)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/delete", "POST", a.delete_post)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/download.zip", "GET", a.download_zip)
    app.route(f"/g/<gen_id:re:{GEN_ID}>/copied", "POST", a.prompt_copied)
    return a


__all__ = ["Actions", "register"]
