"""The ``appendmuch`` command (also ``python -m appendmuch``): runs a subcommand and
turns failures into exit statuses.

What the commands compute lives in :mod:`appendmuch.inspection` and
:mod:`appendmuch.export`; the argument parser and the subcommands, which open the
log and format tables for people or JSON (``--json``) for programs, live in
:mod:`appendmuch.commands`.

Exit status: 0 success; 1 a problem found in the data (``verify`` found problems,
``within`` has no value, a dump or recovery file was refused); 2 the command could
not run (usage error, missing file, wrong table, unreachable server, locked
database), with a one-line ``appendmuch: error: ...`` on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from .commands.common import CommandError
from .commands.parser import build_parser
from .errors import AppendmuchError, DumpFormatError, RecoveryMismatchError, one_line

__all__ = ["build_parser", "main"]


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
