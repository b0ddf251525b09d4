"""The web view is safe to run and to expose: it writes nothing, asks for its token on
every request, refuses strangers' Host names, escapes everything it shows, sends a
Content-Security-Policy, and serves no file outside its static folder.  (The same
hostile strings are checked in a real browser in test_web_browser.py.)"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Store
from appendmuch.dumpfile import pack_rows
from appendmuch.web.security import CSP
from webfixtures import (  # noqa: F401 (fixtures)
    HOSTILE,
    servers_fixture,
    web_client_fixture,
    web_log_fixture,
)

TOKEN = "s3cret-token-for-the-tests-0123456789"


@pytest.fixture(name="guarded")
def guarded_fixture(web_log: Path) -> Iterator[Any]:
    """A TestClient on a server that has a token."""
    from starlette.testclient import TestClient

    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app

    source = open_source(str(web_log))
    try:
        app = make_app(source, token=TOKEN)
        with TestClient(app, base_url="http://example.org", follow_redirects=False) as client:
            yield client
    finally:
        source.close()


# --------------------------------------------------------------------------- the token

GUARDED_PATHS = [
    "/",
    "/tree",
    "/ns/lab/hostile",
    "/field/lab/series/x",
    "/log",
    "/api/overview",
    "/api/log",
    "/api/events",
    "/export/log",
    "/static/app.css",
    "/nope",
]


@pytest.mark.parametrize("path", GUARDED_PATHS)
def test_every_request_needs_the_token(guarded: Any, path: str) -> None:
    refused = guarded.get(path)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="appendmuch"'
    assert "served with a token" in refused.text and "Authorization: Bearer" in refused.text
    assert refused.headers["content-security-policy"] == CSP
    if path.startswith(("/api/", "/export/")):
        assert refused.json()["error"]["status"] == 401
    wrong = guarded.get(path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
    assert wrong.status_code == 401
    assert guarded.get(path, headers={"Cookie": "appendmuch_token=forged"}).status_code == 401
    if path != "/api/events":  # (a stream: opened over HTTP in test_web_live.py)
        ok = guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == (404 if path == "/nope" else 200)


def test_a_browser_trades_the_token_in_the_address_for_a_cookie(guarded: Any) -> None:
    first = guarded.get(f"/log?ns=lab&token={TOKEN}")
    assert first.status_code == 303
    assert first.headers["location"] == "/log?ns=lab"  # the token leaves the address bar
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = guarded.get("/log?ns=lab")  # the client keeps the cookie
    assert page.status_code == 200 and "lab/series" in page.text
    assert guarded.get("/api/overview").status_code == 200
    guarded.cookies.clear()
    assert guarded.get("/log?ns=lab").status_code == 401
    assert guarded.get(f"/log?token={TOKEN}x").status_code == 401
    # scripts may pass it as a parameter: answered at once
    assert guarded.get(f"/api/overview?token={TOKEN}").status_code == 200


def test_without_a_token_only_loopback_names_are_answered(web_client: Any) -> None:
    for host in ("127.0.0.1", "localhost", "127.0.0.1:8000", "localhost:8765", "[::1]:8000"):
        assert web_client.get("/api/overview", headers={"Host": host}).status_code == 200
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "[::2]"):
        refused = web_client.get("/api/overview", headers={"Host": host})
        assert refused.status_code == 400, host
        assert "without --token this server answers only as" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "would let other machines read the log: give --token"),
        (["--host", "192.168.1.20"], "would let other machines read the log"),
        (["--host", "myhost.example"], "would let other machines read the log"),
        (["--token", "short"], "the token is too short"),
        (["--table", "nosuffix"], "a table name ends in _values"),
        (["--table", "x_values", "--tblextra", "y"], "not both"),
        (["--port", "70000"], "a port is a number from 0 to 65535"),
    ],
)
def test_the_command_refuses_unsafe_or_wrong_options(
    web_log: Path, args: list[str], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "APPENDMUCH_WEB_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "appendmuch", "serve", str(web_log), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("appendmuch: error: ") and message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_served_token_from_the_environment(web_log: Path, servers: Any) -> None:
    import httpx2

    os.environ["APPENDMUCH_WEB_TOKEN"] = TOKEN
    try:
        server = servers(web_log)
    finally:
        del os.environ["APPENDMUCH_WEB_TOKEN"]
    assert server.url.endswith(f"?token={TOKEN}")
    assert httpx2.get(server.base + "/api/overview").status_code == 401
    answer = httpx2.get(server.base + "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/ns/lab/hostile",
        "/api/overview",
        "/nope",
        "/api/nope",
        "/static/app.js",
        "/export/log",
    ],
)
def test_every_response_has_the_security_headers(web_client: Any, path: str) -> None:
    answer = web_client.get(path)
    headers = answer.headers
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    if not path.startswith("/static/"):
        assert headers["cache-control"] == "no-store"


def test_pages_hold_no_inline_script_or_style(web_client: Any) -> None:
    for path in ("/", "/tree", "/ns/lab/hostile", "/field/lab/series/x", "/log", "/nope"):
        text = web_client.get(path).text
        assert text.count("<script") == 1 and '<script src="/static/app.js" defer>' in text
        assert " style=" not in text and "<style" not in text and " on" + "click=" not in text


# --------------------------------------------------------------------------- static files


def test_static_files_are_a_fixed_list(web_client: Any) -> None:
    assert web_client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert web_client.get("/static/app.css").headers["content-type"].startswith("text/css")
    for path in (
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e%2f%2e%2e%2fcli.py",
        "/static/..%5cserver.py",
        "/static/app.css%00.py",
        "/static/",
        "/static/base.html",
        "/static/.%2e/templates/base.html",
    ):
        answer = web_client.get(path)
        assert answer.status_code == 404, path
        assert "import" not in answer.text and "{%" not in answer.text


def raw_get(base: str, target: str) -> tuple[int, bytes]:
    """A request with ``target`` sent exactly as written (no client normalises it)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_raw_dot_segments_cannot_leave_the_static_folder(web_log: Path, servers: Any) -> None:
    server = servers(web_log)
    for target in (
        "/static/../server.py",
        "/static/../../web/server.py",
        "/static/./../templates/base.html",
        "/static/..\\server.py",
        "/static//etc/passwd",
        "/static/../../../../../../etc/passwd",
    ):
        status, data = raw_get(server.base, target)
        assert status in (400, 404), target
        assert b"root:" not in data and b"import " not in data and b"{% " not in data


