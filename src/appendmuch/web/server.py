"""The web application (Starlette) and the server that runs it (uvicorn).

:func:`make_app` builds the ASGI application over an opened log;
:func:`serve` opens the log, listens, prints the address and serves until stopped.
Nothing here writes to the log: there are only GET routes, over a read-only Store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib.resources import files
from types import FrameType
from typing import IO

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import one_line
from .live import Hub
from .opening import Source, open_source
from .pages import View, json_response, routes
from .params import NotFoundError, WebError
from .security import ASGIApp, Guard
from .templating import environment

__all__ = ["ServeOptions", "make_app", "serve"]

_log = logging.getLogger("appendmuch.web")
_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_PAGES_HINT = "the pages are /, /tree, /log, /ns/NAMESPACE and /field/NAMESPACE/FIELD"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The files of the package's ``static`` folder, read once: a request can name only
    one of these, never a path."""
    found: dict[str, tuple[bytes, str]] = {}
    for entry in files("appendmuch.web").joinpath("static").iterdir():
        kind = _STATIC_TYPES.get(os.path.splitext(entry.name)[1])
        if kind is not None and entry.is_file():
            found[entry.name] = (entry.read_bytes(), kind)
    return found


def _error_response(request: Request, status: int, message: str) -> Response:
    path = request.url.path
    if path.startswith(("/api/", "/export/")):
        return json_response({"error": {"status": status, "message": message}}, status)
    view: View = request.app.state.view
    page = view.env.get_template("error.html").render(
        source=view.source, status=status, message=message, page="error"
    )
    return Response(page, status_code=status, media_type="text/html; charset=utf-8")


async def _web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)
    return _error_response(request, exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"there is no page at {request.url.path} ({_PAGES_HINT})"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed: this server only reads (GET)"
    else:
        message = str(exc.detail)
    return _error_response(request, exc.status_code, message)


async def _server_error(request: Request, exc: Exception) -> Response:
    _log.error("error while answering %s", request.url.path, exc_info=exc)
    message = f"the server could not answer this request ({type(exc).__name__}: {one_line(exc)})"
    return _error_response(request, 500, message)


def make_app(
    source: Source, *, token: str | None = None, stopping: Callable[[], bool] | None = None
) -> ASGIApp:
    """The web view of ``source`` as an ASGI application.  With ``token``, every
    request must carry it (see :mod:`appendmuch.web.security`); without, only
    loopback names are answered.  ``stopping()`` turning true (the server was asked
    to stop) ends the open event streams, so that stopping does not wait for them."""
    statics = _static_files()
    hub = Hub(source.index)
    view = View(source, environment(), hub, guarded=token is not None)

    async def static(request: Request) -> Response:
        found = statics.get(request.path_params["name"])
        if found is None:
            raise NotFoundError(f"no static file {request.path_params['name']!r}")
        body, kind = found
        return Response(body, media_type=kind, headers={"cache-control": "no-cache"})

    async def watch() -> None:
        assert stopping is not None
        while not stopping():
            await asyncio.sleep(0.1)
        hub.stop()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.start()
        watcher = asyncio.create_task(watch()) if stopping is not None else None
        try:
            yield
        finally:
            hub.stop()
            if watcher is not None:
                watcher.cancel()

    app = Starlette(
        routes=[*routes(), Route("/static/{name}", static, methods=["GET"])],
        lifespan=lifespan,
        exception_handlers={
            WebError: _web_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.view = view
    return Guard(app, token=token)


@dataclass(frozen=True)
class ServeOptions:
    """What ``appendmuch serve`` was asked for."""

    db: str
    table_prefix: str = "appendmuch"
    tblextra: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given: asyncio sets TCP_NODELAY on accepted sockets only when it is TCP's,
    # and without it a keep-alive response waits 40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


#: how much the server lowers its CPU priority (``nice``)
NICENESS = 10


def serve(options: ServeOptions, out: IO[str] | None = None) -> int:
    """Open the log, listen, print the address, and serve until interrupted.

    The process first lowers its CPU priority by :data:`NICENESS`: following a busy
    writer costs about as much CPU per row as writing it, and on a machine with few
    cores the application writing the log must keep the processor first."""
    out = out or sys.stdout
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
    sock = _listen(options.host, options.port)
    try:
        source = open_source(
            options.db, table_prefix=options.table_prefix, tblextra=options.tblextra
        )
    except BaseException:
        sock.close()
        raise
    try:
        port = sock.getsockname()[1]
        host = f"[{options.host.strip('[]')}]" if ":" in options.host else options.host
        url = f"http://{host}:{port}/"
        if options.token:
            url += f"?token={options.token}"
        counts = source.index.counts()
        what = source.database + (f", table {source.table}" if source.table else "")
        out.write(
            f"appendmuch: serving {what} ({counts.rows:,} rows, "
            f"{'live' if source.live else 'a fixed dump'}) at {url}\n"
            "appendmuch: read-only; press Ctrl-C to stop\n"
        )
        out.flush()
        server: uvicorn.Server | None = None
        app = make_app(
            source,
            token=options.token,
            stopping=lambda: server is not None and server.should_exit,
        )
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on"
        )
        server = uvicorn.Server(config)
        with _stopped_by_signals():
            server.run(sockets=[sock])
    finally:
        sock.close()
        source.close()
    out.write("appendmuch: stopped\n")
    out.flush()
    return 0


class _StopRequestedError(Exception):
    """SIGTERM arrived: stop like Ctrl-C does."""


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM end the server normally (status 0).  uvicorn shuts down
    gracefully first, then raises the signal again; these handlers turn it into an
    exception caught here."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _StopRequestedError

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield
    except (KeyboardInterrupt, _StopRequestedError):
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
