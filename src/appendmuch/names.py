"""Validation of namespaces, field names and SQL identifiers, and namespace <-> text.

A namespace is a tuple of tokens; in the database it is stored as the tokens
joined by ``/`` (:func:`tuple2dbns`).  Field names are Python identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import InvalidNameError

__all__ = [
    "RESERVED_FIELDS",
    "check_field",
    "check_namespace",
    "check_sql_identifier",
    "dbns2tuple",
    "is_internal",
    "is_valid_dbns",
    "is_valid_field",
    "tuple2dbns",
    "with_article",
]

#: Attributes and methods of every Storage that can never be fields.  (``name`` is
#: not among them: the description's quick start assigns ``player.name = "Alice"``;
#: until such a field exists, ``storage.name`` is the last namespace token.)
RESERVED_FIELDS: frozenset[str] = frozenset({"virtual", "get", "flush", "refresh"})

_TOKEN = re.compile(r"[A-Za-z0-9._-]+\Z")
_ASCII_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LIKE_PATTERN = re.compile(r"[A-Za-z0-9_%./-]+\Z")


def tuple2dbns(namespace: Iterable[str]) -> str:
    """Join namespace tokens into the text stored in the ``namespace`` column.

    >>> tuple2dbns(("game", "player1"))
    'game/player1'
    """
    return "/".join(namespace)


def dbns2tuple(dbns: str) -> tuple[str, ...]:
    """Split a stored namespace back into its tokens; ``""`` gives ``()``.

    >>> dbns2tuple("game/player1")
    ('game', 'player1')
    >>> dbns2tuple("")
    ()
    """
    return tuple(dbns.split("/")) if dbns else ()


def is_valid_dbns(dbns: str) -> bool:
    """True when ``dbns`` is a non-empty ``/``-joined list of valid tokens."""
    return all(_TOKEN.match(token) for token in dbns.split("/"))


def is_valid_field(name: object) -> bool:
    """True when ``name`` can be a stored field (identifier, not internal or reserved)."""
    return (
        isinstance(name, str)
        and name.isidentifier()
        and not is_internal(name)
        and name not in RESERVED_FIELDS
    )


def is_internal(name: str) -> bool:
    """True for ``__dunder__`` names, which are never stored as fields."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def check_namespace(namespace: tuple[object, ...]) -> tuple[str, ...]:
    """Return ``namespace`` if every token is valid, else raise :class:`InvalidNameError`.

    O(total token length).
    """
    if not namespace:
        raise InvalidNameError("invalid namespace (): a namespace needs at least one token")
    for token in namespace:
        if not isinstance(token, str):
            raise InvalidNameError(
                f"invalid namespace {namespace!r}: token {token!r} is "
                f"{with_article(type(token).__name__)}, not a str"
            )
        if not _TOKEN.match(token):
            raise InvalidNameError(
                f"invalid namespace {namespace!r}: token {token!r} is not allowed (tokens "
                "are non-empty and use only A-Z a-z 0-9 - . _)"
            )
    return namespace  # type: ignore[return-value]


def with_article(noun: str) -> str:
    """The noun with its indefinite article, for messages.

    >>> with_article("int"), with_article("str")
    ('an int', 'a str')
    """
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def check_field(name: object, *, where: str = "") -> str:
    """Return ``name`` if it can be a stored field, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidNameError(f"field name {name!r}{where} is not a Python identifier")
    if is_internal(name):
        raise InvalidNameError(f"field name {name!r}{where} is internal (__dunder__)")
    if name in RESERVED_FIELDS:
        raise InvalidNameError(
            f"field name {name!r}{where} is reserved: virtual, get, flush and refresh "
            "belong to Storage itself"
        )
    return name


def check_sql_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is an ASCII identifier usable in a table name."""
    if not isinstance(value, str) or not _ASCII_IDENT.match(value):
        raise InvalidNameError(
            f"{what} must be an ASCII identifier (A-Z a-z 0-9 _, not starting with a digit), "
            f"got {value!r}"
        )
    return value


def check_table_part(value: object, what: str) -> str:
    """Like :func:`check_sql_identifier` but also accepts ``""`` (for ``tblextra``)."""
    if value == "":
        return ""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]+", value):
        raise InvalidNameError(
            f"{what} must contain only ASCII letters, digits and _, got {value!r}"
        )
    return value


def check_replace_index_specs(
    specs: Iterable[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """Validate ``[(field, like_pattern), ...]`` so both can be embedded in SQL safely."""
    if specs is None:
        return []
    out: list[tuple[str, str]] = []
    for spec in specs:
        if not isinstance(spec, tuple | list) or len(spec) != 2:
            raise InvalidNameError(
                f"replace_index_specs entries are (field, like_pattern) pairs, got {spec!r}"
            )
        field, pattern = spec
        if not isinstance(field, str) or not _ASCII_IDENT.match(field):
            raise InvalidNameError(
                f"replace_index_specs field {field!r} must be an ASCII identifier"
            )
        if not isinstance(pattern, str) or not _LIKE_PATTERN.match(pattern):
            raise InvalidNameError(
                f"replace_index_specs pattern {pattern!r} for field {field!r} may only use "
                "A-Z a-z 0-9 _ % . / -"
            )
        out.append((field, pattern))
    return out
