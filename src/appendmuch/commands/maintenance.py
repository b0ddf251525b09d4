"""The commands that check and repair a log: ``verify`` (every row decodes, seqs are
unique) and ``replay`` (a recovery file's rows written back).  Package-internal."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..inspection import VerifyReport, open_log, verify_log
from .common import CommandError, opened, out, plural, print_json, progress_bar, target_of

__all__: list[str] = []


def cmd_verify(args: argparse.Namespace) -> int:
    """The ``verify`` command (package-internal)."""
    with opened(args) as driver, progress_bar("verify", driver) as bar:
        report = verify_log(driver, strict=args.strict, progress=bar.update)
    if args.json:
        print_json(_report_json(report))
        return 0 if report.ok else 1
    for p in report.problems:
        where = "log" if p.seq is None else f"seq {p.seq}"
        if p.namespace is not None:
            where += f" {p.namespace}"
        if p.field is not None:
            where += f" {p.field}"
        out(f"{where}: {p.message}")
    if report.more_problems:
        out(f"... and {plural(report.more_problems, 'more problem')} (not listed)")
    seqs = "" if report.first_seq is None else f", seq {report.first_seq}..{report.last_seq}"
    if report.unknown_types and not args.strict:
        listed = ", ".join(f"type {k}: {v:,}" for k, v in report.unknown_types.items())
        out(
            f"note: values of custom types ({listed}) were not decoded: the default codec "
            "does not know them (use --strict to count them as problems)"
        )
    if report.ok:
        out(f"ok: {plural(report.rows, 'row')}{seqs}, every row decodes, seqs are unique")
        return 0
    out(f"{plural(report.problem_count, 'problem')} in {plural(report.rows, 'row')}{seqs}")
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


def cmd_replay(args: argparse.Namespace) -> int:
    """The ``replay`` command (package-internal)."""
    from ..recovery import read_recovery, replay

    if not os.path.isfile(args.file):
        raise CommandError(f"no such file: {args.file!r}")
    saved = read_recovery(args.file)
    target = target_of(args)
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
    note = f" ({plural(skipped, 'row')} already there, skipped)" if skipped else ""
    out(
        f"replayed {plural(written, 'row')} into table {target.table} of {target.display}"
        f"{note}; they got new seqs after the last stored one"
    )
    return 0
