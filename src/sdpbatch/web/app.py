"""The web application (Starlette): pages, the JSON API, server-sent events and figures.

Pages (HTML shells whose scripts read the API):

- ``/``: scheduling block instances and processing blocks, live; ``/system``: components;
- ``/blocks/{pb_id}``: one block; ``/products/{buffer}``: one image product.

API (JSON unless said otherwise):

- ``/api/health``, ``/api/system``, ``/api/overview``, ``/api/events`` (server-sent events of
  the overview, event ``overview``);
- ``/api/blocks/{pb_id}``, ``/api/blocks/{pb_id}/log?offset=N``, ``/api/blocks/{pb_id}/log/stream``
  (server-sent events ``lines`` with the byte offset as event id), ``/api/buffers/{name}``;
- ``/api/products/{buffer}``, ``.../gains``, ``.../qa``; figures ``/render/{buffer}/{figure}.png``;
- ``/files/{buffer or logs}/...``: a file of a buffer or a log, as stored.

Only GET and HEAD are answered (405 for anything else, on every path): nothing can be changed
through the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.io.qa import read_qa
from sdpbatch.web import render
from sdpbatch.web.files import DataRoot, OutsideDataRoot, read_log
from sdpbatch.web.live import Overviews
from sdpbatch.web.products import (
    IMAGES,
    NoProduct,
    gain_series,
    product_file,
    product_view,
    read_gain_terms,
)
from sdpbatch.web.state import (
    NotFound,
    block_view,
    buffer_view,
    overview,
    system_view,
    workflow_log,
)

KEEPALIVE = 15.0  # s between comments on an idle event stream
LOG_POLL = 0.25  # s between looks at a log being streamed
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
FILE_TYPES = {
    ".png": "image/png",
    ".json": "text/plain",
    ".log": "text/plain",
    ".txt": "text/plain",
}
PAGES = {"blocks": "Processing blocks", "system": "System", "block": "Block", "product": "Product"}


@dataclass
class Context:
    """What the handlers share: the data root, the database and the live overview."""

    root: DataRoot
    config: Config
    overviews: Overviews


class ReadOnly:
    """ASGI middleware: 405 for any method but GET and HEAD; security headers on every answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse(
                "this server is read-only: only GET and HEAD are answered",
                status_code=405,
                headers={"Allow": "GET, HEAD", **SECURITY_HEADERS},
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    data_dir: Path,
    *,
    config: Config,
    period: float = 5.0,
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The application for ``data_dir`` and ``config``.

    ``period``: seconds between refreshes of the overview when the database is quiet (process
    liveness, buffer sizes); ``allowed_hosts``: Host header values accepted (None: any).
    """
    root = DataRoot.at(data_dir)
    ctx = Context(root, config, Overviews(config, root, period=period))
    shell = resources.files("sdpbatch.web").joinpath("static/page.html").read_text()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        ctx.overviews.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            ctx.overviews.stop()

    def page(name: str):
        html = shell.replace("{{title}}", PAGES[name]).replace("{{page}}", name)

        def endpoint(request: Request) -> HTMLResponse:
            return HTMLResponse(html)

        return endpoint

    routes = [
        Route("/", page("blocks")),
        Route("/system", page("system")),
        Route("/blocks/{pb_id}", page("block")),
        Route("/products/{buffer}", page("product")),
        *_api_routes(ctx),
        Route("/render/{buffer}/{figure}.png", _render(ctx)),
        Route("/files/{path:path}", _file(ctx)),
        Mount("/static", StaticFiles(packages=[("sdpbatch.web", "static")]), name="static"),
    ]
    middleware = [Middleware(ReadOnly)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            NotFound: _error(404),
            NoProduct: _error(404),
            OutsideDataRoot: _error(404),
            ConfigError: _error(503),
            Exception: _error(500),  # any other failure: still JSON, and logged
        },
    )


def _error(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=status)

    return handler


# ---------------------------------------------------------------------------------------------
# the JSON API
# ---------------------------------------------------------------------------------------------


def _api_routes(ctx: Context) -> list[Route]:
    def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "data_dir": str(ctx.root.path)})

    def system(request: Request) -> JSONResponse:
        return JSONResponse(system_view(ctx.config, ctx.root))

    def overview_now(request: Request) -> JSONResponse:
        return JSONResponse(overview(ctx.config, ctx.root))

    def block(request: Request) -> JSONResponse:
        return JSONResponse(block_view(ctx.config, ctx.root, request.path_params["pb_id"]))

    def block_log(request: Request) -> JSONResponse:
        relative = workflow_log(ctx.config, ctx.root, request.path_params["pb_id"])
        offset = _offset(request.query_params.get("offset"))
        if relative is None:
            return JSONResponse({"log": None, "lines": [], "offset": offset, "next_offset": 0})
        lines, next_offset = read_log(ctx.root.resolve(relative), offset)
        return JSONResponse(
            {"log": relative, "lines": lines, "offset": offset, "next_offset": next_offset}
        )

    def buffer(request: Request) -> JSONResponse:
        return JSONResponse(buffer_view(ctx.config, ctx.root, request.path_params["name"]))

    def product(request: Request) -> JSONResponse:
        return JSONResponse(product_view(ctx.root, request.path_params["buffer"]))

    def gains(request: Request) -> JSONResponse:
        path = product_file(ctx.root, request.path_params["buffer"], "gains")
        return JSONResponse({"terms": [gain_series(t) for t in read_gain_terms(path)]})

    def qa(request: Request) -> JSONResponse:
        return JSONResponse(read_qa(product_file(ctx.root, request.path_params["buffer"], "qa")))

    return [
        Route("/api/health", health),
        Route("/api/system", system),
        Route("/api/overview", overview_now),
        Route("/api/events", _overview_events(ctx)),
        Route("/api/blocks/{pb_id}", block),
        Route("/api/blocks/{pb_id}/log", block_log),
        Route("/api/blocks/{pb_id}/log/stream", _log_events(ctx)),
        Route("/api/buffers/{name}", buffer),
        Route("/api/products/{buffer}", product),
        Route("/api/products/{buffer}/gains", gains),
        Route("/api/products/{buffer}/qa", qa),
    ]


def _offset(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


# ---------------------------------------------------------------------------------------------
# server-sent events
# ---------------------------------------------------------------------------------------------


def _overview_events(ctx: Context):
    async def endpoint(request: Request) -> StreamingResponse:
        queue = ctx.overviews.subscribe()

        async def stream():
            try:
                yield "retry: 1000\n\n"
                while True:
                    try:
                        text = await asyncio.wait_for(queue.get(), KEEPALIVE)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: overview\ndata: {text}\n\n"
            finally:
                ctx.overviews.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    return endpoint


def _log_events(ctx: Context):
    """The workflow log as it grows: events ``lines`` ``{"log", "lines"}``, id = next offset
    (a reconnecting EventSource resumes from its ``Last-Event-ID``)."""

    async def endpoint(request: Request) -> StreamingResponse:
        pb_id = request.path_params["pb_id"]
        await asyncio.to_thread(workflow_log, ctx.config, ctx.root, pb_id)  # 404 if unknown
        offset = _offset(request.headers.get("last-event-id") or request.query_params.get("offset"))

        async def stream():
            nonlocal offset
            relative, idle = None, 0.0
            yield "retry: 1000\n\n"
            while True:
                if relative is None:
                    relative = await asyncio.to_thread(workflow_log, ctx.config, ctx.root, pb_id)
                lines: list[str] = []
                if relative is not None:
                    lines, offset = read_log(ctx.root.resolve(relative), offset)
                if lines:
                    data = json.dumps({"log": relative, "lines": lines})
                    yield f"event: lines\nid: {offset}\ndata: {data}\n\n"
                    idle = 0.0
                    continue
                idle += LOG_POLL
                if idle >= KEEPALIVE:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                await asyncio.sleep(LOG_POLL if relative is not None else 1.0)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    return endpoint


# ---------------------------------------------------------------------------------------------
# figures and files
# ---------------------------------------------------------------------------------------------


def _render(ctx: Context):
    def endpoint(request: Request) -> Response:
        buffer, figure = request.path_params["buffer"], request.path_params["figure"]
        if figure in IMAGES:
            png = render.image_png(
                product_file(ctx.root, buffer, figure),
                title=f"{figure} image ({buffer})",
                beam_source=product_file(ctx.root, buffer, "restored"),
                symmetric=figure == "residual",
            )
        elif figure == "gains":
            png = render.gains_png(product_file(ctx.root, buffer, "gains"))
        elif figure == "qa":
            png = render.qa_png(product_file(ctx.root, buffer, "qa"))
        else:
            raise NoProduct(f"no figure {figure!r}: restored, residual, gains or qa")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    return endpoint


def _file(ctx: Context):
    """A file of a buffer or a log, never rendered by the browser as a page of this site."""

    def endpoint(request: Request) -> FileResponse:
        path = ctx.root.file(request.path_params["path"])
        return FileResponse(
            path,
            media_type=FILE_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            headers={"Content-Security-Policy": "sandbox", "Cache-Control": "no-cache"},
        )

    return endpoint
