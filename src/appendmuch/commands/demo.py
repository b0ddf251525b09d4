"""The ``demo`` command: the quick-start log written to a new SQLite file.
Package-internal."""

from __future__ import annotations

import argparse

from .common import CommandError

__all__: list[str] = []


def cmd_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command (package-internal)."""
    from ..demo import run_demo

    try:
        run_demo(args.db)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc
    return 0
