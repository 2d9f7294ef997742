"""grpc.aio server wiring: servicer, auth, metrics, health, reflection, TLS, graceful shutdown.

Start order: bind the port and answer health NOT_SERVING at once, load the Engine (slow: models)
in a worker thread, optionally seed the demo bank, then flip health to SERVING. On SIGTERM:
health NOT_SERVING, stop taking new calls, drain in-flight ones for ``grace_s``, close the engine.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dedup.config import Config
from dedup.service.auth import AuthInterceptor, Authenticator
from dedup.service.metrics import Metrics, MetricsInterceptor
from dedup.service.servicer import DedupServicer
from dedup.v1 import dedup_pb2, dedup_pb2_grpc

log = logging.getLogger("dedup.server")

SERVICE_NAME = dedup_pb2.DESCRIPTOR.services_by_name["Dedup"].full_name


def server_options(config: Config) -> list[tuple[str, int]]:
    """Channel options: message size limits from config.limits, keepalive for idle clients."""
    max_bytes = config.limits.max_message_bytes
    return [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS when cert and key are configured; mTLS (client certs required) with a client CA."""
    tls = config.server.tls
    if not (tls.cert_file and tls.key_file):
        return None
    key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def add_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Standard health (NOT_SERVING until ready) and reflection, names from the DESCRIPTOR."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    return health_servicer


class DedupServer:
    """One gRPC server over one Engine; ``start`` returns once the port is bound."""

    def __init__(self, config: Config, engine_factory: Callable[[Config], object] | None = None):
        self.config = config
        self._engine_factory = engine_factory or _open_engine
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(config.server.workers, thread_name_prefix="dedup-worker")
        self.servicer = DedupServicer(config.limits, self.executor, config.batcher, self.metrics)
        auth = Authenticator(config.server.tokens, config.server.allow_anonymous_reader)
        # Bound the calls the server holds at once; beyond it grpc answers RESOURCE_EXHAUSTED.
        self.server = grpc.aio.server(
            interceptors=[MetricsInterceptor(self.metrics), AuthInterceptor(auth)],
            options=server_options(config),
            maximum_concurrent_rpcs=config.batcher.max_queue + 4 * config.server.workers,
        )
        dedup_pb2_grpc.add_DedupServicer_to_server(self.servicer, self.server)
        self.health = add_health_and_reflection(self.server)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.engine = None
        self.ready = asyncio.Event()
        self._load_task: asyncio.Task | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING); begin loading the engine. Returns the port."""
        s = self.config.server
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{s.host}:{s.port}"
        creds = server_credentials(self.config)
        self.port = (self.server.add_secure_port(address, creds) if creds
                     else self.server.add_insecure_port(address))
        if self.port == 0:
            raise OSError(f"could not bind {address}")
        await self.server.start()
        if s.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(s.host, s.metrics_port)
        log.info("listening", extra={"address": f"{s.host}:{self.port}", "tls": creds is not None,
                                     "metrics_port": self.metrics_port})
        self._load_task = asyncio.get_running_loop().create_task(self._load())
        return self.port

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.engine = await loop.run_in_executor(self.executor, self._engine_factory, self.config)
        except BaseException:
            log.exception("engine failed to load")
            raise
        self.metrics.watch_engine(self.engine.stats)
        self.servicer.attach(self.engine)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.ready.set()
        log.info("serving", extra={"snapshot": self.engine.snapshot_version,
                                   "stats": asdict(self.engine.stats())})

    async def wait_loaded(self) -> None:
        """Wait until the engine is loaded (re-raises a load failure)."""
        await self._load_task

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: NOT_SERVING, refuse new calls, drain in-flight ones, then close the engine."""
        grace = self.config.server.grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.servicer.close()
        if self._load_task is not None:
            self._load_task.cancel()
            # Retrieve the outcome: an unretrieved task exception is logged (with a traceback)
            # at some later garbage collection, at a random point of the program.
            await asyncio.gather(self._load_task, return_exceptions=True)
        self.metrics.close()
        self.executor.shutdown(wait=True)
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        log.info("stopped")


def _open_engine(config: Config):
    from dedup.engine import Engine

    engine = Engine.open(config)
    if config.demo:
        from dedup.demo import seed_demo_bank

        added = seed_demo_bank(engine)
        if added:
            log.info("demo seed bank added", extra={"seeds": added})
    return engine


async def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    server = DedupServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    load = server._load_task
    done, _ = await asyncio.wait({load, loop.create_task(stop.wait())},
                                 return_when=asyncio.FIRST_COMPLETED)
    if load in done and load.exception() is not None:
        await server.stop(0)
        raise load.exception()
    await stop.wait()
    log.info("shutting down", extra={"grace_s": config.server.grace_s})
    await server.stop()
