"""Storage backends: :class:`Memory`, :class:`Sqlite3` and :class:`PostgreSQL`.

``PostgreSQL`` needs the ``pg`` extra (psycopg 3 and psycopg_pool) only when an
instance is created; importing this module never imports psycopg.
"""

from .base import DBDriver
from .memory import Memory
from .postgresql import PostgreSQL
from .sqlite import Sqlite3

__all__ = ["DBDriver", "Memory", "PostgreSQL", "Sqlite3"]
