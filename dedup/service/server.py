"""grpc.aio server wiring: servicer, auth, metrics, health, reflection, TLS, graceful shutdown.

Start order: bind the port and answer health NOT_SERVING at once, load the Engine (slow: models)
in a worker thread, optionally seed the demo bank, then flip health to SERVING. On SIGTERM:
health NOT_SERVING, stop taking new calls, drain in-flight ones for ``grace_s``, close the engine.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dedup.config import Config
from dedup.errors import DedupError
from dedup.service.auth import PUBLIC_PREFIXES, AuthInterceptor, Authenticator
from dedup.service.metrics import Metrics, MetricsInterceptor
from dedup.service.servicer import DedupServicer
from dedup.v1 import dedup_pb2, dedup_pb2_grpc

log = logging.getLogger("dedup.server")

SERVICE_NAME = dedup_pb2.DESCRIPTOR.services_by_name["Dedup"].full_name


class PortInUse(DedupError):
    """The gRPC or metrics port is taken: another server (maybe with another bank) listens."""


class StartupCancelled(DedupError):
    """Shutdown began while the models were loading."""


def _check_free(host: str, port: int, what: str) -> None:
    """PortInUse unless ``host:port`` can be bound now (0 picks a free port: always fine)."""
    if port == 0:
        return
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise PortInUse(f"cannot serve {what} on {host}:{port}: {e.strerror or e}") from e


def server_options(config: Config) -> list[tuple[str, int]]:
    """Channel options: message size limits from config.limits, keepalive for idle clients,
    a per-connection stream cap, and no port sharing (SO_REUSEPORT would let a second server
    bind the same port and silently take half the traffic)."""
    max_bytes = config.limits.max_message_bytes
    return [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_concurrent_streams", config.server.max_streams_per_connection),
        ("grpc.so_reuseport", 0),
    ]


class _Undecodable:
    """What a request that failed to parse becomes, so its handler can say INVALID_ARGUMENT."""

    def __init__(self, error: Exception):
        self.error = error


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Corrupt request bytes or invalid UTF-8 in a string field: INVALID_ARGUMENT naming the
    message type, never UNKNOWN with a parser's internals (grpc would report a deserializer's
    exception itself)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        parse, behavior = handler.request_deserializer, handler.unary_unary

        def deserialize(data: bytes):
            try:
                return parse(data)
            except Exception as e:  # protobuf's DecodeError and friends
                return _Undecodable(e)

        async def guarded(request, context):
            if isinstance(request, _Undecodable):
                # protobuf's own words: "Error parsing message with type 'dedup.v1.X': String
                # field had bad UTF-8" (the API's message type and the reason; no internals)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"undecodable request: {request.error}")
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=deserialize,
            response_serializer=handler.response_serializer)


class PublicStreamBudget(grpc.aio.ServerInterceptor):
    """At most ``limit`` streaming calls that need no token (health Watch, reflection) at once;
    one more is refused with RESOURCE_EXHAUSTED at once. Tokened calls are bounded by the API's
    own queues, never by this budget, so anonymous streams cannot starve them (DESIGN
    invariant 8). Health Check (unary, cheap) is not limited."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(PUBLIC_PREFIXES):
            return handler
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guard(handler.unary_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._guard(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler

    async def _admit(self, context) -> None:
        if self.active >= self.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many open health/reflection streams (limit {self.limit}); "
                                "retry later")
        self.active += 1

    def _guard(self, behavior):
        if inspect.isasyncgenfunction(behavior):
            async def streamed(request, context):
                await self._admit(context)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    self.active -= 1
            return streamed

        async def written(request, context):
            await self._admit(context)
            try:
                return await behavior(request, context)
            finally:
                self.active -= 1
        return written


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
        self._engine_factory = engine_factory or (lambda cfg: _open_engine(cfg, self.stopping))
        self.metrics = Metrics()
        self.executor = WorkerPool(config.server.workers)
        self.stopping = threading.Event()  # set once shutdown begins: a late load is not served
        self.servicer = DedupServicer(config.limits, self.executor, config.batcher, self.metrics)
        auth = Authenticator(config.server.tokens, config.server.allow_anonymous_reader)
        # No global maximum_concurrent_rpcs: it counts anonymous streams too. Tokened work is
        # bounded by the servicer's queues; anonymous streams by their own budget.
        self.public_streams = PublicStreamBudget(config.server.max_public_streams)
        self.server = grpc.aio.server(
            interceptors=[self.public_streams, MetricsInterceptor(self.metrics),
                          AuthInterceptor(auth), DecodeGuard()],
            options=server_options(config),
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
        _check_free(s.host, s.port, "gRPC")
        if s.metrics_port:
            _check_free(s.metrics.host, s.metrics_port, "metrics")
        try:
            self.port = (self.server.add_secure_port(address, creds) if creds
                         else self.server.add_insecure_port(address))
        except RuntimeError as e:  # grpcio >= 1.5x raises where older ones returned 0
            raise PortInUse(f"cannot listen on {address}: in use or not an address here") from e
        if self.port == 0:
            raise PortInUse(f"cannot listen on {address}: in use or not an address here")
        if s.metrics_port is not None:
            m = s.metrics
            try:
                self.metrics_port = self.metrics.serve_http(
                    m.host, s.metrics_port, cert_file=m.cert_file, key_file=m.key_file,
                    basic_auth=(m.basic_auth_user, m.basic_auth_sha256)
                    if m.basic_auth_user else None)
            except OSError as e:
                raise PortInUse(f"cannot serve metrics on {m.host}:{s.metrics_port}: {e}") from e
        await self.server.start()
        log.info("listening", extra={"address": f"{s.host}:{self.port}", "tls": creds is not None,
                                     "metrics_port": self.metrics_port})
        self._load_task = asyncio.get_running_loop().create_task(self._load())
        return self.port

    async def _load(self) -> None:
        """Load the engine in a daemon thread: a shutdown during the (long) model load need not
        wait for it, and a load finished after shutdown began is closed, not served."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(outcome, failed: bool) -> None:
            if done.cancelled():
                if not failed and hasattr(outcome, "close"):
                    outcome.close()  # loaded after shutdown began: never served
                return
            (done.set_exception if failed else done.set_result)(outcome)

        def run() -> None:
            try:
                engine = self._engine_factory(self.config)
            except BaseException as e:  # handed to the event loop, raised there
                loop.call_soon_threadsafe(settle, e, True)
            else:
                loop.call_soon_threadsafe(settle, engine, False)

        threading.Thread(target=run, name="dedup-load", daemon=True).start()
        try:
            self.engine = await done
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("engine failed to load")
            raise
        self.metrics.watch_engine(self.engine.stats)
        self.metrics.watch_shadow(self.engine.shadow)
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

    async def stop(self, grace: float | None = None) -> bool:
        """Graceful: NOT_SERVING, refuse new calls, drain in-flight ones for ``grace`` seconds,
        then close the engine. Returns False when engine calls were still running after the
        grace: they are left (their writes, not acknowledged, are discarded by LMDB) and the
        engine is not closed under them; the caller should exit the process."""
        grace = self.config.server.grace_s if grace is None else grace
        deadline = asyncio.get_running_loop().time() + grace
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.servicer.close()
        if self._load_task is not None:
            self._load_task.cancel()
            # Retrieve the outcome: an unretrieved task exception is logged (with a traceback)
            # at some later garbage collection, at a random point of the program.
            await asyncio.gather(self._load_task, return_exceptions=True)
        self.metrics.close()
        left = max(1.0, deadline - asyncio.get_running_loop().time())
        drained = await asyncio.get_running_loop().run_in_executor(
            None, self.executor.wait_idle, left)
        self.executor.shutdown(wait=drained, cancel_futures=True)
        if drained and self.engine is not None:
            self.engine.close()
            self.engine = None
        log.info("stopped" if drained else "stopped with engine calls still running")
        return drained


class WorkerPool(ThreadPoolExecutor):
    """The engine's worker threads, counting calls not yet finished so shutdown can wait for
    them with a bound."""

    def __init__(self, workers: int):
        super().__init__(workers, thread_name_prefix="dedup-worker")
        self._pending = 0
        self._idle = threading.Condition()

    def submit(self, fn, /, *args, **kwargs):
        with self._idle:
            self._pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no call is pending; False if some still are after ``timeout`` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


def _open_engine(config: Config, stopping: threading.Event | None = None):
    from dedup.engine import Engine

    engine = Engine.open(config)
    if stopping is not None and stopping.is_set():  # shut down while models loaded: no seeding
        engine.close()
        raise StartupCancelled("shutdown began during start-up; the engine was not served")
    if config.demo:
        from dedup.demo import seed_demo_bank

        added = seed_demo_bank(engine)
        if added:
            log.info("demo seed bank added", extra={"seeds": added})
    return engine


async def serve(config: Config) -> bool:
    """Run until SIGTERM/SIGINT, then shut down gracefully; returns ``stop``'s drained flag."""
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
    return await server.stop()
