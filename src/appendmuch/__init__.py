"""appendmuch: an append-only log with an in-memory cache and pluggable storage backends.

>>> from appendmuch import Memory, Store, within
>>> store = Store(Memory())
>>> player = store.storage("game", "player1")
>>> player.round = 1
>>> player.score = 10
>>> within(player, round=1).score
10
"""

from .codec import Codec
from .conflicts import retry_on_conflict
from .copying import safe_deepcopy
from .drivers import DBDriver, Memory, PostgreSQL, Sqlite3
from .errors import ConflictError
from .names import dbns2tuple, tuple2dbns
from .storage import Storage
from .store import Store
from .tree import flatten, iter_fields
from .value import Value
from .virtual import VirtualFields
from .within import within

__version__ = "0.1.0"

__all__ = [
    "Codec",
    "ConflictError",
    "DBDriver",
    "Memory",
    "PostgreSQL",
    "Sqlite3",
    "Storage",
    "Store",
    "Value",
    "VirtualFields",
    "__version__",
    "dbns2tuple",
    "flatten",
    "iter_fields",
    "retry_on_conflict",
    "safe_deepcopy",
    "tuple2dbns",
    "within",
]
