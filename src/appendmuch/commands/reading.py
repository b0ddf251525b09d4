"""The commands that read a log and print what they find: ``info``, ``ls``, ``show``,
``history`` and ``within``.  Package-internal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from ..inspection import (
    Entry,
    LogInfo,
    NamespaceEntry,
    history,
    log_info,
    namespace_state,
    namespace_tree,
    parse_namespace,
    within_value,
)
from ..names import is_valid_field
from ..rendering import iso_time, value_text
from .common import (
    CELL,
    CommandError,
    human_time,
    opened,
    out,
    plural,
    print_json,
    print_table,
    progress_bar,
    size_text,
    target_of,
    value_json,
)

__all__: list[str] = []


# --------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    """The ``info`` command (package-internal)."""
    target = target_of(args)
    with opened(args) as driver, progress_bar("info", driver) as bar:
        info = log_info(driver, target, bar.update)
    custom = {str(k): v for k, v in info.custom_types.items()}
    if args.json:
        print_json(_info_json(info, custom))
        return 0
    lines = _info_lines(info, custom)
    width = max(len(key) for key, _ in lines)
    for key, text in lines:
        out(f"{key:<{width}}  {text}")
    return 0


def _info_json(info: LogInfo, custom: dict[str, int]) -> dict[str, Any]:
    return {
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


def _info_lines(info: LogInfo, custom: dict[str, int]) -> list[tuple[str, str]]:
    """The ``key  text`` lines of the ``info`` table."""
    seqs = "-" if info.first_seq is None else f"{info.first_seq} .. {info.last_seq}"
    times = (
        "-"
        if info.first_time is None
        else f"{human_time(info.first_time)} .. {human_time(info.last_time)}"
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
        ("size", size_text(info.size)),
    ]
    if custom:
        listed = ", ".join(f"type {k}: {plural(v, 'value')}" for k, v in custom.items())
        lines.append(("custom types", listed))
    if info.writer_mode == "shared":
        count = "an unknown number of" if info.writers is None else f"{info.writers}"
        lines.append(("writer", f"shared ({count} writers attached in shared mode)"))
    elif info.writer_mode == "single":
        lines.append(("writer", "open (a single-writer Store has the table open for writing)"))
    elif info.writer_mode == "none":
        lines.append(("writer", "none"))
    return lines


# --------------------------------------------------------------------------- namespaces


def cmd_ls(args: argparse.Namespace) -> int:
    """The ``ls`` command (package-internal)."""
    prefix = None if args.prefix is None else parse_namespace(args.prefix)
    with opened(args) as driver:
        tree = namespace_tree(driver, prefix)
    if args.json:
        print_json(
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

    print_table(
        ["namespace", "fields", "deleted", "entries"],
        [[label(node), str(node.fields), str(node.deleted), str(node.entries)] for node in tree],
        right={1, 2, 3},
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The ``show`` command (package-internal)."""
    namespace = parse_namespace(args.namespace)
    with opened(args) as driver:
        state = namespace_state(driver, namespace)
    if args.json:
        print_json(
            {
                "namespace": state.namespace,
                "fields": {
                    f.field: {
                        "value": value_json(f.value),
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
    notes = [plural(len(state.fields), "field")]
    if state.deleted:
        notes.append(f"deleted: {', '.join(state.deleted)}")
    if state.children:
        notes.append(f"below: {', '.join(state.children)}")
    out(f"{state.namespace}  ({'; '.join(notes)})")
    if state.fields:
        print_table(
            ["field", "value", "seq", "time (UTC)", "context"],
            [
                [
                    f.field,
                    value_text(f.value, limit=CELL),
                    str(f.seq),
                    human_time(f.time),
                    f.context,
                ]
                for f in state.fields
            ],
            right={2},
        )
    return 0


# --------------------------------------------------------------------------- history


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "time": iso_time(entry.time),
        "field": entry.field,
        "value": value_json(entry.value),
        "unavailable": entry.unavailable,
        "type_id": entry.type_id,
        "context": entry.context,
    }


def cmd_history(args: argparse.Namespace) -> int:
    """The ``history`` command (package-internal)."""
    namespace = parse_namespace(args.namespace)
    with opened(args) as driver:
        entries = history(driver, namespace, args.field)
    if args.json:
        print_json({"namespace": namespace, "entries": [_entry_json(e) for e in entries]})
        return 0
    one_field = args.field is not None
    headers = ["seq", "time (UTC)", *([] if one_field else ["field"]), "value", "context"]
    rows = []
    for e in entries:
        shown = "<deleted>" if e.unavailable else value_text(e.value, limit=CELL)
        rows.append(
            [str(e.seq), human_time(e.time), *([] if one_field else [e.field]), shown, e.context]
        )
    print_table(headers, rows, right={0})
    return 0


# --------------------------------------------------------------------------- within


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


def cmd_within(args: argparse.Namespace) -> int:
    """The ``within`` command (package-internal)."""
    namespace = parse_namespace(args.namespace)
    where = _parse_where(args.where)
    with opened(args) as driver:
        found, value = within_value(driver, namespace, args.field, where, strict=args.strict)
    if args.json:
        print_json(
            {
                "namespace": namespace,
                "field": args.field,
                "where": where,
                "strict": args.strict,
                "found": found,
                "value": value_json(value) if found else None,
            }
        )
    elif found:
        out(value_text(value))
    if not found:
        context = ", ".join([namespace, *(f"{k}={v!r}" for k, v in where.items())])
        kind = "within.strict" if args.strict else "within"
        print(f"appendmuch: {kind}({context}).{args.field} has no value", file=sys.stderr)
        return 1
    return 0
