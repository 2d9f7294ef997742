"""A real ``dedup serve`` subprocess on 127.0.0.1: what the end-to-end tests, the evaluation and
the benchmarks talk to, so every figure they report went through the service's own gRPC API.

Every wait is bounded; a server that dies early raises with the tail of its log.
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

from dedup.client import DedupClient

REPO = Path(__file__).resolve().parents[1]
TOKENS = {"reader": "reader-token", "analyst": "analyst-token", "admin": "admin-token"}
READY_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``python -m dedup.cli serve`` subprocess on loopback, with the three role tokens."""

    def __init__(self, data_dir: Path, config_text: str | None = None, extra_args=(),
                 env: dict[str, str] | None = None):
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
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = READY_TIMEOUT_S) -> "ServerProcess":
        """Start the subprocess and wait until health says SERVING."""
        cmd = [sys.executable, "-m", "dedup.cli", "serve", "--data-dir", str(self.data_dir),
               "--port", str(self.port), "--metrics-port", str(self.metrics_port),
               *self.extra_args]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        env = dict(os.environ, DEDUP_AUTH_TOKENS=",".join(f"{t}:{r}" for r, t in TOKENS.items()),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), **self.extra_env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=self._log)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until SERVING; raise with the log tail if the process exits or time runs out."""
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
        """A client holding ``role``'s token (None: no token)."""
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
        """SIGTERM (then SIGKILL after 30 s) and close the log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def metadata(role: str | None) -> tuple:
    """gRPC metadata carrying ``role``'s token (empty for None)."""
    return (("authorization", f"Bearer {TOKENS[role]}"),) if role else ()


def with_retries(call, attempts: int = 60, max_sleep_s: float = 5.0):
    """``call()``, retried while the service sheds load (Overloaded), sleeping for its retry
    hint (or a growing pause without one): a benchmark client keeps several calls in flight
    and must back off like any well-behaved caller."""
    from dedup.errors import Overloaded

    for attempt in range(attempts):
        try:
            return call()
        except Overloaded as e:
            if attempt == attempts - 1:
                raise
            hint = e.retry_after_s if e.retry_after_s else 0.05 * (attempt + 1)
            time.sleep(min(max_sleep_s, max(0.01, hint)))


def batch_lookup_with_retries(client, items, attempts: int = 60, **kw) -> list:
    """BatchLookup where the whole call, or single items of it, may be shed (Overloaded):
    those are sent again after the service's hint until every item has its own answer."""
    from dedup.errors import Overloaded

    results = with_retries(lambda: client.batch_lookup(items, **kw), attempts)
    for attempt in range(attempts):
        shed = [i for i, r in enumerate(results) if isinstance(r, Overloaded)]
        if not shed:
            break
        hint = max((results[i].retry_after_s or 0.0) for i in shed) or 0.05 * (attempt + 1)
        time.sleep(min(5.0, max(0.01, hint)))
        again = with_retries(lambda: client.batch_lookup([items[i] for i in shed], **kw),
                             attempts)
        for i, r in zip(shed, again):
            results[i] = r
    return results

