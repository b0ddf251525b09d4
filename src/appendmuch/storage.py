"""The :class:`Storage` proxy: attribute access to the fields of one namespace."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .blocks import NOT_NOTED
from .errors import ReservedNameError
from .fieldlog import GONE, FieldLog
from .history import History
from .names import RESERVED_FIELDS, check_field, is_internal
from .virtual import VirtualFields

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Storage"]

#: read straight from the log: immutable, never guarded, never copied
_SCALARS = frozenset({int, float, str, bool, type(None)})

_RESERVED, _DESCRIPTOR, _CLASS_ATTR = "reserved", "descriptor", "class attribute"
_class_names: dict[type, dict[str, str]] = {}
#: class -> whether its objects may read through the namespace's scalar dict
_scalar_readers: dict[type, bool] = {}
#: class -> names known to be plain stored fields for it (assignment fast path)
_plain_fields: dict[type, set[str]] = {}
_set = object.__setattr__
_getframe = sys._getframe


def _names_of(cls: type) -> dict[str, str]:
    """Non-dunder names defined on ``cls`` and its bases, and what kind each is."""
    names = _class_names.get(cls)
    if names is None:
        names = {}
        for klass in reversed(cls.__mro__[:-1]):
            for name, attr in vars(klass).items():
                if is_internal(name):
                    continue
                if name in RESERVED_FIELDS and klass is Storage:
                    names[name] = _RESERVED
                elif hasattr(type(attr), "__set__"):
                    names[name] = _DESCRIPTOR
                else:
                    names[name] = _CLASS_ATTR
        _class_names[cls] = names
    return names


def _what(name: str, kind: str, cls: type) -> str:
    """Say what a class-level ``name`` is, for an error message."""
    if kind is _RESERVED:
        return f"{name!r} is reserved: it is an attribute of {cls.__name__}"
    return f"{name!r} is a {kind} of {cls.__name__}"


def _is_field(storage: Storage, cls: type, name: str, value: Any) -> bool:
    """Slow path of assignment: True if ``name`` is a storable field of ``cls``.

    Internal (dunder) names and descriptors are assigned here and give False; names of
    Storage itself and other class attributes raise.  Field names found valid are
    remembered per class, so the next assignment skips all of this.
    """
    if is_internal(name):
        _set(storage, name, value)
        return False
    kind = _names_of(cls).get(name)
    if kind is not None:
        if kind is _DESCRIPTOR:
            _set(storage, name, value)
            return False
        raise ReservedNameError(f"{_what(name, kind, cls)}, so it cannot be a field")
    check_field(name, where=f" on {storage!r}")
    _plain_fields.setdefault(cls, set()).add(name)
    return True


def _reads_scalars(cls: type) -> bool:
    """Whether objects of ``cls`` may use their namespace's scalar dict (the
    ``__dict__`` its Storage objects have in common, see :meth:`Store.scalar_dict`).

    Instance attributes shadow non-data class attributes, so a subclass that adds
    methods or constants reads every field through ``__getattr__`` instead.
    """
    reads = _scalar_readers.get(cls)
    if reads is None:
        own = _names_of(Storage)
        reads = _scalar_readers[cls] = all(
            kind is _DESCRIPTOR or name in own for name, kind in _names_of(cls).items()
        )
    return reads


class Storage:
    """The fields of one namespace, read and written as attributes.

    Every assignment appends an entry to the log; ``del`` appends a tombstone.  Many
    Storage objects for one namespace see the same data; they are equal and hash
    equal.  Mutable values (lists, dicts, sets, ...) are read inside ``with storage:``
    and in-place changes are saved when the block ends.

    >>> from appendmuch import Memory, Store
    >>> store = Store(Memory())
    >>> player = store.storage("game", "player1")
    >>> player.score = 100
    >>> with player:
    ...     player.items = ["sword"]
    ...     player.items.append("shield")
    >>> with player:
    ...     player.items
    ['sword', 'shield']
    >>> player.__fields__()
    ['score', 'items']
    """

    # __dict__ is the namespace's scalar dict (field -> latest int, float, str,
    # bool or None, kept current by the Store), so reading such a field is a plain
    # attribute lookup in C; everything else goes through __getattr__.
    __slots__ = ("__dbns__", "__dict__", "__namespace__", "__store__", "__virtual__")

    __namespace__: tuple[str, ...]
    __store__: Store
    __dbns__: str
    __virtual__: VirtualFields | None
    if TYPE_CHECKING:
        #: the field ``name`` if one is stored, else the last namespace token
        name: Any

    def __init__(
        self, *namespace: str, store: Store, virtual: Mapping[str, Any] | None = None
    ) -> None:
        dbns = store.attach(namespace)
        _set(self, "__namespace__", namespace)
        _set(self, "__store__", store)
        _set(self, "__dbns__", dbns)
        if virtual:
            # virtual fields win over stored ones: keep a private, empty __dict__
            _set(self, "__virtual__", VirtualFields(virtual))
        else:
            _set(self, "__virtual__", None)
            if _reads_scalars(type(self)):
                _set(self, "__dict__", store.scalar_dict(dbns))

    # ------------------------------------------------------------------ attributes

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        virtual = self.__virtual__
        if virtual and name in virtual:
            return virtual[name](self)
        store = self.__store__
        node = store.by_dbns.get(self.__dbns__)
        log = node.get(name) if node is not None else None
        if store.blocks:  # (a with block notes what it reads; shared mode: its writes)
            seen = store.read_in_block(self.__dbns__, name, log if type(log) is FieldLog else None)
            if seen is not NOT_NOTED:
                return seen
        if type(log) is FieldLog:
            data = log.items[-2]
            if type(data) in _SCALARS:
                if self.__dict__ is store.scalars.get(self.__dbns__):
                    store.remember_scalar(self.__dbns__, name, log, data)  # later reads: no call
                return data
            if data is not GONE:
                return store.read_value(self.__dbns__, name, log, data)
        if name == "name":
            return self.__namespace__[-1]
        raise store.missing_error(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        fields = _plain_fields.get(cls)
        if (fields is None or name not in fields) and not _is_field(self, cls, name, value):
            return  # an internal attribute or a descriptor: set, not stored
        virtual = self.__virtual__
        if virtual and name in virtual:
            raise AttributeError(f"Cannot assign to virtual field {name!r} of {self!r}")
        self.__store__.append_entry(self.__namespace__, self.__dbns__, name, value)

    def __delattr__(self, name: str) -> None:
        if is_internal(name):
            object.__delattr__(self, name)
            return
        kind = _names_of(type(self)).get(name)
        if kind is not None:
            if kind is _DESCRIPTOR:
                object.__delattr__(self, name)
                return
            raise ReservedNameError(_what(name, kind, type(self)))
        virtual = self.__virtual__
        if virtual and name in virtual:
            raise AttributeError(
                f"{name!r} is a virtual field of {self!r}; remove it with del storage.virtual[...]"
            )
        self.__store__.delete_field(self.__namespace__, self.__dbns__, name, self)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        names.update(self.__store__.field_names(self.__dbns__))
        if self.__virtual__:
            names.update(self.__virtual__)
        return sorted(names)

    # ------------------------------------------------------------------ API

    @property
    def virtual(self) -> VirtualFields:
        """This object's virtual fields: a dict that is also a decorator.

        >>> from appendmuch import Memory, Store
        >>> p = Store(Memory()).storage("game", "p1")
        >>> p.score = 100
        >>> @p.virtual
        ... def doubled(s):
        ...     return s.score * 2
        >>> p.doubled
        200
        """
        virtual = self.__virtual__
        if virtual is None:
            virtual = VirtualFields()
            _set(self, "__virtual__", virtual)
            # virtual fields win over stored ones: stop using the scalar dict
            _set(self, "__dict__", {})
        return virtual

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value, or ``default`` if it is missing or deleted.  O(1)."""
        try:
            return getattr(self, name)
        except AttributeError:
            return default

    def flush(self) -> None:
        """Inside ``with``: save in-place changes of mutable values now."""
        from .location import caller_context

        self.__store__.flush_block(self.__namespace__, self.__dbns__, caller_context())

    def refresh(self, *fields: str) -> None:
        """Drop this namespace's working copies (all, or the named fields).

        The next read returns the store's latest value; unsaved in-place changes of
        the dropped copies are discarded.
        """
        self.__store__.refresh_copies(self.__dbns__, fields)

    def __fields__(self) -> list[str]:
        """Currently available fields, in order of first write.  O(fields)."""
        return self.__store__.field_names(self.__dbns__)

    def __bool__(self) -> bool:
        return bool(self.__store__.field_names(self.__dbns__))

    def __history__(self) -> History:
        """Snapshot: field -> tuple of Values by seq, tombstones and deleted fields included."""
        return self.__store__.history_of(self.__dbns__)

    def __enter__(self) -> Storage:
        store = self.__store__
        entered = False
        try:
            entered = store.enter_block(self.__dbns__, _getframe(1))
            return self
        except BaseException:
            # (an interrupt after the block was opened, before `with` could see it:
            # __exit__ will never run, so it is closed here)
            if entered:
                store.exit_block(self.__namespace__, self.__dbns__, False)
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.__store__.exit_block(self.__namespace__, self.__dbns__, exc_type is None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Storage):
            return self.__namespace__ == other.__namespace__
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.__namespace__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.__namespace__))})"
