"""Virtual fields: computed attributes of a Storage, like ``@property`` per object."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

from .errors import InvalidNameError
from .names import RESERVED_FIELDS, is_internal

__all__ = ["VirtualFields"]

Getter = Callable[[Any], Any]


def _check(name: object, func: object) -> None:
    if not isinstance(name, str) or not name.isidentifier() or is_internal(name):
        raise InvalidNameError(f"virtual field name {name!r} is not a valid identifier")
    if name in RESERVED_FIELDS:
        raise InvalidNameError(f"virtual field name {name!r} is reserved by Storage")
    if not callable(func):
        raise TypeError(f"virtual field {name!r} must be callable, got {type(func).__name__}")


class VirtualFields(dict[str, Getter]):
    """A dict of name -> ``f(storage)`` that is also a decorator.

    Reading ``storage.name`` calls ``f(storage)``; assigning to it raises
    AttributeError.

    >>> v = VirtualFields()
    >>> @v
    ... def doubled(p):
    ...     return 2
    >>> @v("bonus")
    ... def compute_bonus(p):
    ...     return 3
    >>> sorted(v)
    ['bonus', 'doubled']
    >>> v["bad name"] = len
    Traceback (most recent call last):
    ...
    appendmuch.errors.InvalidNameError: virtual field name 'bad name' is not a valid identifier
    """

    def __init__(
        self, initial: Mapping[str, Getter] | Iterable[tuple[str, Getter]] | None = None
    ) -> None:
        super().__init__()
        if initial is not None:
            self.update(initial)

    def __setitem__(self, name: str, func: Getter) -> None:
        _check(name, func)
        super().__setitem__(name, func)

    def update(self, *args: Any, **kwargs: Getter) -> None:
        """Add several virtual fields; each is validated as with ``v[name] = f``."""
        for name, func in dict(*args, **kwargs).items():
            self[name] = func

    def setdefault(self, name: str, func: Getter) -> Getter:
        if name not in self:
            self[name] = func
        return self[name]

    def __ior__(self, other: Any) -> VirtualFields:  # type: ignore[override, misc]
        self.update(other)
        return self

    @overload
    def __call__(self, target: str, /) -> Callable[[Getter], Getter]: ...

    @overload
    def __call__(self, target: Getter, /) -> Getter: ...

    def __call__(self, target: str | Getter, /) -> Getter | Callable[[Getter], Getter]:
        """Register a function under its own name, or ``("name")`` under that name."""
        if isinstance(target, str):
            name = target

            def register(func: Getter) -> Getter:
                self[name] = func
                return func

            return register
        if not callable(target):
            raise TypeError(
                f"use @storage.virtual or @storage.virtual('name'), not with {target!r}"
            )
        self[getattr(target, "__name__", "")] = target
        return target
