"""The ``appendmuch`` command (also ``python -m appendmuch``): argument parsing and output.

What the commands compute lives in :mod:`appendmuch.inspection` and
:mod:`appendmuch.export`; this module parses arguments, opens the log, and formats
tables for people or JSON (``--json``) for programs.

Exit status: 0 success; 1 a problem found in the data (``verify`` found problems,
``within`` has no value, a dump or recovery file was refused); 2 the command could
not run (usage error, missing file, wrong table, unreachable server, locked
database), with a one-line ``appendmuch: error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import orjson

from . import __version__
from .drivers.base import DBDriver
from .errors import AppendmuchError, DecodeError, DumpFormatError, RecoveryMismatchError
from .inspection import (
    Entry,
    NamespaceEntry,
    Target,
    VerifyReport,
    history,
    log_info,
    namespace_state,
    namespace_tree,
    one_line,
    open_log,
    parse_namespace,
    verify_log,
    within_value,
)
from .names import is_valid_field
from .progress import Progress
from .rendering import iso_time, json_value, value_text

__all__ = ["build_parser", "main"]

#: values longer than this are shortened in tables (``--json`` shows them in full)
_CELL = 100


class CommandError(Exception):
    """A one-line error for the user, with the exit status to use."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- output


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def _value_json(value: Any) -> orjson.Fragment:
    return orjson.Fragment(json_value(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> None:
    """Print rows as aligned columns (``right``: indexes of right-aligned columns)."""
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

    _out(line(headers))
    for row in rows:
        _out(line(row))


def _count(number: int, noun: str) -> str:
    """``1 row``, ``2 rows``."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _human_time(created_at: float | None) -> str:
    return iso_time(created_at, timespec="milliseconds") or "-"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    amount = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            shown = f"{size:,} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
            return shown if unit == "bytes" else f"{shown} ({size:,} bytes)"
        amount /= 1024
    return f"{size:,} bytes"  # pragma: no cover


def _progress(label: str, driver: DBDriver) -> Progress:
    return Progress(label, driver.last_seq or None)


# --------------------------------------------------------------------------- opening


def _target(args: argparse.Namespace) -> Target:
    return Target(args.db, args.table_prefix, args.tblextra)


@contextlib.contextmanager
def _opened(args: argparse.Namespace, *, read_only: bool = True) -> Iterator[DBDriver]:
    driver = open_log(_target(args), read_only=read_only)
    try:
        yield driver
    finally:
        driver.close()


@contextlib.contextmanager
def _output_file(path: str, *, binary: bool) -> Iterator[IO[Any]]:
    """Write to ``path`` through a temporary file renamed into place on success
    (a failed command leaves no half-written file); ``-`` is stdout."""
    if path == "-":
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


def _refuse_overwriting_db(args: argparse.Namespace, path: str) -> None:
    target = _target(args)
    if path != "-" and not target.is_postgres and os.path.exists(path):
        with contextlib.suppress(OSError):
            if os.path.samefile(path, target.db):
                raise CommandError(f"the output file {path!r} is the database itself")


# --------------------------------------------------------------------------- commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        run_demo(args.db)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    target = _target(args)
    with _opened(args) as driver, _progress("info", driver) as bar:
        info = log_info(driver, target, bar.update)
    custom = {str(k): v for k, v in info.custom_types.items()}
    if args.json:
        _json(
            {
                "database": info.database,
                "backend": info.backend,
                "table": info.table,
                "rows": info.rows,
                "first_seq": info.first_seq,
                "last_seq": info.last_seq,
                "first_time": iso_time(info.first_time),
                "last_time": iso_time(info.last_time),
                "namespaces": info.namespaces,
                "fields": info.fields,
                "current_fields": info.current_fields,
                "deleted_fields": info.deleted_fields,
                "tombstones": info.tombstones,
                "size": info.size,
                "custom_types": custom,
                "writer_open": info.writer_open,
                "writer_mode": info.writer_mode,
                "writers": info.writers,
            }
        )
        return 0
    seqs = "-" if info.first_seq is None else f"{info.first_seq} .. {info.last_seq}"
    times = (
        "-"
        if info.first_time is None
        else f"{_human_time(info.first_time)} .. {_human_time(info.last_time)}"
    )
    lines = [
        ("database", f"{info.database} ({info.backend})"),
        ("table", info.table),
        ("rows", f"{info.rows:,}"),
        ("seq", seqs),
        ("time (UTC)", times),
        ("namespaces", f"{info.namespaces:,}"),
        (
            "fields",
            f"{info.fields:,} ({info.current_fields:,} current, {info.deleted_fields:,} deleted)",
        ),
        ("tombstones", f"{info.tombstones:,}"),
        ("size", _size(info.size)),
    ]
    if custom:
        listed = ", ".join(f"type {k}: {_count(v, 'value')}" for k, v in custom.items())
        lines.append(("custom types", listed))
    if info.writer_mode == "shared":
        count = "an unknown number of" if info.writers is None else f"{info.writers}"
        lines.append(("writer", f"shared ({count} writers attached in shared mode)"))
    elif info.writer_mode == "single":
        lines.append(("writer", "open (a single-writer Store has the table open for writing)"))
    elif info.writer_mode == "none":
        lines.append(("writer", "none"))
    width = max(len(key) for key, _ in lines)
    for key, text in lines:
        _out(f"{key:<{width}}  {text}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    prefix = None if args.prefix is None else parse_namespace(args.prefix)
    with _opened(args) as driver:
        tree = namespace_tree(driver, prefix)
    if args.json:
        _json(
            [
                {
                    "namespace": node.namespace,
                    "fields": node.fields,
                    "deleted": node.deleted,
                    "entries": node.entries,
                }
                for node in tree
            ]
        )
        return 0
    base = 0 if prefix is None else prefix.count("/")

    def label(node: NamespaceEntry) -> str:
        if node.depth == base:
            return node.namespace
        return "  " * (node.depth - base) + node.name

    _table(
        ["namespace", "fields", "deleted", "entries"],
        [[label(node), str(node.fields), str(node.deleted), str(node.entries)] for node in tree],
        right={1, 2, 3},
    )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    namespace = parse_namespace(args.namespace)
    with _opened(args) as driver:
        state = namespace_state(driver, namespace)
    if args.json:
        _json(
            {
                "namespace": state.namespace,
                "fields": {
                    f.field: {
                        "value": _value_json(f.value),
                        "type_id": f.type_id,
                        "seq": f.seq,
                        "time": iso_time(f.time),
                        "context": f.context,
                    }
                    for f in state.fields
                },
                "deleted": state.deleted,
                "children": state.children,
            }
        )
        return 0
    notes = [_count(len(state.fields), "field")]
    if state.deleted:
        notes.append(f"deleted: {', '.join(state.deleted)}")
    if state.children:
        notes.append(f"below: {', '.join(state.children)}")
    _out(f"{state.namespace}  ({'; '.join(notes)})")
    if state.fields:
        _table(
            ["field", "value", "seq", "time (UTC)", "context"],
            [
                [
                    f.field,
                    value_text(f.value, limit=_CELL),
                    str(f.seq),
                    _human_time(f.time),
                    f.context,
                ]
                for f in state.fields
            ],
            right={2},
        )
    return 0


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "time": iso_time(entry.time),
        "field": entry.field,
        "value": _value_json(entry.value),
        "unavailable": entry.unavailable,
        "type_id": entry.type_id,
        "context": entry.context,
    }


def _cmd_history(args: argparse.Namespace) -> int:
    namespace = parse_namespace(args.namespace)
    with _opened(args) as driver:
        entries = history(driver, namespace, args.field)
    if args.json:
        _json({"namespace": namespace, "entries": [_entry_json(e) for e in entries]})
        return 0
    one_field = args.field is not None
    headers = ["seq", "time (UTC)", *([] if one_field else ["field"]), "value", "context"]
    rows = []
    for e in entries:
        shown = "<deleted>" if e.unavailable else value_text(e.value, limit=_CELL)
        rows.append(
            [str(e.seq), _human_time(e.time), *([] if one_field else [e.field]), shown, e.context]
        )
    _table(headers, rows, right={0})
    return 0


def _parse_where(items: Sequence[str]) -> dict[str, Any]:
    where: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not is_valid_field(name):
            raise CommandError(
                f"--where {item!r}: expected FIELD=VALUE with FIELD a field name (e.g. round=1)"
            )
        try:
            value: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = text  # not JSON: the text itself
        where[name] = value
    return where


def _cmd_within(args: argparse.Namespace) -> int:
    namespace = parse_namespace(args.namespace)
    where = _parse_where(args.where)
    with _opened(args) as driver:
        found, value = within_value(driver, namespace, args.field, where, strict=args.strict)
    if args.json:
        _json(
            {
                "namespace": namespace,
                "field": args.field,
                "where": where,
                "strict": args.strict,
                "found": found,
                "value": _value_json(value) if found else None,
            }
        )
    elif found:
        _out(value_text(value))
    if not found:
        context = ", ".join([namespace, *(f"{k}={v!r}" for k, v in where.items())])
        kind = "within.strict" if args.strict else "within"
        print(f"appendmuch: {kind}({context}).{args.field} has no value", file=sys.stderr)
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import write_export

    output = args.output or "-"
    _refuse_overwriting_db(args, output)
    with (
        _opened(args) as driver,
        _output_file(output, binary=False) as out,
        _progress("export", driver) as bar,
    ):
        count = write_export(
            driver,
            out,
            format=args.format,
            shape=args.shape,
            namespace=args.namespace,
            progress=bar.update,
        )
    if output != "-":
        _out(f"exported {_count(count, 'row')} to {output}")
    return 0


def _cmd_dump(args: argparse.Namespace) -> int:
    from .dumpfile import pack_rows
    from .inspection import stream_rows

    _refuse_overwriting_db(args, args.output)
    count = 0
    with (
        _opened(args) as driver,
        _output_file(args.output, binary=True) as out,
        _progress("dump", driver) as bar,
    ):
        for chunk in pack_rows(stream_rows(driver, bar.update)):
            out.write(chunk)
            count += 1
    if args.output != "-":
        _out(f"dumped {_count(count, 'row')} to {args.output}")
    return 0


class _CountingReader:
    """A binary file that tells a progress bar how many bytes were read."""

    def __init__(self, fh: IO[bytes], bar: Progress) -> None:
        self._fh = fh
        self._bar = bar
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._done += len(chunk)
        self._bar.update(self._done)
        return chunk


def _cmd_restore(args: argparse.Namespace) -> int:
    from .codec import Codec
    from .dumpfile import read_dump

    class _Check(Codec):
        """Refuses values that do not decode; unknown type ids only with --strict."""

        def decode(self, data: bytes | bytearray | memoryview) -> Any:
            try:
                return super().decode(data)
            except DecodeError:
                if args.strict or (data and self.knows(data[0])) or not data:
                    raise
                return None

    path = args.file
    if path != "-" and not os.path.isfile(path):
        raise CommandError(f"no such file: {path!r}")
    target = _target(args)
    if path != "-" and not target.is_postgres and not os.path.exists(target.db):
        # check the dump before creating a database for it (a bad dump creates nothing)
        with open(path, "rb") as dump:
            read_dump(dump, codec=_Check())
    with contextlib.ExitStack() as stack:
        if path == "-":
            fh: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            fh = stack.enter_context(open(path, "rb"))
            total = os.fstat(fh.fileno()).st_size
        driver = stack.enter_context(_opened(args, read_only=False))
        bar = stack.enter_context(Progress("restore", total, unit="bytes"))
        count = driver.restore(_CountingReader(fh, bar), codec=_Check())
    _out(f"restored {_count(count, 'row')} into table {target.table} of {target.display}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    with _opened(args) as driver, _progress("verify", driver) as bar:
        report = verify_log(driver, strict=args.strict, progress=bar.update)
    if args.json:
        _json(_report_json(report))
        return 0 if report.ok else 1
    for p in report.problems:
        where = "log" if p.seq is None else f"seq {p.seq}"
        if p.namespace is not None:
            where += f" {p.namespace}"
        if p.field is not None:
            where += f" {p.field}"
        _out(f"{where}: {p.message}")
    if report.more_problems:
        _out(f"... and {_count(report.more_problems, 'more problem')} (not listed)")
    seqs = "" if report.first_seq is None else f", seq {report.first_seq}..{report.last_seq}"
    if report.unknown_types and not args.strict:
        listed = ", ".join(f"type {k}: {v:,}" for k, v in report.unknown_types.items())
        _out(
            f"note: values of custom types ({listed}) were not decoded: the default codec "
            "does not know them (use --strict to count them as problems)"
        )
    if report.ok:
        _out(f"ok: {_count(report.rows, 'row')}{seqs}, every row decodes, seqs are unique")
        return 0
    _out(f"{_count(report.problem_count, 'problem')} in {_count(report.rows, 'row')}{seqs}")
    return 1


def _report_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "rows": report.rows,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "problem_count": report.problem_count,
        "problems": [
            {"seq": p.seq, "namespace": p.namespace, "field": p.field, "message": p.message}
            for p in report.problems
        ],
        "unknown_types": {str(k): v for k, v in report.unknown_types.items()},
        "strict": report.strict,
    }


def _cmd_replay(args: argparse.Namespace) -> int:
    from .recovery import read_recovery, replay

    if not os.path.isfile(args.file):
        raise CommandError(f"no such file: {args.file!r}")
    saved = read_recovery(args.file)
    target = _target(args)
    if not target.is_postgres and not os.path.exists(target.db) and not args.any_database:
        raise CommandError(
            f"no such database: {target.db!r} (the rows belong to the database they were "
            "saved from; --any-database writes them into a new one)"
        )
    driver = open_log(target, read_only=False, replaying=True)
    try:
        written = replay(args.file, driver, any_database=args.any_database)
    finally:
        driver.close()
    skipped = len(saved.entries) - written
    note = f" ({_count(skipped, 'row')} already there, skipped)" if skipped else ""
    _out(
        f"replayed {_count(written, 'row')} into table {target.table} of {target.display}"
        f"{note}; they got new seqs after the last stored one"
    )
    return 0


# --------------------------------------------------------------------------- parser

_DB_HELP = "SQLite database file, or a postgresql:// URL"
_EPILOG_TAIL = "\n\nexit status: 0 success, 1 a problem found, 2 usage or database error"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``appendmuch`` command."""
    parser = argparse.ArgumentParser(
        prog="appendmuch",
        description="Look into, query and move appendmuch logs (SQLite files or "
        "PostgreSQL tables) without writing code.",
        epilog="Run 'appendmuch COMMAND --help' for a command's options." + _EPILOG_TAIL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"appendmuch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    table = argparse.ArgumentParser(add_help=False)
    group = table.add_argument_group("table")
    group.add_argument(
        "--table-prefix",
        default="appendmuch",
        metavar="PREFIX",
        help="first part of the table name (default: appendmuch)",
    )
    group.add_argument(
        "--tblextra",
        default="",
        metavar="EXTRA",
        help="second part of the table name; the table is {PREFIX}{EXTRA}_values",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        summary: str,
        description: str,
        example: str,
        parents: Sequence[argparse.ArgumentParser] = (),
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog="example:\n  " + example.replace("\n", "\n  ") + _EPILOG_TAIL,
            parents=list(parents),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(func=func)
        return sub

    demo = command(
        "demo",
        _cmd_demo,
        "write a small log to a new SQLite file and print its history and queries",
        "Write the quick-start log (a player, rounds, a mutable list, a deletion) into a "
        "new SQLite database, reopen it, and print its history and temporal queries.",
        "appendmuch demo --db /tmp/demo.sqlite3",
    )
    demo.add_argument(
        "--db",
        metavar="PATH",
        help="database file to create (must not exist; "
        "default: a new file in a temporary directory)",
    )

    read_only_note = " Opens the database read-only: it never creates or changes anything."
    info = command(
        "info",
        _cmd_info,
        "rows, seq and time range, namespaces, fields, size of a log",
        "Summarise a log: rows, seq and time range, namespaces, fields, tombstones, "
        "size, custom type ids, table name." + read_only_note,
        "appendmuch info experiment.sqlite3",
        [table, as_json],
    )
    info.add_argument("db", metavar="DB", help=_DB_HELP)

    ls = command(
        "ls",
        _cmd_ls,
        "the namespace tree with field counts",
        "List the namespaces (as a tree) with the number of current fields, deleted "
        "fields and entries of each." + read_only_note,
        "appendmuch ls experiment.sqlite3 session1",
        [table, as_json],
    )
    ls.add_argument("db", metavar="DB", help=_DB_HELP)
    ls.add_argument(
        "prefix", metavar="PREFIX", nargs="?", help="only this namespace and those below it"
    )

    show = command(
        "show",
        _cmd_show,
        "the current fields and values of a namespace",
        "Show the current fields of a namespace with their values, seq, time and the "
        "code that wrote them." + read_only_note,
        "appendmuch show experiment.sqlite3 session1/player1",
        [table, as_json],
    )
    show.add_argument("db", metavar="DB", help=_DB_HELP)
    show.add_argument("namespace", metavar="NAMESPACE", help="tokens joined by /, e.g. game/p1")

    hist = command(
        "history",
        _cmd_history,
        "every entry of a namespace or field, tombstones included",
        "Print the history of a namespace (or one field): seq, time, value and context "
        "of every entry, deletions marked <deleted>." + read_only_note,
        "appendmuch history experiment.sqlite3 session1/player1 score",
        [table, as_json],
    )
    hist.add_argument("db", metavar="DB", help=_DB_HELP)
    hist.add_argument("namespace", metavar="NAMESPACE", help="tokens joined by /")
    hist.add_argument("field", metavar="FIELD", nargs="?", help="only this field")

    wthn = command(
        "within",
        _cmd_within,
        "a temporal query: a field's value while a context held",
        "Print within(NAMESPACE, **where).FIELD: the value FIELD had at the end of the "
        "most recent stretch of the log during which every --where held (with --strict: "
        "only writes made during that stretch). A --where value is read as JSON when it "
        "is JSON (round=1 is the number 1, ok=true a boolean, name='\"1\"' the string "
        '"1"), else as text (stage=bid). Exit status 1 when there is no value.' + read_only_note,
        "appendmuch within experiment.sqlite3 session1/player1 score --where round=1",
        [table, as_json],
    )
    wthn.add_argument("db", metavar="DB", help=_DB_HELP)
    wthn.add_argument("namespace", metavar="NAMESPACE", help="tokens joined by /")
    wthn.add_argument("field", metavar="FIELD", help="the field to read")
    wthn.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a context condition (repeat for several)",
    )
    wthn.add_argument(
        "--strict", action="store_true", help="only count writes made while the context held"
    )

    export = command(
        "export",
        _cmd_export,
        "write the log (or its latest values) as CSV or JSON Lines",
        "Export a log. --shape log: one row per entry (seq, time, namespace, field, value "
        "as JSON, unavailable, context). --shape latest: one row per namespace, one column "
        "per field, the current values. CSV is UTF-8 with a header row, readable by R and "
        "pandas as is." + read_only_note,
        "appendmuch export experiment.sqlite3 --shape latest -o players.csv",
        [table],
    )
    export.add_argument("db", metavar="DB", help=_DB_HELP)
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default: csv")
    export.add_argument("--shape", choices=["log", "latest"], default="log", help="default: log")
    export.add_argument(
        "--namespace", metavar="PREFIX", help="only this namespace and those below it"
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="file to write (default: standard output)"
    )

    dump = command(
        "dump",
        _cmd_dump,
        "write the whole log to a dump file (msgpack)",
        "Write every row, in seq order, to a dump file that 'appendmuch restore' (or "
        "driver.restore) reads into any backend." + read_only_note,
        "appendmuch dump experiment.sqlite3 -o backup.msgpack",
        [table],
    )
    dump.add_argument("db", metavar="DB", help=_DB_HELP)
    dump.add_argument(
        "-o", "--output", metavar="FILE", required=True, help="dump file to write (- for stdout)"
    )

    restore = command(
        "restore",
        _cmd_restore,
        "append the rows of a dump file to a log (all or nothing)",
        "Append the rows of a dump to the table, keeping their seqs; creates the database "
        "and table when missing. All or nothing: a malformed dump, a seq already in the "
        "table or a value that does not decode restores no row (exit status 1). Values of "
        "custom types (type ids the default codec does not know) are accepted unless "
        "--strict.",
        "appendmuch restore copy.sqlite3 backup.msgpack",
        [table],
    )
    restore.add_argument("db", metavar="DB", help=_DB_HELP)
    restore.add_argument("file", metavar="FILE", help="dump file to read (- for stdin)")
    restore.add_argument(
        "--strict", action="store_true", help="also refuse values of unknown type ids"
    )

    verify = command(
        "verify",
        _cmd_verify,
        "check that every row decodes and seqs are unique",
        "Check every row: the value decodes, the seq is a unique positive integer, "
        "namespace and field are valid names, time and context have the right types, no "
        "name is both a field and a namespace. Prints the problems and exits with status 1 "
        "if there are any. Values of custom types (type ids the default codec does not "
        "know) are listed in a note, and count as problems only with --strict." + read_only_note,
        "appendmuch verify experiment.sqlite3",
        [table, as_json],
    )
    verify.add_argument("db", metavar="DB", help=_DB_HELP)
    verify.add_argument(
        "--strict", action="store_true", help="count values of unknown type ids as problems"
    )

    replay = command(
        "replay",
        _cmd_replay,
        "write a recovery file's rows into a log",
        "Write the rows of a recovery file (saved by a driver's close() when it could not "
        "write its queue) into the table they belong to, under new seqs after the last "
        "stored one (keeping their times and contexts). Rows already there are skipped, "
        "so replaying twice changes nothing. A file of another database is refused.",
        "appendmuch replay experiment.sqlite3-appendmuch_values.recovery-20240501T100000-123"
        ".msgpack experiment.sqlite3",
        [table],
    )
    replay.add_argument("file", metavar="FILE", help="the recovery file")
    replay.add_argument("db", metavar="DB", help=_DB_HELP)
    replay.add_argument(
        "--any-database",
        action="store_true",
        help="write the rows even if the file names another database (e.g. a copy of it)",
    )

    from .web.command import add_serve_command  # the web view (its stack: the 'web' extra)

    add_serve_command(commands, [table], _EPILOG_TAIL)
    return parser


# --------------------------------------------------------------------------- main


def _error(message: str) -> None:
    print(f"appendmuch: error: {message}", file=sys.stderr)


def _is_database_library_error(exc: BaseException) -> bool:
    root = type(exc).__module__.split(".", 1)[0]
    return root in ("psycopg", "psycopg_pool") or isinstance(exc, sqlite3.Error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # psycopg_pool logs warnings (e.g. while a failed open closes its pool) that would
    # reach stderr through logging's last-resort handler: errors are reported here.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except CommandError as exc:
        _error(str(exc))
        return exc.status
    except (DumpFormatError, RecoveryMismatchError) as exc:
        _error(one_line(exc))
        return 1
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (AppendmuchError, OSError, ImportError) as exc:
        _error(one_line(exc))
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:
        if _is_database_library_error(exc):
            _error(one_line(exc))
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
