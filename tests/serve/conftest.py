"""The module-wide server of tests/serve (see served.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from served import Served


@pytest.fixture(scope="module")
def server(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for a module's tests, stopped (SIGTERM) at the end."""
    from served import start_server

    served = start_server(tiny_artifacts, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield served
    finally:
        served.stop()