# --------------------------------------------------------------------------- escaping


@pytest.fixture(name="hostile_log")
def hostile_log_fixture(web_log: Path) -> Path:
    """The demo log plus rows whose code locations are hostile (written as a dump)."""
    contexts = [HOSTILE["script"], HOSTILE["img"], HOSTILE["link"]]
    driver = Sqlite3(web_log)
    last = max(row[0] for row in driver.load_rows())
    rows = [
        (last + 1 + i, "lab/hostile", "ctx", b"\x00" + str(i).encode(), 1700000000.0 + i, ctx)
        for i, ctx in enumerate(contexts)
    ]
    driver.restore(io.BytesIO(b"".join(pack_rows(rows))))
    driver.close()
    return web_log


def test_hostile_values_and_contexts_are_text_in_every_page(hostile_log: Path) -> None:
    from starlette.testclient import TestClient

    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app

    source = open_source(str(hostile_log))
    try:
        with TestClient(make_app(source), base_url="http://127.0.0.1") as client:
            pages = {
                path: client.get(path).text
                for path in (
                    "/ns/lab/hostile",
                    "/ns/lab/hostile?partial=state",
                    "/field/lab/hostile/script",
                    "/field/lab/hostile/img",
                    "/field/lab/hostile/nested",
                    "/field/lab/hostile/ctx",
                    "/log?ns=lab/hostile",
                    "/log?ns=lab/hostile&partial=rows",
                    "/log?context=%3Cscript",
                )
            }
    finally:
        source.close()
    for path, text in pages.items():
        assert "<script>alert" not in text, path
        assert "<img" not in text, path
        assert 'href="javascript:' not in text and "href='javascript:" not in text, path
    state = pages["/ns/lab/hostile"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in state
    assert "&#34;&gt;&lt;img src=x onerror=" in state.replace("&quot;", "&#34;")
    assert "javascript:alert(document.domain)" in state  # shown, as text
    log = pages["/log?ns=lab/hostile"]
    assert log.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # a value and a context
    assert pages["/log?context=%3Cscript"].count('<tr id="seq-') == 1


# --------------------------------------------------------------------------- read-only


def fingerprint(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
    }


def test_serving_writes_nothing(web_log: Path) -> None:
    from starlette.testclient import TestClient

    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app

    before = fingerprint(web_log.parent)
    source = open_source(str(web_log))
    try:
        with TestClient(make_app(source), base_url="http://127.0.0.1") as client:
            for path in (
                "/",
                "/tree?prefix=session",
                "/tree?q=lab&field=x",
                "/ns/session/s1/player/p3?step=4",
                "/field/lab/series/x",
                "/log?ns=session&context=write",
                "/api/overview",
                "/export/log",
                "/export/ns/lab/hostile?shape=log",
            ):
                assert client.get(path).status_code == 200, path
            for method in ("post", "put", "delete"):
                assert getattr(client, method)("/api/log").status_code == 405
        assert source.store.driver.read_only
    finally:
        source.close()
    assert fingerprint(web_log.parent) == before  # no byte, no -wal, -shm or lock file
    with Store(Sqlite3(web_log)) as store:  # and a writer opens it as always
        store.storage("lab").after = 1


def test_a_crashed_writers_wal_is_left_as_it_was(tmp_path: Path, servers: Any) -> None:
    """A writer killed with its -wal and -shm files: serving the log (a follower
    included) and stopping must leave the database and its -wal as they were (a
    read-write connection closing last would checkpoint the -wal into the database),
    and the -shm in place.  The -shm's bytes may change: it is SQLite's shared-memory
    index, where every reader of a WAL database notes what it reads (its read marks),
    the sqlite3 shell's too."""
    import signal

    import httpx2

    path = tmp_path / "crashed.sqlite3"
    code = (
        "import sys, time\n"
        "from appendmuch import Sqlite3, Store\n"
        "store = Store(Sqlite3(sys.argv[1]))\n"
        "for i in range(3000):\n"
        "    store.storage('a', f'n{i % 10}').x = i\n"
        "store.flush()\n"
        "print('flushed', flush=True)\n"
        "time.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert writer.stdout is not None and writer.stdout.readline() == b"flushed\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    before = fingerprint(tmp_path)
    assert {"crashed.sqlite3-wal", "crashed.sqlite3-shm"} <= set(before)
    server = servers(path)
    assert httpx2.get(server.base + "/api/overview").json()["rows"] == 3000
    assert httpx2.get(server.base + "/log").status_code == 200
    assert server.stop() == 0
    after = fingerprint(tmp_path)
    after.pop("server-0.stderr", None)
    assert "crashed.sqlite3-shm" in after
    after.pop("crashed.sqlite3-shm")
    before.pop("crashed.sqlite3-shm")
    assert after == before
