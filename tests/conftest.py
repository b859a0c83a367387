from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One platform for the tests that don't restart it; each test uses its own names."""
    srv = Server(tmp_path_factory.mktemp("faasbox-data")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def gateway_url(server: Server) -> str:
    return server.url


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A platform of its own, for tests that stop, kill or restart it."""
    srv = Server(tmp_path / "data")
    yield srv
    srv.stop()
