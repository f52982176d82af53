"""Shared fixtures: a factory for in-process servers, stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import RunningServer, settings_for


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start a real Buzón on loopback (free ports) with settings overrides."""
    started: list[RunningServer] = []

    def factory(**overrides: Any) -> RunningServer:
        server = RunningServer(settings_for(tmp_path, **overrides)).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    """A Buzón with default settings."""
    return make_server()
