"""The dashboard's application (routes and middleware) and `i2v-watcher web`, which serves it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from i2v_watcher.config.settings import Settings
from i2v_watcher.errors import StartupError
from i2v_watcher.web.controls import Controls
from i2v_watcher.web.guard import FORM_OVERHEAD, BodyLimit, SecurityHeaders
from i2v_watcher.web.hosts import AllowedHosts, HostCheck
from i2v_watcher.web.pages import Pages
from i2v_watcher.web.webmetrics import FolderMetrics

STATIC = Path(__file__).parent / "static"
log = structlog.get_logger("i2v_watcher.web")


def create_app(settings: Settings) -> Starlette:
    pages = Pages(settings)
    controls = Controls(pages)
    registry = CollectorRegistry(auto_describe=False)  # a description would scan the folders now
    registry.register(FolderMetrics(pages.board, pages.gallery))

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:  # on the event loop: never waits for a thread
        return PlainTextResponse("ok")

    routes = [
        Route("/", pages.overview),
        Route("/live", pages.overview_part),
        Route("/gallery", pages.gallery_page),
        Route("/failed", pages.failed_page),
        Route("/failed/retry", pages.retry, methods=["POST"]),
        Route("/gallery/approve", pages.approve, methods=["POST"]),
        Route("/jobs/cancel", pages.cancel, methods=["POST"]),
        Route("/jobs/priority", pages.priority, methods=["POST"]),
        Route("/workers/pause", controls.pause, methods=["POST"]),
        Route("/workers/drain", controls.drain, methods=["POST"]),
        Route("/workers/resume", controls.resume, methods=["POST"]),
        Route("/submit", pages.submit_page, methods=["GET"]),
        Route("/submit", pages.submit, methods=["POST"]),
        Route("/follow", pages.follow_page),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/files/{rel:path}", pages.outbox_file, methods=["GET", "HEAD"]),
        Route("/thumbs/{folder}/{rel:path}", pages.thumbnail),
        Route("/api/status", pages.api_status),
        Route("/api/job", pages.api_job),
        Route("/metrics", metrics),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    body_cap = min(settings.web_upload_max_mb * 1024 * 1024, settings.max_image_bytes) + FORM_OVERHEAD
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        pages.gallery.start()
        yield

    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders),
                                                Middleware(HostCheck, hosts=AllowedHosts(settings)),
                                                Middleware(BodyLimit, max_bytes=body_cap)])


def serve(settings: Settings) -> int:
    from i2v_watcher.web.server import QuietServer, ensure_descriptors, uvicorn_config

    app = create_app(settings)  # refuses to start (StartupError) before the port is taken
    ensure_descriptors(settings)
    log.info("web dashboard", url=f"http://{settings.web_listen}/",
             writes=[w for w, on in (("submit", settings.web_allow_submit),
                                     ("retry", settings.web_allow_retry)) if on] or "none (read-only)")
    server = QuietServer(uvicorn_config(app, settings))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn's answer to a port it cannot bind (it has logged why)
        raise StartupError(f"cannot listen on {settings.web_listen} (web_listen): the port is taken, or "
                           "the address is not one of this host's") from exc
    return 0
