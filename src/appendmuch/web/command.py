"""``appendmuch serve``: its arguments and the checks made before anything is opened.

Kept apart from the server so that the command line imports no part of the web
stack: Starlette, uvicorn and Jinja2 (the ``web`` extra) are imported only when the
command runs, and their absence is a one-line error saying how to install them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence

from ..errors import AppendmuchError

__all__ = ["TOKEN_ENV", "ServeError", "add_serve_command", "is_loopback", "run_serve"]

#: environment variable that may hold the token (keeps it out of the process list)
TOKEN_ENV = "APPENDMUCH_WEB_TOKEN"
#: a token shorter than this is refused
MIN_TOKEN = 16


class ServeError(AppendmuchError, ValueError):
    """``appendmuch serve`` was asked for something it refuses to do."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def add_serve_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
    epilog_tail: str,
) -> None:
    """Register ``serve`` on the command line's subcommands."""
    serve = commands.add_parser(
        "serve",
        help="browse a log in a web browser: tree, time scrubber, history, live log",
        description=(
            "Serve a read-only web view of a log (needs the 'web' extra: pip install "
            "'appendmuch[web]'): an overview, the namespace tree, each namespace as of "
            "any moment (a time scrubber), each field's history with a chart, and the "
            "log itself, updated live while applications write, plus a JSON API under "
            "/api. Opens the log read-only: it never locks, creates or changes anything. "
            "Listens on 127.0.0.1 unless --host says otherwise; any other address needs "
            f"--token (or ${TOKEN_ENV})."
        ),
        epilog="examples:\n  appendmuch serve experiment.sqlite3\n"
        "  appendmuch serve postgresql://lab@db/experiments --port 8080\n"
        "  appendmuch serve backup.msgpack\n"
        "  appendmuch serve experiment.sqlite3 --host 0.0.0.0 --token $(openssl rand -hex 16)"
        + epilog_tail,
        parents=list(parents),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "db",
        metavar="DB",
        help="SQLite database file, postgresql:// URL, or a dump file (appendmuch dump)",
    )
    serve.add_argument(
        "--table",
        metavar="TABLE",
        help="the table, as 'appendmuch info' names it (e.g. appendmuch_values); "
        "the same as --table-prefix/--tblextra",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free)"
    )
    serve.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"require this token on every request (at least {MIN_TOKEN} characters; "
        f"or set ${TOKEN_ENV}); needed for any --host but loopback",
    )
    serve.set_defaults(func=run_serve)


def _table(args: argparse.Namespace) -> tuple[str, str]:
    if args.table is None:
        return args.table_prefix, args.tblextra
    if args.table_prefix != "appendmuch" or args.tblextra:
        raise ServeError("give --table or --table-prefix/--tblextra, not both")
    if not args.table.endswith("_values") or args.table == "_values":
        raise ServeError(
            f"--table {args.table!r}: a table name ends in _values (e.g. appendmuch_values)"
        )
    return args.table[: -len("_values")], ""


def check_exposure(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token, and a short token."""
    if token is not None and len(token) < MIN_TOKEN:
        raise ServeError(
            f"the token is too short ({len(token)} characters; at least {MIN_TOKEN}): "
            "anyone who guesses it reads the whole log"
        )
    if token is None and not is_loopback(host):
        raise ServeError(
            f"--host {host} would let other machines read the log: give --token TOKEN "
            f"(or set ${TOKEN_ENV}), which every request must then carry, or listen on "
            "127.0.0.1 and put an authenticating reverse proxy in front"
        )


def run_serve(args: argparse.Namespace) -> int:
    """The ``serve`` command."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    check_exposure(args.host, token)
    if not 0 <= args.port <= 65535:
        raise ServeError(f"--port {args.port}: a port is a number from 0 to 65535")
    prefix, extra = _table(args)
    try:
        from .server import ServeOptions, serve
    except ImportError as exc:
        raise ImportError(
            "appendmuch serve needs the 'web' extra (Starlette, uvicorn, Jinja2): "
            f"pip install 'appendmuch[web]' ({exc})"
        ) from exc
    options = ServeOptions(args.db, prefix, extra, args.host, args.port, token)
    return serve(options)
