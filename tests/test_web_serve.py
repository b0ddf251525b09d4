"""``appendmuch serve``: what it prints, what it refuses, and which logs it opens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from appendmuch import Sqlite3, Store
from webfixtures import servers_fixture, web_log_fixture  # noqa: F401 (fixtures)


def serve_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appendmuch", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("appendmuch: error: "), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_help_says_what_it_does() -> None:
    done = serve_cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for words in ("read-only", "--token", "--table", "a dump file", "127.0.0.1", "/api"):
        assert words in text
    listed = subprocess.run(
        [sys.executable, "-m", "appendmuch", "--help"], capture_output=True, text=True, check=True
    )
    assert "serve" in listed.stdout


def test_it_prints_the_address_and_stops_cleanly(web_log: Path, servers: Any) -> None:
    server = servers(web_log)
    assert server.lines[0].startswith(f"appendmuch: serving {web_log}, table appendmuch_values")
    assert "rows, live) at http://127.0.0.1:" in server.lines[0]
    assert httpx2.get(server.url).status_code == 200
    # it yields the processor to the application writing the log
    assert (
        os.getpriority(os.PRIO_PROCESS, server.proc.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    )
    assert server.stop() == 0
    assert server.lines[-1] == "appendmuch: stopped\n"
    assert "Traceback" not in server.stderr()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.sqlite3", "no such file"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: _empty_sqlite(tmp), "there is no table 'appendmuch_values'"),
        (lambda tmp: _garbage(tmp), "neither a SQLite database nor an appendmuch dump"),
    ],
    ids=["missing", "directory", "no-table", "garbage"],
)
def test_a_log_it_cannot_open_is_one_line(tmp_path: Path, make: Any, message: str) -> None:
    target = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(serve_cli(str(target), "--port", "0"), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def _empty_sqlite(tmp: Path) -> Path:
    import sqlite3

    path = tmp / "other.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    return path


def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.bin"
    path.write_bytes(b"\x93 certainly not a log")
    return path


def test_an_unreachable_server_is_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = serve_cli(f"postgresql://nobody@127.0.0.1:{port}/nothing", "--port", "0")
    one_line_error(done, f"cannot connect to postgresql://nobody@127.0.0.1:{port}/nothing")


def test_a_port_in_use_is_one_line(web_log: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(
            serve_cli(str(web_log), "--port", str(port)), f"cannot listen on 127.0.0.1:{port}"
        )


def test_tables_and_dumps(tmp_path: Path, servers: Any) -> None:
    path = tmp_path / "two.sqlite3"
    with Store(Sqlite3(path, table_prefix="lab", tblextra="2024")) as store:
        store.storage("x").y = 1
    with Store(Sqlite3(path)) as store:
        store.storage("a").b = 2
    by_name = servers(path, "--table", "lab2024_values")
    assert httpx2.get(by_name.base + "/api/tree").json()["children"][0]["token"] == "x"
    by_parts = servers(path, "--table-prefix", "lab", "--tblextra", "2024")
    assert httpx2.get(by_parts.base + "/api/overview").json()["table"] == "lab2024_values"
    default = servers(path)
    assert httpx2.get(default.base + "/api/tree").json()["children"][0]["token"] == "a"
    one_line_error(serve_cli(str(path), "--table", "nope_values", "--port", "0"), "no table")
    dump = tmp_path / "backup.msgpack"
    subprocess.run(
        [sys.executable, "-m", "appendmuch", "dump", str(path), "-o", str(dump)], check=True
    )
    from_dump = servers(dump)
    assert "a fixed dump" in from_dump.lines[0]
    assert httpx2.get(from_dump.base + "/api/overview").json()["backend"] == "dump"


def test_without_the_web_extra_it_says_how_to_install_it(web_log: Path) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from appendmuch.cli import main\n"
        f"sys.exit(main(['serve', {str(web_log)!r}, '--port', '0']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    one_line_error(done, "appendmuch serve needs the 'web' extra")
    assert "pip install 'appendmuch[web]'" in done.stderr
