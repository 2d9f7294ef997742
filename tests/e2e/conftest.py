"""End-to-end fixtures: a REAL `dedup serve` subprocess on 127.0.0.1, a free port, a tmp data dir.

Each test module starts one server (models load in it: ~10-20 s) and reuses it. Every wait is
bounded, and a server that dies early fails the test with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from dedup.client import DedupClient

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"reader": "reader-token", "analyst": "analyst-token", "admin": "admin-token"}
READY_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `python -m dedup.cli serve` subprocess and what a test needs to talk to it."""

    def __init__(self, data_dir: Path, config_text: str | None = None, extra_args=()):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.config_path = None
        if config_text is not None:
            self.config_path = self.data_dir.parent / f"config-{self.port}.toml"
            self.config_path.write_text(config_text)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "dedup.cli", "serve", "--data-dir", str(self.data_dir),
               "--port", str(self.port), "--metrics-port", str(self.metrics_port),
               *self.extra_args]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        env = dict(os.environ, DEDUP_AUTH_TOKENS=",".join(f"{t}:{r}" for r, t in TOKENS.items()),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=self._log)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with DedupClient(self.target) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.health(timeout=2) == "SERVING":
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.25)
        raise TimeoutError(f"server not SERVING after {timeout} s:\n{self.log_tail()}")

    def client(self, role: str | None = "reader", **kw) -> DedupClient:
        return DedupClient(self.target, TOKENS[role] if role else None, **kw)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


def metadata(role: str | None) -> tuple:
    return (("authorization", f"Bearer {TOKENS[role]}"),) if role else ()


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
