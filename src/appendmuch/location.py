"""The ``module.function:lineno`` context string recorded with every write."""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType

__all__ = ["caller_context"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: package modules that play the part of application code (their writes are named)
_APPLICATION_MODULES = frozenset({os.path.join(_PACKAGE_DIR, "demo.py")})
_ours: dict[str, bool] = {}
#: id(code object) -> (the code object, instruction offset -> label): one interned str
#: per call site.  Keyed by id because hashing a code object walks its constants; the
#: entry holds the code object, so its id cannot be reused while the entry exists.
_labels: dict[int, tuple[CodeType, dict[int, str]]] = {}
_MAX_CODES = 50_000
_getframe = sys._getframe


def _is_ours(filename: str) -> bool:
    path = os.path.abspath(filename)
    ours = path.startswith(_PACKAGE_DIR) and path not in _APPLICATION_MODULES
    _ours[filename] = ours
    return ours


def caller_context(depth: int = 2) -> str:
    """Name the first frame outside appendmuch, e.g. ``'__main__.<module>:14'``.

    ``depth`` is where to start looking (2 = the caller of the function calling
    this); frames inside the package are skipped, so any internal call path names
    the user code that caused the write.  Labels are cached per call site (code
    object and instruction offset), so a repeated write costs two dict lookups.
    """
    frame: FrameType | None = _getframe(depth)
    ours = _ours
    while frame is not None:
        filename = frame.f_code.co_filename
        flag = ours.get(filename)
        if flag is None:
            flag = _is_ours(filename)
        if not flag:
            break
        frame = frame.f_back
    if frame is None:
        return ""
    known = _labels.get(id(frame.f_code))
    if known is not None:
        label = known[1].get(frame.f_lasti)
        if label is not None:
            return label
    return _new_label(frame)


def _new_label(frame: FrameType) -> str:
    code = frame.f_code
    module = frame.f_globals.get("__name__", "?")
    label = sys.intern(f"{module}.{code.co_name}:{frame.f_lineno}")
    if len(_labels) > _MAX_CODES:
        _labels.clear()
    _labels.setdefault(id(code), (code, {}))[1][frame.f_lasti] = label
    return label
