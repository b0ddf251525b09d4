"""Fixtures and helpers of the web view's tests (``appendmuch serve``, issue 21).

A test module imports the fixtures it uses (``from webfixtures import web_log_fixture``):
pytest finds them under their ``name=``.  Everything is real: SQLite files, the
session's PostgreSQL server, the server started as ``python -m appendmuch serve`` in
its own process, and the system's headless Chromium driven by selenium.

Chromium missing or unable to start fails the browser tests when ``CI`` or
``APPENDMUCH_REQUIRE_BROWSER=1`` is set (``.ci/run`` sets it), and skips them with the
install command otherwise, as the PostgreSQL tests do.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appendmuch import Memory, Sqlite3, Store
from backends import PostgresBackend, SqlBackend, SqliteBackend
from sharedlib import PeerProcess

__all__ = [
    "HOSTILE",
    "EventReader",
    "ServerProcess",
    "browser_fixture",
    "chromium",
    "pg_url",
    "poll",
    "servers_fixture",
    "web_client_fixture",
    "web_log_fixture",
    "write_demo",
]

T = TypeVar("T")
ENV_REQUIRE = "APPENDMUCH_REQUIRE_BROWSER"
#: seconds a server or browser gets to start, and a poll its deadline
PATIENCE = 30.0

#: values that must show as text, never as markup or a link
HOSTILE = {
    "script": "<script>alert(1)</script>",
    "img": '"><img src=x onerror="window.__pwned=1">',
    "link": "javascript:alert(document.domain)",
    "amp": 'Tom & Jerry\'s "quote" </td></tr></table>',
}


def poll(check: Callable[[], T | None], timeout: float = PATIENCE, every: float = 0.02) -> T:
    """Call ``check`` until it returns something other than None or False; fail at the
    deadline with the last value.  (Polling with a deadline, never a fixed sleep.)"""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s (last: {result!r})")
        time.sleep(every)


# --------------------------------------------------------------------------- logs


def write_demo(store: Store) -> None:
    """The log most web tests look at.

    ``session/s{0,1}/player/p{0..3}``: 3 rounds of ``round``, ``score``, ``items``
    (a list grown in a with block) and a ``profile`` dict; ``session/s1/player/p3``
    loses its ``score`` at the end.  ``lab/hostile``: the :data:`HOSTILE` strings as
    values, inside a list and as dict keys.  ``lab/series``: ``x`` written 300 times.
    """
    for s in range(2):
        for p in range(4):
            player = store.storage("session", f"s{s}", "player", f"p{p}")
            for r in range(3):
                player.round = r
                player.score = 10 * r + p
                with player:
                    if r == 0:
                        player.items = ["start"]
                    else:
                        player.items.append(f"item{r}")
                player.profile = {"level": r, "name": f"p{p}"}
    del store.storage("session", "s1", "player", "p3").score
    hostile = store.storage("lab", "hostile")
    for name, text in HOSTILE.items():
        setattr(hostile, name, text)
    hostile.nested = [HOSTILE["script"], {HOSTILE["img"]: HOSTILE["link"]}]
    series = store.storage("lab", "series")
    for i in range(300):
        series.x = (i * 7) % 50 + i / 10
    store.flush()


@pytest.fixture(name="web_log")
def web_log_fixture(tmp_path: Path) -> Path:
    """A SQLite file holding :func:`write_demo`'s log (closed: no writer)."""
    path = tmp_path / "web.sqlite3"
    with Store(Sqlite3(path)) as store:
        write_demo(store)
    return path


def rows_of(path: Path) -> list[tuple[Any, ...]]:
    """A SQLite log's rows as stored, read through a read-only driver."""
    driver = Sqlite3(path, read_only=True)
    try:
        return [tuple(row) for row in driver.load_rows()]
    finally:
        driver.close()


def demo_rows() -> list[tuple[Any, ...]]:
    """The demo log's rows as stored (written to Memory)."""
    store = Store(Memory())
    write_demo(store)
    return list(store.driver.load_rows())


# --------------------------------------------------------------------------- in process


