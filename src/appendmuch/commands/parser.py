"""The argument parser of the ``appendmuch`` command, one small function per
subcommand.  Package-internal (:func:`appendmuch.cli.build_parser` is the entry)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from .. import __version__
from .demo import cmd_demo
from .maintenance import cmd_replay, cmd_verify
from .reading import cmd_history, cmd_info, cmd_ls, cmd_show, cmd_within
from .transfer import cmd_dump, cmd_export, cmd_restore

__all__: list[str] = []

_DB_HELP = "SQLite database file, or a postgresql:// URL"
_EPILOG_TAIL = "\n\nexit status: 0 success, 1 a problem found, 2 usage or database error"
_READ_ONLY = " Opens the database read-only: it never creates or changes anything."

Command = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class _Subcommands:
    """Where the subcommands are added, and the option groups they share."""

    #: the ``add_parser`` of the top-level parser's subparsers
    add_parser: Callable[..., argparse.ArgumentParser]
    #: ``--table-prefix`` and ``--tblextra``
    table: argparse.ArgumentParser
    #: ``--json``
    as_json: argparse.ArgumentParser

    def add(
        self,
        name: str,
        func: Command,
        summary: str,
        description: str,
        example: str,
        *,
        table: bool = True,
        json: bool = False,
        db: bool = True,
    ) -> argparse.ArgumentParser:
        """Add subcommand ``name`` running ``func``, its help ending in ``example``, with
        the options ``table`` and ``json`` say and the DB argument first if ``db``."""
        parents = [self.table] if table else []
        if json:
            parents.append(self.as_json)
        sub = self.add_parser(
            name,
            help=summary,
            description=description,
            epilog="example:\n  " + example.replace("\n", "\n  ") + _EPILOG_TAIL,
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(func=func)
        if db:
            sub.add_argument("db", metavar="DB", help=_DB_HELP)
        return sub


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``appendmuch`` command (package-internal)."""
    parser = argparse.ArgumentParser(
        prog="appendmuch",
        description="Look into, query and move appendmuch logs (SQLite files or "
        "PostgreSQL tables) without writing code.",
        epilog="Run 'appendmuch COMMAND --help' for a command's options." + _EPILOG_TAIL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"appendmuch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    table = _table_options()
    subcommands = _Subcommands(commands.add_parser, table, _json_option())
    for add in (
        _add_demo,
        _add_info,
        _add_ls,
        _add_show,
        _add_history,
        _add_within,
        _add_export,
        _add_dump,
        _add_restore,
        _add_verify,
        _add_replay,
    ):
        add(subcommands)

    from ..web.command import add_serve_command  # the web view (its stack: the 'web' extra)

    add_serve_command(commands, [table], _EPILOG_TAIL)
    return parser


def _table_options() -> argparse.ArgumentParser:
    """The options that name the table, shared by every command that opens a log."""
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
    return table


def _json_option() -> argparse.ArgumentParser:
    """``--json``, shared by the commands that print tables."""
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return as_json


def _add_demo(subcommands: _Subcommands) -> None:
    demo = subcommands.add(
        "demo",
        cmd_demo,
        "write a small log to a new SQLite file and print its history and queries",
        "Write the quick-start log (a player, rounds, a mutable list, a deletion) into a "
        "new SQLite database, reopen it, and print its history and temporal queries.",
        "appendmuch demo --db /tmp/demo.sqlite3",
        table=False,
        db=False,
    )
    demo.add_argument(
        "--db",
        metavar="PATH",
        help="database file to create (must not exist; "
        "default: a new file in a temporary directory)",
    )


# --------------------------------------------------------------------------- reading


def _add_info(subcommands: _Subcommands) -> None:
    subcommands.add(
        "info",
        cmd_info,
        "rows, seq and time range, namespaces, fields, size of a log",
        "Summarise a log: rows, seq and time range, namespaces, fields, tombstones, "
        "size, custom type ids, table name." + _READ_ONLY,
        "appendmuch info experiment.sqlite3",
        json=True,
    )


def _add_ls(subcommands: _Subcommands) -> None:
    ls = subcommands.add(
        "ls",
        cmd_ls,
        "the namespace tree with field counts",
        "List the namespaces (as a tree) with the number of current fields, deleted "
        "fields and entries of each." + _READ_ONLY,
        "appendmuch ls experiment.sqlite3 session1",
        json=True,
    )
    ls.add_argument(
        "prefix", metavar="PREFIX", nargs="?", help="only this namespace and those below it"
    )


def _add_show(subcommands: _Subcommands) -> None:
    show = subcommands.add(
        "show",
        cmd_show,
        "the current fields and values of a namespace",
        "Show the current fields of a namespace with their values, seq, time and the "
        "code that wrote them." + _READ_ONLY,
        "appendmuch show experiment.sqlite3 session1/player1",
        json=True,
    )
    show.add_argument("namespace", metavar="NAMESPACE", help="tokens joined by /, e.g. game/p1")


def _add_history(subcommands: _Subcommands) -> None:
    hist = subcommands.add(
        "history",
        cmd_history,
        "every entry of a namespace or field, tombstones included",
        "Print the history of a namespace (or one field): seq, time, value and context "
        "of every entry, deletions marked <deleted>." + _READ_ONLY,
        "appendmuch history experiment.sqlite3 session1/player1 score",
        json=True,
    )
    hist.add_argument("namespace", metavar="NAMESPACE", help="tokens joined by /")
    hist.add_argument("field", metavar="FIELD", nargs="?", help="only this field")


def _add_within(subcommands: _Subcommands) -> None:
    wthn = subcommands.add(
        "within",
        cmd_within,
        "a temporal query: a field's value while a context held",
        "Print within(NAMESPACE, **where).FIELD: the value FIELD had at the end of the "
        "most recent stretch of the log during which every --where held (with --strict: "
        "only writes made during that stretch). A --where value is read as JSON when it "
        "is JSON (round=1 is the number 1, ok=true a boolean, name='\"1\"' the string "
        '"1"), else as text (stage=bid). Exit status 1 when there is no value.' + _READ_ONLY,
        "appendmuch within experiment.sqlite3 session1/player1 score --where round=1",
        json=True,
    )
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


# --------------------------------------------------------------------------- transfer


def _add_export(subcommands: _Subcommands) -> None:
    export = subcommands.add(
        "export",
        cmd_export,
        "write the log (or its latest values) as CSV or JSON Lines",
        "Export a log. --shape log: one row per entry (seq, time, namespace, field, value "
        "as JSON, unavailable, context). --shape latest: one row per namespace, one column "
        "per field, the current values. CSV is UTF-8 with a header row, readable by R and "
        "pandas as is." + _READ_ONLY,
        "appendmuch export experiment.sqlite3 --shape latest -o players.csv",
    )
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default: csv")
    export.add_argument("--shape", choices=["log", "latest"], default="log", help="default: log")
    export.add_argument(
        "--namespace", metavar="PREFIX", help="only this namespace and those below it"
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="file to write (default: standard output)"
    )


def _add_dump(subcommands: _Subcommands) -> None:
    dump = subcommands.add(
        "dump",
        cmd_dump,
        "write the whole log to a dump file (msgpack)",
        "Write every row, in seq order, to a dump file that 'appendmuch restore' (or "
        "driver.restore) reads into any backend." + _READ_ONLY,
        "appendmuch dump experiment.sqlite3 -o backup.msgpack",
    )
    dump.add_argument(
        "-o", "--output", metavar="FILE", required=True, help="dump file to write (- for stdout)"
    )


def _add_restore(subcommands: _Subcommands) -> None:
    restore = subcommands.add(
        "restore",
        cmd_restore,
        "append the rows of a dump file to a log (all or nothing)",
        "Append the rows of a dump to the table, keeping their seqs; creates the database "
        "and table when missing. All or nothing: a malformed dump, a seq already in the "
        "table or a value that does not decode restores no row (exit status 1). Values of "
        "custom types (type ids the default codec does not know) are accepted unless "
        "--strict.",
        "appendmuch restore copy.sqlite3 backup.msgpack",
    )
    restore.add_argument("file", metavar="FILE", help="dump file to read (- for stdin)")
    restore.add_argument(
        "--strict", action="store_true", help="also refuse values of unknown type ids"
    )


# --------------------------------------------------------------------------- maintenance


def _add_verify(subcommands: _Subcommands) -> None:
    verify = subcommands.add(
        "verify",
        cmd_verify,
        "check that every row decodes and seqs are unique",
        "Check every row: the value decodes, the seq is a unique positive integer, "
        "namespace and field are valid names, time and context have the right types, no "
        "name is both a field and a namespace. Prints the problems and exits with status 1 "
        "if there are any. Values of custom types (type ids the default codec does not "
        "know) are listed in a note, and count as problems only with --strict." + _READ_ONLY,
        "appendmuch verify experiment.sqlite3",
        json=True,
    )
    verify.add_argument(
        "--strict", action="store_true", help="count values of unknown type ids as problems"
    )


def _add_replay(subcommands: _Subcommands) -> None:
    replay = subcommands.add(
        "replay",
        cmd_replay,
        "write a recovery file's rows into a log",
        "Write the rows of a recovery file (saved by a driver's close() when it could not "
        "write its queue) into the table they belong to, under new seqs after the last "
        "stored one (keeping their times and contexts). Rows already there are skipped, "
        "so replaying twice changes nothing. A file of another database is refused.",
        "appendmuch replay experiment.sqlite3-appendmuch_values.recovery-20240501T100000-123"
        ".msgpack experiment.sqlite3",
        db=False,
    )
    replay.add_argument("file", metavar="FILE", help="the recovery file")
    replay.add_argument("db", metavar="DB", help=_DB_HELP)
    replay.add_argument(
        "--any-database",
        action="store_true",
        help="write the rows even if the file names another database (e.g. a copy of it)",
    )
