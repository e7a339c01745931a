"""A pytest fixture that fails a test on any network connection attempt (offline guarantees are tested, not hoped).

Use with `@pytest.mark.usefixtures("no_network")` after `from tests._netblock import no_network`. Connections
and DNS look-ups raise OSError at once; the fixture also fails the test at teardown if anything tried, even when
the library under test swallowed the error. Unix-domain sockets (local IPC) stay allowed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what: str) -> None:
        attempts.append(what)
        raise OSError(f"network access blocked in this test: {what}")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        refuse(f"connect {address!r}")

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect_ex(self, address)
        refuse(f"connect_ex {address!r}")
        return 1

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(f"create_connection {address!r}"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(f"getaddrinfo {host!r}"))
    yield attempts
    assert not attempts, f"network access was attempted: {attempts}"
