"""End-to-end fixtures: a REAL `dedup serve` subprocess on 127.0.0.1, a free port, a tmp data dir.

Each test module starts one server (models load in it: ~10-20 s) and reuses it. Every wait is
bounded, and a server that dies early fails the test with the tail of its log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.localserver import (READY_TIMEOUT_S, REPO, TOKENS, ServerProcess,  # noqa: F401
                               free_port, metadata)


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory):
    """Start servers on demand; every one is stopped when the module ends."""
    started: list[ServerProcess] = []

    def make(name: str = "data", config_text: str | None = None, extra_args=(),
             data_dir: Path | None = None) -> ServerProcess:
        root = data_dir or tmp_path_factory.mktemp(name) / "data"
        server = ServerProcess(root, config_text, extra_args)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.close()
