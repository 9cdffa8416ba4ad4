"""The dashboard's Pause, Drain and Resume buttons, for the whole share or one worker: gated like
retry, as Cancel and priority are (web_allow_retry and the token; a browser's form carries its CSRF
token). They write the pause file as `i2v-watcher pause` does (control.pause), with who did it (the
signed-in session) in the file and in the event log. Unlike the command line, the answer does not wait
for the workers: the board says "pausing…" on each live worker concerned until its heartbeat says
paused (web.board.Snapshot.pause_state)."""

from __future__ import annotations

import functools
import re

import anyio
from starlette.requests import Request
from starlette.responses import Response

from i2v_watcher.control.pause import ALL, pause, resume
from i2v_watcher.job.spec import WORKER_ID_PATTERN
from i2v_watcher.ops.control import record
from i2v_watcher.web.pages import Pages


class Controls:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.settings = pages.settings

    async def pause(self, request: Request) -> Response:
        return await self._pause(request, drain=False)

    async def drain(self, request: Request) -> Response:
        return await self._pause(request, drain=True)

    async def _pause(self, request: Request, *, drain: bool) -> Response:
        wants_json, worker = await self._target(request)
        if isinstance(worker, Response):
            return worker
        by = self.pages.guard.who(request)
        await anyio.to_thread.run_sync(functools.partial(pause, self.settings, worker, drain=drain, by=by))
        record(self.settings, "paused", by=by, writer="web", target=worker or ALL, drain=drain)
        what = "draining" if drain else "pausing"
        then = ", then each worker running now exits once idle" if drain else ""
        return self.pages._acted(wants_json, {"target": worker or ALL, "action": what},
                                 f"{what} {_whom(worker)}: no new job is claimed once the board says "
                                 f"paused{then}")

    async def resume(self, request: Request) -> Response:
        wants_json, worker = await self._target(request)
        if isinstance(worker, Response):
            return worker
        by = self.pages.guard.who(request)
        resumed = await anyio.to_thread.run_sync(resume, self.settings, worker)
        if resumed:
            record(self.settings, "resumed", by=by, writer="web", target=worker or ALL)
        message = f"resumed {_whom(worker)}" if resumed else f"{_whom(worker)} was not paused"
        return self.pages._acted(wants_json, {"target": worker or ALL, "action": "resume",
                                              "resumed": resumed}, message)

    async def _target(self, request: Request) -> tuple[bool, str | Response | None]:
        """The guarded form's worker (None: every worker), or the refusal."""
        wants_json, form = await self.pages._named_write(request, "retry")
        if isinstance(form, Response):
            return wants_json, form
        worker = str(form.get("worker") or "").strip()
        if worker in ("", ALL):
            return wants_json, None
        if not re.fullmatch(WORKER_ID_PATTERN, worker):
            return wants_json, self.pages._refuse(request, wants_json, 400,
                                                  f"worker: {worker[:80]!r} is not a worker id")
        return wants_json, worker


def _whom(worker: str | None) -> str:
    return f"worker {worker}" if worker else "every worker"
