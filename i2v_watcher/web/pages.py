"""The dashboard's pages and API: each handler reads a snapshot (board, gallery) and renders it, or
does one guarded write (submit, retry, approve, cancel, priority) through the same code the command
line uses."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import structlog
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from i2v_watcher import __version__
from i2v_watcher.catalog.judged import VERDICTS, WORDS
from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.inbox.watch import IMAGE_SUFFIXES
from i2v_watcher.judge.advice import ADVICE
from i2v_watcher.judge.score import SYMPTOMS
from i2v_watcher.ops.cancel import cancel
from i2v_watcher.ops.control import change_priority, record
from i2v_watcher.ops.reading import printable
from i2v_watcher.ops.reports import find_reports, report_name
from i2v_watcher.ops.retry import RetryRefused, retry
from i2v_watcher.run.drafts import ApproveRefused, approve
from i2v_watcher.web import forms
from i2v_watcher.web.asked import Asked
from i2v_watcher.web.board import Board, page, share_time, since_ns
from i2v_watcher.web.files import Refused, Thumbnails, file_response, open_inside, thumbnail_response
from i2v_watcher.web.gallery import Gallery
from i2v_watcher.web.guard import COOKIE, BodyTooLarge, Forbidden, Guard, check_same_origin

log = structlog.get_logger("i2v_watcher.web")
TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_FIELDS = 64
API_PAGE, MAX_API_PAGE = 100, 1000  # rows of each list in /api/status, by default and at most


class Pages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.guard = Guard(settings)
        self.board = Board(settings)
        self.gallery = Gallery(settings)
        self.thumbs = Thumbnails(settings)
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.filters["q"] = lambda value: quote(str(value), safe="/")
        self.templates.env.filters["printable"] = lambda value: printable(str(value))
        # Prompts keep their line breaks (a YAML block ends in one); everything else is escaped.
        self.templates.env.filters["printable_lines"] = lambda value: "\n".join(
            printable(line) for line in str(value).split("\n"))
        self.templates.env.tests["image"] = lambda name: str(name).lower().endswith(IMAGE_SUFFIXES)
        self.templates.env.globals.update(verdicts=VERDICTS, symptoms=SYMPTOMS, words=WORDS, advice=ADVICE)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.update(settings=self.settings, version=__version__, guard=self.guard,
                       signed_in=self.guard.signed_in(request), csrf=self.guard.csrf_token(request),
                       page=name.removesuffix(".html"))
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    # pages

    def overview(self, request: Request) -> Response:
        return self._overview(request, "overview.html")

    def overview_part(self, request: Request) -> Response:
        return self._overview(request, "_live.html")

    def _overview(self, request: Request, name: str) -> Response:
        snap = self.board.snapshot()
        queue = page(snap.queue, _positive(request.query_params.get("page")), self.settings.web_page_size)
        return self.render(request, name, snap=snap, queue=queue, link=lambda n: f"/?page={n}",
                           notice=request.query_params.get("notice", "")[:500])

    def gallery_page(self, request: Request) -> Response:
        asked = Asked(request.query_params, self.gallery.fresh())
        number = _positive(request.query_params.get("page"))
        size = self.settings.web_page_size
        clips, total = self.gallery.page(asked.filters, number, size)
        filters = asked.filters
        return self.render(request, "gallery.html", clips=clips, total=total, number=number, asked=asked,
                           query=filters.query, verdict=filters.verdict, symptom=filters.symptom,
                           variants=filters.variants, ignored=asked.ignored,
                           counts=self.gallery.tally(replace(filters, verdict=None, symptom=None,
                                                             variants=None)),
                           indexing=self.gallery.indexing,
                           notice=request.query_params.get("notice", "")[:500],
                           pages=max(1, math.ceil(total / size)),
                           link=lambda n: "/gallery?" + urlencode({**asked.kept, "page": n}))

    def failed_page(self, request: Request) -> Response:
        snap = self.board.snapshot()
        failed = page(snap.failed, _positive(request.query_params.get("page")), self.settings.web_page_size)
        return self.render(request, "failed.html", snap=snap, failed=failed,
                           link=lambda n: f"/failed?page={n}", retried=request.query_params.get("retried"))

    def submit_page(self, request: Request) -> Response:
        return self._submit_form(request)

    def _submit_form(self, request: Request, status: int = 200, error: str | None = None,
                     values: dict[str, Any] | None = None) -> Response:
        return self.render(request, "submit.html", status, fields=forms.fields(self.settings),
                           backends=forms.backends_offered(self.settings),
                           presets=list(self.settings.presets),
                           error=error, values=values or {},
                           max_mb=min(self.settings.web_upload_max_mb, self.settings.max_image_bytes >> 20))

    def follow_page(self, request: Request) -> Response:
        return self.render(request, "follow.html", job=request.query_params.get("job", ""),
                           since=request.query_params.get("since", ""),
                           warning=request.query_params.get("warning", ""))

    def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", next=_local(request.query_params.get("next")), error=None)

    # writes

    async def login(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        wanted = form.get("next")
        target = _local(wanted if isinstance(wanted, str) else None)
        try:
            check_same_origin(request)
        except Forbidden as exc:
            return self.render(request, "error.html", exc.status, message=str(exc))
        client = request.client.host if request.client else "?"
        try:
            session = self.guard.sign_in(form.get("token"), client)
        except Forbidden as exc:
            if exc.status != 429:  # a flood of throttled attempts does not flood the log
                log.warning("web sign-in refused", client=client, why=str(exc))
            refused = self.render(request, "login.html", exc.status, next=target, error=str(exc))
            refused.headers.update(exc.headers)
            return refused
        response = RedirectResponse(target, status_code=303)
        # Behind a TLS proxy the app sees plain HTTP (forwarded headers are not trusted), but the
        # browser's Origin says it is on https: then the cookie is never sent over plain HTTP.
        secure = request.url.scheme == "https" or request.headers.get("origin", "").startswith("https://")
        response.set_cookie(COOKIE, session, max_age=int(self.settings.web_session_s), httponly=True,
                            samesite="strict", secure=secure, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        self.guard.sign_out(request)  # the session ends here, not only in this browser
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def submit(self, request: Request) -> Response:
        wants_json = "application/json" in request.headers.get("accept", "")
        try:
            self.guard.admit_write(request, "submit")
        except Forbidden as exc:
            return self._refuse(request, wants_json, exc.status, str(exc), exc.headers)
        try:
            form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
        except BodyTooLarge:
            raise
        except Exception as exc:  # a malformed multipart body: the client's mistake, said plainly
            return self._refuse(request, wants_json, 400, f"the form could not be read: {exc}")
        try:
            self.guard.check_form(request, form)
        except Forbidden as exc:
            return self._refuse(request, wants_json, exc.status, str(exc), exc.headers)
        values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf"}
        upload = form.get("image")
        try:
            if not isinstance(upload, UploadFile):
                raise StartupError("no image: choose a PNG, JPEG or WebP file")
            sidecar = forms.sidecar_from(form)
            name = form.get("name")
            warnings: list[str] = []
            # Copied, decoded and checked in a thread, in one of the decode slots: never on the event loop.
            path = await anyio.to_thread.run_sync(
                forms.submit_upload, self.settings, upload.file, upload.filename or "",
                name if isinstance(name, str) else "", sidecar, warnings.append, limiter=self.thumbs.slots)
        except (StartupError, OSError) as exc:
            if wants_json:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return self._submit_form(request, 400, str(exc), values)
        finally:
            await form.close()
        self.board.changed()
        job = str(path.relative_to(self.settings.inbox).with_suffix(""))
        log.info("web submit", job=job, client=request.client.host if request.client else None)
        query = {"job": job, "since": share_time(path), **({"warning": warnings[0]} if warnings else {})}
        follow = "/follow?" + urlencode(query)
        if wants_json:
            answer = {"job": job, "inbox_path": str(path), "follow": follow}
            return JSONResponse({**answer, "warnings": warnings} if warnings else answer, status_code=201)
        return RedirectResponse(follow, status_code=303)

    async def retry(self, request: Request) -> Response:
        wants_json, form = await self._named_write(request, "retry")
        if isinstance(form, Response):
            return form
        name = form.get("name")
        warnings: list[str] = []
        reports = find_reports(self.settings, name, warnings.append) if isinstance(name, str) and name else []
        exact = [r for r in reports if report_name(self.settings, r) == name]
        if not exact:
            return self._refuse(request, wants_json, 404, f"no failed job named {name!r}")
        try:
            moved = retry(self.settings, exact[0])
        except (RetryRefused, OSError) as exc:
            return self._refuse(request, wants_json, 409, f"retry refused: {exc}")
        self.board.changed()
        log.info("web retry", job=name, moved=[str(p) for p in moved])
        if wants_json:
            return JSONResponse({"retried": name, "moved": [str(p) for p in moved]})
        return RedirectResponse("/failed?" + urlencode({"retried": name}), status_code=303)

    async def approve(self, request: Request) -> Response:
        """A draft's Approve button (gated like retry: it puts a job into the inbox): its final queued
        once (run.drafts.approve); approved already is an answer, not an error."""
        wants_json, form = await self._named_write(request, "retry")
        if isinstance(form, Response):
            return form
        name = form.get("name")
        try:
            result = approve(self.settings, name if isinstance(name, str) else "")
        except ApproveRefused as exc:
            return self._refuse(request, wants_json, 404, str(exc))
        except OSError as exc:
            return self._refuse(request, wants_json, 409, f"approve refused: {exc}")
        self.board.changed()
        log.info("web approve", job=name, outcome=result.outcome)
        if wants_json:
            return JSONResponse({"approved": name, "outcome": result.outcome, "message": result.message})
        return RedirectResponse("/gallery?" + urlencode({"notice": result.message}), status_code=303)

    async def cancel(self, request: Request) -> Response:
        """A queued or running job's Cancel button (gated like retry): ops.cancel, as `i2v-watcher
        cancel` does it, in a thread (a running job's worker is waited for, ops.cancel.WAIT_S at most)."""
        wants_json, form = await self._named_write(request, "retry")
        if isinstance(form, Response):
            return form
        name, by = str(form.get("name") or "").strip("/"), self.guard.who(request)
        outcome = await anyio.to_thread.run_sync(cancel, self.settings, name, by) if name else None
        if outcome is None:
            return self._refuse(request, wants_json, 404, f"no queued or running job named {name!r}")
        if outcome.cancelled:
            record(self.settings, "cancelled", by=by, writer="web", name=outcome.name)
        return self._acted(wants_json, {"name": outcome.name, "cancelled": outcome.cancelled},
                           outcome.message)

    async def priority(self, request: Request) -> Response:
        """A queued job's priority control (gated like retry): ops.control.change_priority, as
        `i2v-watcher priority` does it; the job keeps its arrival (control.priority)."""
        wants_json, form = await self._named_write(request, "retry")
        if isinstance(form, Response):
            return form
        name, by = str(form.get("name") or "").strip("/"), self.guard.who(request)
        try:
            value = int(str(form.get("priority") or "").strip())
            await anyio.to_thread.run_sync(functools.partial(
                change_priority, self.settings, name, value, by=by, writer="web"))
        except ValueError:
            return self._refuse(request, wants_json, 400, "priority: must be a whole number")
        except StartupError as exc:
            return self._refuse(request, wants_json, 409, str(exc))
        return self._acted(wants_json, {"name": name, "priority": value}, f"{name}: priority {value}")

    def _acted(self, wants_json: bool, answer: dict[str, Any], message: str) -> Response:
        self.board.changed()
        log.info("web control", **answer)
        if wants_json:
            return JSONResponse({**answer, "message": message})
        return RedirectResponse("/?" + urlencode({"notice": message}), status_code=303)

    async def _named_write(self, request: Request, what: str) -> tuple[bool, Any]:
        """A guarded write (`what`: retry) on one job: whether the answer is JSON, and the form once
        the guard admits the write, else the refusal (a Response)."""
        wants_json = "application/json" in request.headers.get("accept", "")
        try:
            self.guard.admit_write(request, what)
            form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
            self.guard.check_form(request, form)
        except Forbidden as exc:
            return wants_json, self._refuse(request, wants_json, exc.status, str(exc), exc.headers)
        return wants_json, form

    def _refuse(self, request: Request, wants_json: bool, status: int, message: str,
                headers: dict[str, str] | None = None) -> Response:
        answer = JSONResponse({"error": message}, status_code=status) if wants_json else \
            self.render(request, "error.html", status, message=message)
        answer.headers.update(headers or {})
        return answer

    # files and data

    def outbox_file(self, request: Request) -> Response:
        rel = request.path_params["rel"]
        try:
            fd = open_inside(self.settings.outbox, rel)
        except (Refused, OSError):
            return PlainTextResponse("not found", status_code=404)
        return file_response(request, fd, rel.rpartition("/")[2], download="download" in request.query_params)

    async def thumbnail(self, request: Request) -> Response:
        roots = {"inbox": self.settings.inbox, "failed": self.settings.failed, "outbox": self.settings.outbox}
        root = roots.get(request.path_params["folder"])
        if root is None:
            return PlainTextResponse("not found", status_code=404)
        return await thumbnail_response(self.thumbs, root, request.path_params["rel"])

    def api_status(self, request: Request) -> Response:
        """The snapshot, with one page (`page`, `per_page`) of the queue and of the failed jobs."""
        number = _positive(request.query_params.get("page"))
        size = min(_positive(request.query_params.get("per_page"), API_PAGE), MAX_API_PAGE)
        snap = self.board.snapshot()
        answer = snap.as_json()
        answer["counts"]["published"] = self.gallery.fresh().count()
        answer["indexing"] = self.gallery.indexing
        queue, failed = page(snap.queue, number, size), page(snap.failed, number, size)
        answer.update(queue=queue.rows, failed=failed.rows,
                      page={"number": number, "per_page": size, "queue_pages": queue.pages,
                            "failed_pages": failed.pages})
        return JSONResponse(answer)

    def api_job(self, request: Request) -> Response:
        return JSONResponse(self.job_state(request.query_params.get("job", ""),
                                           request.query_params.get("since", "")))

    def job_state(self, job: str, since: str) -> dict[str, Any]:
        """Where a submitted job is now: queued, in progress, published (with its clip) or failed. A clip
        or report counts when its file was written after `since` (share_time: both the share's clock),
        never by the times inside them (a worker's clock) against this host's."""
        snap, after = self.board.snapshot(), since_ns(since)
        for row in snap.queue:
            if row["job"] == job:
                return {"state": "queued", "why": row["why"], "position": row["position"]}
        for entry in snap.in_progress:
            if entry.get("job") == job:
                return {"state": "in progress", "stage": entry.get("live_stage") or entry["stage"],
                        "done": entry.get("done"), "total": entry.get("total"),
                        "worker_id": entry["worker_id"]}
        clip = self.gallery.published_from(job, after)
        if clip is not None:
            judged = asdict(clip.judgement) if clip.judgement is not None else None
            placed = clip.placing
            variant = None if clip.variant is None else {
                **asdict(clip.variant), **(asdict(placed) if placed else {}),
                "provisional": placed.provisional if placed else True}
            return {"state": "published", "name": clip.name, "video": clip.video, "poster": clip.poster,
                    "files": list(clip.files), "quality": judged, "variant": variant}
        for failed in snap.failed:
            if failed.get("input") == job and snap.failed_written_ns.get(failed["name"], 0) >= after:
                return {"state": "failed", "name": failed["name"], "stage": failed.get("stage"),
                        "message": failed.get("message"), "hint": failed.get("hint")}
        return {"state": "unknown"}


def _positive(value: str | None, default: int = 1) -> int:
    return int(value) if value is not None and value.isdigit() and 0 < int(value) < 10**6 else default


def _local(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never //host or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
