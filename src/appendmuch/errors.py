"""Exceptions raised by appendmuch.

Every exception derives from :class:`AppendmuchError` *and* from the built-in
exception the behaviour contract names (``ValueError``, ``TypeError``,
``AttributeError`` or ``RuntimeError``), so ``except ValueError`` keeps working
while ``except appendmuch.errors.AppendmuchError`` catches everything ours.
"""

from __future__ import annotations

__all__ = [
    "AppendmuchError",
    "ClosedError",
    "ConfigMismatchError",
    "ConflictError",
    "DatabaseError",
    "DecodeError",
    "DumpFormatError",
    "FieldNotFoundError",
    "InvalidNameError",
    "LockedError",
    "MutableAccessError",
    "NamespaceCollisionError",
    "ReadOnlyError",
    "RecoveryMismatchError",
    "RecoveryPendingError",
    "ReservedNameError",
    "RoundTripError",
    "SchemaError",
    "SeqOverflowError",
    "UnknownTypeIdError",
    "UnsupportedTypeError",
    "ValueTooLargeError",
    "WriteError",
]


class AppendmuchError(Exception):
    """Base class of every exception raised by appendmuch itself."""


class InvalidNameError(AppendmuchError, ValueError):
    """A namespace token, field name, table name or index spec is not allowed."""


class ReservedNameError(AppendmuchError, AttributeError):
    """An assignment targets a name that belongs to ``Storage`` itself (e.g. ``get``)."""


class NamespaceCollisionError(AppendmuchError, ValueError):
    """A name would be both a field and a sub-namespace of the same namespace."""


class FieldNotFoundError(AppendmuchError, AttributeError):
    """A field is missing, deleted, or (for temporal queries) not found in the context."""


class MutableAccessError(AppendmuchError, TypeError):
    """A mutable value was read outside ``with storage:``."""


class UnsupportedTypeError(AppendmuchError, TypeError, NotImplementedError):
    """The codec has no encoding for a value of this type.

    Also a ``NotImplementedError``, as codec errors were in appendmuch 0.0.8.
    """


class RoundTripError(AppendmuchError, ValueError):
    """A value's encoding does not decode back to an equal value (vigilant mode)."""


class ValueTooLargeError(AppendmuchError, ValueError):
    """An encoded value is larger than the driver can store (``max_value_bytes``)."""


class DecodeError(AppendmuchError, ValueError):
    """Stored bytes cannot be decoded (unknown type id, malformed JSON, ...)."""


class UnknownTypeIdError(DecodeError, NotImplementedError):
    """Stored bytes start with a type id no codec registration decodes.

    Also a ``NotImplementedError``, as codec errors were in appendmuch 0.0.8.
    """


class SeqOverflowError(AppendmuchError, OverflowError):
    """The log holds the largest seq a table can store (2**63 - 1): no write can get
    a seq after it.  Nothing was written."""


class DumpFormatError(AppendmuchError, ValueError):
    """A dump given to ``restore`` is malformed; nothing was restored."""


class SchemaError(AppendmuchError, RuntimeError):
    """An existing table does not have the layout appendmuch needs; it was left untouched."""


class DatabaseError(AppendmuchError, RuntimeError):
    """The database could not be reached, or refused an operation."""


class WriteError(DatabaseError):
    """Queued rows could not be written to the database.

    The rows stay queued, in order, and are written by the next successful flush.
    When it is raised by ``close()``, the rows were saved to a recovery file instead:
    ``recovery_file`` is its path.
    """

    def __init__(self, message: str, *, recovery_file: str | None = None) -> None:
        super().__init__(message)
        #: where close() saved the rows it could not write, if it did
        self.recovery_file = recovery_file


class ReadOnlyError(DatabaseError):
    """A write was attempted through a driver opened with ``read_only=True``."""


class RecoveryPendingError(DatabaseError):
    """Rows a driver saved to a recovery file must be replayed before writing again.

    ``recovery_files`` lists them.  Writing first would reuse their sequence numbers.
    """

    def __init__(self, message: str, *, recovery_files: list[str]) -> None:
        super().__init__(message)
        self.recovery_files = recovery_files


class RecoveryMismatchError(AppendmuchError, ValueError):
    """A recovery file belongs to another database (or does not say which); nothing
    was replayed."""


class ClosedError(AppendmuchError, RuntimeError):
    """A write through a Store that was closed."""


class LockedError(DatabaseError):
    """Another process (or driver) already has the table open for writing."""


class ConfigMismatchError(LockedError):
    """A shared-mode writer's replace configuration (``replace_predicate``,
    ``replace_index_specs``) differs from the one the table's other shared writers
    use: their caches would hold different rows.  Nothing was opened."""


class ConflictError(AppendmuchError, RuntimeError):
    """A ``with`` block changed a field that another process wrote after the block
    read it (shared mode).  The block wrote nothing; re-run it (see
    :func:`appendmuch.retry_on_conflict`), and it reads the newer value."""


def one_line(exc: BaseException) -> str:
    """Package-internal: an exception's message on one line, for error messages that
    quote it (database errors often span several); its type's name when it has none.

    >>> one_line(ValueError("connection refused\\n  is the server running?"))
    'connection refused is the server running?'
    >>> one_line(TimeoutError())
    'TimeoutError'
    """
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__
