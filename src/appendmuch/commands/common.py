"""What the subcommands share: the user error, opening the log, output files, and
printing tables and JSON.  Package-internal."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

import orjson

from ..drivers.base import DBDriver
from ..inspection import Target, open_log
from ..progress import Progress
from ..rendering import iso_time, json_value

__all__: list[str] = []

#: values longer than this are shortened in tables (``--json`` shows them in full)
CELL = 100


class CommandError(Exception):
    """A one-line error for the user, with the exit status to use (package-internal)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- output


def out(line: str = "") -> None:
    """Print one line to stdout (package-internal)."""
    sys.stdout.write(line + "\n")


def print_json(document: Any) -> None:
    """Print ``document`` as indented JSON (package-internal)."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def value_json(value: Any) -> orjson.Fragment:
    """A stored value as a JSON fragment for ``--json`` output (package-internal)."""
    return orjson.Fragment(json_value(value))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> None:
    """Print rows as aligned columns (``right``: indexes of right-aligned columns).

    Package-internal.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out(line(headers))
    for row in rows:
        out(line(row))


def plural(number: int, noun: str) -> str:
    """``1 row``, ``2 rows`` (package-internal)."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def human_time(created_at: float | None) -> str:
    """A time for tables: ISO in UTC to the millisecond, ``-`` if none (package-internal)."""
    return iso_time(created_at, timespec="milliseconds") or "-"


def size_text(size: int | None) -> str:
    """A size in bytes for people (``1.5 MiB (1,572,864 bytes)``) (package-internal)."""
    if size is None:
        return "-"
    amount = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            shown = f"{size:,} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
            return shown if unit == "bytes" else f"{shown} ({size:,} bytes)"
        amount /= 1024
    return f"{size:,} bytes"  # pragma: no cover


def progress_bar(label: str, driver: DBDriver) -> Progress:
    """A progress bar over the rows of the log ``driver`` reads (package-internal)."""
    return Progress(label, driver.last_seq or None)


# --------------------------------------------------------------------------- opening


def target_of(args: argparse.Namespace) -> Target:
    """The log the arguments name: database and table (package-internal)."""
    return Target(args.db, args.table_prefix, args.tblextra)


@contextlib.contextmanager
def opened(args: argparse.Namespace, *, read_only: bool = True) -> Iterator[DBDriver]:
    """The log the arguments name, open for the command, closed after (package-internal)."""
    driver = open_log(target_of(args), read_only=read_only)
    try:
        yield driver
    finally:
        driver.close()


@contextlib.contextmanager
def output_file(path: str, *, binary: bool) -> Iterator[IO[Any]]:
    """Write to ``path`` through a temporary file renamed into place on success
    (a failed command leaves no half-written file); ``-`` is stdout.  Package-internal."""
    if path == "-":
        with _stdout(binary=binary) as stdout:
            yield stdout
        return
    partial = f"{path}.partial-{os.getpid()}"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise CommandError(f"cannot write {path!r}: {exc.strerror}") from exc
    fh: IO[Any] = (
        os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
    )
    try:
        with fh:
            yield fh
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


@contextlib.contextmanager
def _stdout(*, binary: bool) -> Iterator[IO[Any]]:
    """Standard output as a binary or UTF-8 text file; binary never to a terminal."""
    if binary:
        if sys.stdout.isatty():
            raise CommandError("not writing a binary dump to a terminal: use -o FILE")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    wrapper = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield wrapper
        wrapper.flush()
    finally:
        wrapper.detach()


def refuse_overwriting_db(args: argparse.Namespace, path: str) -> None:
    """Refuse an output file that is the SQLite database being read (package-internal)."""
    target = target_of(args)
    if path != "-" and not target.is_postgres and os.path.exists(path):
        with contextlib.suppress(OSError):
            if os.path.samefile(path, target.db):
                raise CommandError(f"the output file {path!r} is the database itself")
