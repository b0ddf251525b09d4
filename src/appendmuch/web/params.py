"""Query parameters of the web view's pages and API, checked before anything is read.

Every page and API call names the parameters it takes; anything else, and any value
that does not parse, is a :class:`BadRequestError` (400) with a message saying what was
expected.  A namespace or field that is not in the log is a :class:`NotFoundError` (404).
Empty values (what an HTML form sends for an empty box) count as absent.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping

from ..names import is_valid_dbns, is_valid_field

__all__ = [
    "MAX_SEQ",
    "BadRequestError",
    "NotFoundError",
    "Params",
    "WebError",
    "check_field",
    "check_namespace",
]

#: seqs are signed 64-bit integers in every backend
MAX_SEQ = (1 << 63) - 1
#: parameters every request may carry: the access token
COMMON = frozenset({"token"})


class WebError(Exception):
    """A request the web view refuses: an HTTP status and a message for people."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(WebError):
    """A malformed request (400)."""

    status = 400


class NotFoundError(WebError):
    """A namespace, field, seq or page that does not exist (404)."""

    status = 404


class Params:
    """The query parameters of one request, with typed getters that raise BadRequestError.

    >>> p = Params({"at": "12", "q": ""}, {"at", "q"})
    >>> p.seq("at"), p.text("q")
    (12, None)
    >>> Params({"at": "x"}, {"at"}).seq("at")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    appendmuch.web.params.BadRequestError: at='x': expected a seq, a whole number from 1 to ...
    """

    def __init__(self, query: Mapping[str, str], allowed: Iterable[str]) -> None:
        known = COMMON | set(allowed)
        unknown = sorted(set(query) - known)
        if unknown:
            listed = ", ".join(sorted(known - COMMON)) or "none"
            raise BadRequestError(f"unknown parameter {unknown[0]!r} (this page takes: {listed})")
        self.query = {key: value for key, value in query.items() if value != ""}

    def text(self, name: str, *, limit: int = 500) -> str | None:
        """A text parameter, or None; at most ``limit`` characters."""
        value = self.query.get(name)
        if value is not None and len(value) > limit:
            raise BadRequestError(f"{name}: at most {limit} characters, got {len(value)}")
        return value

    def seq(self, name: str, low: int = 1) -> int | None:
        """A seq (``low`` .. 2**63 - 1; a cursor may be 0: before the first), or None."""
        value = self.query.get(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            number = -1
        if not low <= number <= MAX_SEQ or not value.strip().isdigit():
            raise BadRequestError(
                f"{name}={value!r}: expected a seq, a whole number from {low} to {MAX_SEQ}"
            )
        return number

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """A whole number from ``low`` to ``high``, else ``default`` when absent."""
        value = self.query.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequestError(
                f"{name}={value!r}: expected a whole number from {low} to {high}"
            ) from None
        if not low <= number <= high:
            raise BadRequestError(f"{name}={value!r}: expected a whole number from {low} to {high}")
        return number

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        """One of ``choices``, else ``default`` when absent."""
        value = self.query.get(name, default)
        if value not in choices:
            raise BadRequestError(f"{name}={value!r}: expected one of {', '.join(choices)}")
        return value

    def time(self, name: str) -> float | None:
        """A moment as seconds since the epoch: ISO 8601 (no zone: UTC) or a number."""
        value = self.query.get(name)
        if value is None:
            return None
        return parse_time(name, value)

    def namespace(self, name: str) -> str | None:
        """A namespace (or the start of one) as stored, ``/``-joined tokens."""
        value = self.text(name)
        return None if value is None else check_namespace(value, name)

    def field(self, name: str) -> str | None:
        """A field name."""
        value = self.text(name, limit=200)
        return None if value is None else check_field(value, name)


def parse_time(name: str, value: str) -> float:
    """``2024-05-01T10:00``, ``2024-05-01 10:00:00.5+02:00`` or ``1714557600`` as
    seconds since the epoch; a time without a zone is UTC (what the pages show)."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise BadRequestError(f"{name}={value!r}: expected a finite time")
        return number
    try:
        moment = _dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequestError(
            f"{name}={value!r}: expected a time such as 2024-05-01T10:00:00 (UTC unless a "
            "zone is given) or seconds since 1970"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()


def check_namespace(text: str, what: str = "namespace") -> str:
    """``text`` as a stored namespace (``a/b``), or BadRequestError."""
    dbns = text.strip("/")
    if not dbns or len(dbns) > 2000 or not is_valid_dbns(dbns):
        raise BadRequestError(
            f"{what} {text!r} is not a namespace: tokens of A-Z a-z 0-9 - . _ joined by /"
        )
    return dbns


def check_field(text: str, what: str = "field") -> str:
    """``text`` as a field name, or BadRequestError."""
    if not is_valid_field(text) or len(text) > 200:
        raise BadRequestError(f"{what} {text!r} is not a field name (a Python identifier)")
    return text
