"""The write lease of shared mode: the one protocol every SQL backend implements.

Several processes write one table in shared mode; the lease says whose turn it is
to commit.  The engine (:mod:`appendmuch.drivers.sharing`) is its only user: it
*takes* the lease (and so learns the rows others committed since it last looked),
*commits* its round's rows (which gives the lease back), or *gives it back*
unused; between rounds it reads the *rows after a seq* and *follows* (waits for
another process's commit).  Each backend implements the protocol in a module of its
own beside its driver, as a mixin of the driver class:

- :mod:`appendmuch.drivers.sqlite_lease`: a FIFO queue of lock files
  (:mod:`appendmuch.drivers.fifolock`), followed with ``PRAGMA data_version``;
- :mod:`appendmuch.drivers.postgresql_lease`: an advisory lock on the writer
  connection, followed with ``LISTEN``/``NOTIFY``.

Every method runs in the driver's engine thread, never in an application thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .base import Row
    from .wakeup import Doorbell

__all__ = ["CommitUnknownError", "Lease"]


class CommitUnknownError(Exception):
    """A commit's outcome cannot be known (the connection broke while committing)."""


class Lease(Protocol):
    """A backend's side of shared mode, implemented by the driver itself (each
    backend's in a module of its own)."""

    def lease_take(self, after: int) -> list[Row]:
        """Hold the table's write lease (waiting in turn, at most ``lease_timeout``:
        then :class:`~appendmuch.errors.LockedError`); the rows committed with a seq
        above ``after``, in seq order.  On failure nothing is held."""

    def lease_commit(
        self, inserts: list[Row], updates: list[tuple[int, Row]], *, keep: bool = False
    ) -> None:
        """Write the rows (``updates``: overwrite the row stored under that seq) in one
        transaction, commit, and give the lease back (``keep``: hold on to it).
        :class:`CommitUnknownError` when the outcome cannot be known; any other error:
        nothing written, lease given back."""

    def lease_give_back(self) -> None:
        """Give the lease back without writing."""

    def lease_rows_after(self, after: int) -> list[Row]:
        """The committed rows with a seq above ``after`` (no lease needed)."""

    def lease_wait(self, timeout: float, bell: Doorbell) -> bool:
        """Wait until another process may have committed (True), or ``bell`` rang or
        ``timeout`` passed (False)."""

    def lease_recreate(self) -> None:
        """With the lease held: drop the table and create it empty (``reset()``)."""

    def lease_close(self) -> None:
        """Give back what is held and disconnect (reconnects on next use)."""

    def lease_claim(self, digest: str, description: str) -> None:
        """Join the table's shared writers with this replace configuration (held until
        :meth:`lease_close`); :class:`~appendmuch.errors.ConfigMismatchError` if a
        writer attached now uses another one."""
