"""The local stack as a user runs it: ``python -m flowforge.local`` in a subprocess, on
free ports, with a temporary data directory, reached only over HTTP and WebSocket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowforge.local.process import LocalStackProcess

ROOT = Path(__file__).resolve().parents[2]


class LocalStack(LocalStackProcess):
    """The stack with the end-to-end tests' slow tools loaded."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        tools_modules: str = "workflows,tests.e2e.slow_tools",
        **options: Any,
    ) -> None:
        super().__init__(data_dir, log_path, tools_modules=tools_modules, **options)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One local stack shared by the tests that do not restart it."""
    directory = tmp_path_factory.mktemp("stack")
    local = LocalStack(directory / "data", directory / "stack.log")
    local.start()
    yield local
    local.stop()


@pytest.fixture
def own_stack(tmp_path):
    """A stack of the test's own, to kill and restart."""
    local = LocalStack(tmp_path / "data", tmp_path / "stack.log")
    yield local
    local.kill()