@pytest.fixture(name="web_client")
def web_client_fixture(web_log: Path) -> Iterator[Any]:
    """A Starlette TestClient on the web view of ``web_log`` (as http://127.0.0.1)."""
    from starlette.testclient import TestClient

    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app

    source = open_source(str(web_log))
    try:
        with TestClient(make_app(source), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        source.close()


# --------------------------------------------------------------------------- server process


class ServerProcess:
    """``python -m appendmuch serve ...`` in a process of its own; ``url`` is the
    address it printed (with ``?token=`` when it has one)."""

    def __init__(self, args: list[str], stderr: Path) -> None:
        self._stderr_path = stderr
        self._stderr = open(stderr, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appendmuch", "serve", *args, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: list[str] = []
        found: dict[str, str] = {}
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for text in self.proc.stdout:
                self.lines.append(text)
                match = re.search(r" at (http://\S+)", text)
                if match:
                    found["url"] = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(PATIENCE) or "url" not in found:
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.stderr()}")
        self.url: str = found["url"]
        self.base = self.url.split("?", 1)[0].rstrip("/")

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """SIGTERM (as Ctrl-C would), then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


@pytest.fixture(name="servers")
def servers_fixture(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers: ``servers(DB, *options)``; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(db: str | Path, *options: str) -> ServerProcess:
        stderr = tmp_path / f"server-{len(started)}.stderr"
        server = ServerProcess([str(db), *options], stderr)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def serve(place: SqlBackend, servers: Callable[..., ServerProcess]) -> ServerProcess:
    """``appendmuch serve`` on a tests/backends.py SQL location."""
    if isinstance(place, PostgresBackend):
        return servers(pg_url(place.conninfo), "--table-prefix", place.prefix)
    assert isinstance(place, SqliteBackend)
    return servers(place.path)


@contextlib.contextmanager
def writers(
    place: SqlBackend, tmp_path: Path, count: int, *, shared: bool, app: str = "web-writer"
) -> Iterator[list[PeerProcess]]:
    """``count`` peer processes writing ``place`` (sessions and stderr files named
    ``{app}-{i}``), each closed cleanly at the end."""
    peers = [
        PeerProcess(place.location(f"{app}-{i}"), tmp_path / f"{app}-{i}.stderr", shared=shared)
        for i in range(count)
    ]
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


def pg_url(conninfo: str) -> str:
    """A libpq keyword conninfo as the ``postgresql://`` URL the command line takes."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "")))
    host = str(params.pop("host", "localhost"))
    port = params.pop("port", None)
    dbname = quote(str(params.pop("dbname", "")))
    netloc = f"{user}@{host}" + (f":{port}" if port else "")
    extra = "&".join(f"{key}={quote(str(value))}" for key, value in params.items())
    return f"postgresql://{netloc}/{dbname}" + (f"?{extra}" if extra else "")


class EventReader:
    """The messages of an event stream (``/api/events``), read by a thread of its own so
    that a test can wait for one with a deadline."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        import queue

        import httpx2

        self.messages: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self.status: int | None = None
        self._client = httpx2.Client(timeout=httpx2.Timeout(PATIENCE, read=None))
        self._opened = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self._thread.start()
        if not self._opened.wait(PATIENCE):
            raise AssertionError(f"the event stream {url} did not open")

    def _read(self, url: str, headers: dict[str, str]) -> None:
        import orjson

        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self._opened.set()
                event = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.partition(":")[2].strip()
                    elif line.startswith("data:") and event == "log":
                        self.messages.put(orjson.loads(line.partition(":")[2]))
        except BaseException as exc:
            if not self._closing:
                self.messages.put(exc)
        finally:
            self._opened.set()

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first message for which ``check`` holds, within ``timeout`` seconds."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                message = self.messages.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no such event within {timeout} s") from None
            if isinstance(message, BaseException):
                raise AssertionError(f"the event stream failed: {message!r}")
            if check(message):
                return message

    def close(self) -> None:
        self._closing = True
        self._client.close()


# --------------------------------------------------------------------------- browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def _no_browser(reason: str) -> None:
    how = "install it: apt-get install -y chromium chromium-driver"
    if os.environ.get(ENV_REQUIRE) == "1" or os.environ.get("CI"):
        pytest.fail(f"headless Chromium is needed: {reason} ({how})", pytrace=False)
    pytest.skip(f"headless Chromium unavailable: {reason} ({how}; {ENV_REQUIRE}=1 fails instead)")


def chromium(profile: Path) -> Any:
    """A selenium driver on the system's headless Chromium, with a new empty profile."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        _no_browser(f"selenium is not installed ({exc})")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _no_browser("no chromium and chromedriver on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        return webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        _no_browser(f"it did not start ({str(exc).splitlines()[0]})")
    raise AssertionError("unreachable")


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[Any]:
    """One headless Chromium for the module's tests (a fresh profile)."""
    profile = Path(tempfile.mkdtemp(prefix="appendmuch-chromium-"))
    driver = chromium(profile)
    driver.set_page_load_timeout(PATIENCE)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
