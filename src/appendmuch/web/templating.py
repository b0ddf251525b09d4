"""The Jinja2 environment of the web view: every template escaped, links built here.

Autoescaping is on for every template, so a value, a namespace, a field name or a
code location is always text in the page.  Links are built by the helpers below,
which quote each part; templates never paste strings into URLs themselves.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from .entries import human_time

__all__ = [
    "environment",
    "field_url",
    "input_time",
    "log_url",
    "ns_url",
    "query_url",
    "tree_url",
]


def _query(params: dict[str, Any]) -> str:
    kept = {key: str(value) for key, value in params.items() if value is not None}
    return "?" + urlencode(kept) if kept else ""


def query_url(path: str, **params: Any) -> str:
    """``path`` with the parameters that are not None as its query string."""
    return path + _query(params)


def ns_url(dbns: str, **params: Any) -> str:
    """The namespace page of ``dbns``."""
    return "/ns/" + quote(dbns, safe="/") + _query(params)


def field_url(dbns: str, name: str, **params: Any) -> str:
    """The field page of field ``name`` of ``dbns``."""
    return "/field/" + quote(dbns, safe="/") + "/" + quote(name, safe="") + _query(params)


def tree_url(prefix: str | None = None, **params: Any) -> str:
    """The namespace tree below ``prefix`` (the top level when None)."""
    return "/tree" + _query({"prefix": prefix or None, **params})


def log_url(**params: Any) -> str:
    """The log page with the given filters and cursor."""
    return "/log" + _query(params)


def input_time(created_at: float | None) -> str:
    """A time as a ``datetime-local`` input holds it (UTC, milliseconds); ``""`` for none."""
    if created_at is None or created_at != created_at:  # noqa: PLR0124 - NaN: none
        return ""
    moment = _dt.datetime.fromtimestamp(created_at, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def environment() -> Environment:
    """The templates of this package, autoescaped, failing on undefined names."""
    env = Environment(
        loader=PackageLoader("appendmuch.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        ns_url=ns_url,
        field_url=field_url,
        tree_url=tree_url,
        log_url=log_url,
        query_url=query_url,
        human_time=human_time,
        input_time=input_time,
        plural=_plural,
    )
    env.filters["number"] = _number
    return env
