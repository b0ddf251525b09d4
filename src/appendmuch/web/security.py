"""What every request passes before it reaches a page: the token, the Host, the headers.

- **Token** (when the server has one): every page, API call, export, event stream
  and static file needs it, as ``Authorization: Bearer TOKEN``, as ``?token=TOKEN``,
  or as the cookie a browser gets when it first opens ``/?token=TOKEN`` (the page is
  then reloaded without the token in its address).  Anything else gets 401 and a
  message saying how to pass it.  Tokens are compared in constant time.
- **Host** (when there is no token, so the server listens on loopback only): requests
  must name the server as ``127.0.0.1``, ``localhost`` or ``[::1]``, so that a web page
  elsewhere cannot reach it through a DNS name rebound to 127.0.0.1.
- **Headers** on every response: a Content-Security-Policy that allows scripts,
  styles and connections to this server only (no inline script, no framing),
  ``nosniff``, no referrer, and no caching of the log's data.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

__all__ = ["COOKIE", "CSP", "LOOPBACK_HOSTS", "Guard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the Content-Security-Policy of every response
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: the cookie that carries a browser's proof of the token
COOKIE = "appendmuch_token"
#: the names a server without a token answers to
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

_NEEDS_TOKEN = (
    "This log is served with a token. Open the address that 'appendmuch serve' printed "
    "(it ends in ?token=...), or send the header 'Authorization: Bearer TOKEN'."
)


def _host_name(host: str) -> str:
    """The Host header without its port (``[::1]:8000`` -> ``[::1]``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: the token or Host check, then the security headers."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token
        self.cookie = (
            None
            if token is None
            else hmac.new(token.encode(), b"appendmuch web view", hashlib.sha256).hexdigest()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value for key, value in scope.get("headers", ())}
        path: str = scope.get("path", "/")
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if self.token is None:
            host = headers.get("host", b"").decode("latin-1")
            if _host_name(host).lower() not in LOOPBACK_HOSTS:
                await _refuse(
                    send,
                    path,
                    400,
                    f"Host {host!r} refused: without --token this server answers only as "
                    "127.0.0.1, localhost or [::1]. Start it with --token to serve it under "
                    "another name (a reverse proxy, say).",
                )
                return
        else:
            offered = dict(query).get("token")
            if offered is not None and self._matches(offered, self.token):
                if scope.get("method") == "GET" and not path.startswith(("/api/", "/export/")):
                    # a browser's first visit: keep the proof in a cookie, and the token
                    # out of the address bar and its history
                    rest = urlencode([(k, v) for k, v in query if k != "token"])
                    await _redirect(send, path + ("?" + rest if rest else ""), self.cookie)
                    return
            elif not self._allowed(headers):
                await _refuse(send, path, 401, _NEEDS_TOKEN)
                return
        await self.app(scope, receive, _with_headers(send, path))

    def _allowed(self, headers: dict[str, bytes]) -> bool:
        assert self.token is not None and self.cookie is not None
        auth = headers.get("authorization", b"").decode("latin-1")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and self._matches(credential.strip(), self.token):
            return True
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", b"").decode("latin-1"))
        except Exception:  # a malformed Cookie header proves nothing
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and self._matches(morsel.value, self.cookie)

    @staticmethod
    def _matches(offered: str, expected: str) -> bool:
        return hmac.compare_digest(offered.encode(), expected.encode())


def _with_headers(send: Send, path: str) -> Send:
    static = path.startswith("/static/")

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.extend(_HEADERS)
            if not static:
                headers.append((b"cache-control", b"no-store"))
            message["headers"] = headers
        await send(message)

    return wrapped


async def _redirect(send: Send, location: str, cookie: str | None) -> None:
    headers = [(b"location", location.encode("latin-1")), *_HEADERS]
    headers.append((b"cache-control", b"no-store"))
    if cookie is not None:
        value = f"{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict"
        headers.append((b"set-cookie", value.encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send, path: str, status: int, message: str) -> None:
    """A refusal as JSON (API, exports, events) or as a small page."""
    if path.startswith(("/api/", "/export/")):
        body = orjson.dumps({"error": {"status": status, "message": message}})
        kind = b"application/json"
    else:
        from html import escape

        body = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{status}: appendmuch</title></head><body><h1>{status}</h1>"
            f"<p>{escape(message)}</p></body></html>"
        ).encode()
        kind = b"text/html; charset=utf-8"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *_HEADERS]
    headers.append((b"cache-control", b"no-store"))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="appendmuch"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
