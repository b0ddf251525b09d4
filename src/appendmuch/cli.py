"""The ``appendmuch`` command (also ``python -m appendmuch``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        run_demo(args.db)
    except FileExistsError as exc:
        print(f"appendmuch demo: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appendmuch",
        description="Look into, query and move appendmuch logs.",
    )
    parser.add_argument("--version", action="version", version=f"appendmuch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="write a small log to a new SQLite file and print its history and queries",
        description="Write the quick-start log (a player, rounds, a mutable list, a deletion) "
        "into a new SQLite database, reopen it, and print its history and temporal queries.",
        epilog="example: appendmuch demo --db /tmp/demo.sqlite3",
    )
    demo.add_argument(
        "--db",
        metavar="PATH",
        help="database file to create (must not exist; "
        "default: a new file in a temporary directory)",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
