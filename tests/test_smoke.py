"""A first end-to-end check on every backend: write, reopen, read."""

from backends import Backend


def test_write_reopen_read(backend: Backend) -> None:
    store = backend.store()
    player = store.storage("game", "player1")
    player.score = 100
    store = backend.reopen(store)
    assert store.storage("game", "player1").score == 100
    store.close()
