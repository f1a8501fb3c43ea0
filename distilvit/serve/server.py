"""`distilvit-web serve`'s HTTP server: uvicorn (HTTP/1.1 over asyncio, h11) running a small starlette app.

The app maps URLs with distilvit/serve/served_site.py and answers files with starlette's FileResponse (streamed in
64 KiB chunks, single and multiple byte ranges, 416 outside the file, ETag and Last-Modified) plus what it lacks:
a matching If-None-Match is a 304, every response carries the cross-origin isolation headers and
`X-Content-Type-Options: nosniff`, versioned model files are `immutable` (never an error), everything else
`no-cache`; a Host header that does not name this machine is a 403 (starlette's TrustedHostMiddleware cannot say
"any IP literal", which the rule needs, so the check is served_site.host_allowed).

uvicorn lacks two deadlines a server open to a network needs; DeadlineProtocol adds them to its h11 protocol:
a request's head must arrive within `timeout` seconds of the connection opening or of the previous response
(a client dripping a byte at a time is closed, which uvicorn alone never does), and a response whose client
stops reading for `timeout` seconds is aborted. Connections cost a coroutine, not a thread: at most
`max_connections` are served at once (uvicorn answers 503 beyond), and stopping takes at most `GRACE_S` for
responses in progress. This module knows nothing about models; docs/guarantees.md lists the rules and the load
test's figures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import threading

import anyio
import h11
import uvicorn
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from distilvit.errors import UserError
from distilvit.serve.served_site import MIME, Site, Target, host_allowed, resolve

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 512
GRACE_S = 0.5  # stopping waits this long for responses in progress, then cuts them off
HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
           "X-Content-Type-Options": "nosniff"}
IMMUTABLE = "public, max-age=31536000, immutable"


class DemoApp:
    """The ASGI app: GET and HEAD of the site's files, /models/index.json, 403 for a foreign Host, real 404s."""

    def __init__(self, site: Site, host_name: str):
        self.site = site
        self.host_name = host_name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        response = await self.respond(Request(scope))
        response.headers.update(HEADERS)
        response.headers.setdefault("Cache-Control", "no-cache")
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("only GET and HEAD are served\n", 405, headers={"Allow": "GET, HEAD"})
        if not host_allowed(request.headers.get("host"), self.site, self.host_name):
            return PlainTextResponse("this Host is not served\n", 403)
        path = request.scope["path"]  # percent-decoded by uvicorn, as the old server did with unquote()
        if path == "/models/index.json":
            return JSONResponse(await anyio.to_thread.run_sync(self.site.index))
        found = await anyio.to_thread.run_sync(_stat_target, self.site, path)
        if found is None:
            return PlainTextResponse("not found\n", 404)
        target, st = found
        response = FileResponse(target.path, stat_result=st, media_type=MIME.get(target.path.suffix, "application/octet-stream"))
        if target.immutable:
            response.headers["Cache-Control"] = IMMUTABLE
        etag = response.headers["etag"]
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            not_modified = Response(status_code=304, headers={"ETag": etag})
            if target.immutable:
                not_modified.headers["Cache-Control"] = IMMUTABLE
            return not_modified
        return response


def _stat_target(site: Site, path: str) -> tuple[Target, os.stat_result] | None:
    """The file a URL names and its stat, or None when there is none (a missing, foreign or unreadable path)."""
    try:
        target = resolve(site, path)
        if target is None:
            return None
        st = os.stat(target.path)
    except OSError:  # e.g. a name too long for the file system
        return None
    return (target, st) if stat.S_ISREG(st.st_mode) else None


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head and on a stalled reader (module docstring).
    Both use uvicorn's `timeout_keep_alive`, which make_server sets to the server's timeout."""

    _head_timer: asyncio.TimerHandle | None = None
    _stall_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a whole request head arrived (or the connection failed)
            self._cancel("_head_timer")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_head()  # the next request on this connection gets its own deadline

    def pause_writing(self) -> None:
        super().pause_writing()
        self._cancel("_stall_timer")
        self._stall_timer = self.loop.call_later(self.timeout_keep_alive, self._cut_off, "stopped reading")

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel("_stall_timer")

    def shutdown(self) -> None:
        """The server is stopping: uvicorn closes an idle connection and lets a response finish; this one is cut off
        after GRACE_S (its client sees the download end early) instead of holding the stop up for its whole file."""
        super().shutdown()
        self.loop.call_later(GRACE_S, self._cut_off, "was still being answered when the server stopped")

    def connection_lost(self, exc) -> None:
        self._cancel("_head_timer")
        self._cancel("_stall_timer")
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._cancel("_head_timer")
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._cut_off, "sent no whole request")

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _cut_off(self, why: str) -> None:
        if not self.transport.is_closing():
            log.debug("closed %s: %s within %.0f s", self.client, why, self.timeout_keep_alive)
            self.transport.abort()


class DemoServer:
    """A listening socket and the uvicorn server that serves it. `serve_forever()` blocks (Ctrl+C stops it in the
    main thread); `start()` serves from a thread that `shutdown()` stops within GRACE_S plus a moment."""

    def __init__(self, site: Site, sock: socket.socket, host_name: str, timeout: float, max_connections: int):
        self.site = site
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        config = uvicorn.Config(DemoApp(site, host_name), http=DeadlineProtocol, lifespan="off", log_config=None,
                                log_level="warning", access_log=False, timeout_keep_alive=timeout,
                                limit_concurrency=max_connections, timeout_graceful_shutdown=GRACE_S + 2,
                                server_header=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self._server.run(sockets=[self.socket])

    def start(self) -> "DemoServer":
        self._thread = threading.Thread(target=self.serve_forever, name="distilvit-serve", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=GRACE_S + 5)

    def server_close(self) -> None:
        self.socket.close()


def make_server(site: Site, host: str = "127.0.0.1", port: int = 8000, timeout: float = DEFAULT_TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS) -> DemoServer:
    """Bind `host:port` now (so a bad one is one UserError, and port 0's pick is known) and return the server."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port (0 to 65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
    except OSError as err:  # socket.gaierror included: a name that does not resolve
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}; pass another --host or --port") from err
    return DemoServer(site, sock, host, timeout, max_connections)
