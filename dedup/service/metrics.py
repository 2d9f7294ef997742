"""Prometheus metrics and structured per-RPC logs with request ids, from one interceptor."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
import uuid
from wsgiref.simple_server import WSGIRequestHandler, make_server
from typing import TYPE_CHECKING, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from dedup.service.convert import REQUEST_ID_KEY

if TYPE_CHECKING:
    from dedup.shadow import ShadowTally
    from dedup.types import EngineStats

log = logging.getLogger("dedup.rpc")

# The id of the RPC being served (the caller's x-request-id, or a new one); set around the
# handler by MetricsInterceptor, read where an error is logged and reported.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("dedup_request_id",
                                                                         default="")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's metrics, in their own registry (so several servers can live in one test)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("dedup_requests", "RPCs received", ["method"], registry=r)
        self.errors = Counter("dedup_errors", "RPCs that ended with a non-OK status",
                              ["method", "code"], registry=r)
        self.latency = Histogram("dedup_request_latency_seconds", "RPC latency", ["method"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("dedup_in_flight_requests", "RPCs being served", registry=r)
        self.batch_size = Histogram("dedup_batch_size", "items per micro-batch",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_wait = Histogram("dedup_batch_wait_seconds",
                                    "time the oldest item of a batch waited before it ran",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.items = Counter("dedup_lookup_items", "items looked up", registry=r)
        self._http = None

    def observe_batch(self, size: int, waited_s: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(waited_s)

    def watch_engine(self, stats: Callable[[], "EngineStats"]) -> None:
        """Export index sizes and seed counts, read from ``stats()`` at scrape time."""
        self.registry.register(_EngineCollector(stats))

    def watch_shadow(self, tally: "ShadowTally") -> None:
        """Export shadow spaces' comparison with the live verdicts, read at scrape time."""
        self.registry.register(_ShadowCollector(tally))

    def serve_http(self, host: str, port: int, cert_file: str | None = None,
                   key_file: str | None = None,
                   basic_auth: tuple[str, str] | None = None) -> int:
        """Start the /metrics endpoint on its own port (TLS with cert and key; HTTP basic auth
        with (user, sha256 hex of the password)); returns the bound port. OSError if taken."""
        app = make_wsgi_app(self.registry)
        if basic_auth is not None:
            app = _basic_auth(app, *basic_auth)
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        if cert_file and key_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        self._http = server
        return server.server_address[1]

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # scrapes every few seconds: not log-worthy
        pass


def _basic_auth(app, user: str, password_sha256: str):
    """Wrap a WSGI app: 401 unless HTTP basic auth gives ``user`` and a password whose sha256
    hex digest is ``password_sha256`` (compared in constant time)."""
    want = f"{user}:{password_sha256.lower()}".encode()

    def checked(environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION", "")
        ok = False
        if header.startswith("Basic "):
            try:
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                got = f"{name}:{hashlib.sha256(password.encode()).hexdigest()}".encode()
                ok = hmac.compare_digest(got, want)
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="dedup"'),
                                                ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        return app(environ, start_response)

    return checked


class _EngineCollector:
    def __init__(self, stats: Callable[[], "EngineStats"]):
        self._stats = stats

    def collect(self):
        try:
            s = self._stats()
        except Exception:  # engine not loaded yet or closing: export nothing rather than fail
            return
        ntotal = GaugeMetricFamily("dedup_index_vectors", "vectors in the live index", labels=["space"])
        role = GaugeMetricFamily("dedup_space_role", "1 per space and its role (live, shadow)",
                                 labels=["space", "role"])
        for name, sp in s.spaces.items():
            ntotal.add_metric([name], sp.ntotal)
            role.add_metric([name, sp.role], 1)
        yield ntotal
        yield role
        seeds = GaugeMetricFamily("dedup_seeds", "seeds in the store", labels=["state"])
        seeds.add_metric(["active"], s.seeds_active)
        seeds.add_metric(["removed"], s.seeds_removed)
        yield seeds
        yield GaugeMetricFamily("dedup_op_seq", "op-log position of the live state",
                                value=max(s.op_seq, 0))


class _ShadowCollector:
    def __init__(self, tally: "ShadowTally"):
        self._tally = tally

    def collect(self):
        lookups = CounterMetricFamily(
            "dedup_shadow_lookups", "lookups by how a shadow space's verdict compared with the "
            "live one", labels=["space", "outcome"])
        for space, outcomes in sorted(self._tally.counts().items()):
            for outcome, n in outcomes.items():
                lookups.add_metric([space, outcome], n)
        yield lookups
        new = CounterMetricFamily("dedup_shadow_new_seeds",
                                  "seeds a shadow space matched that no live verdict matched", labels=["space"])
        for space, n in sorted(self._tally.new_seeds().items()):
            new.add_metric([space], n)
        yield new


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    _STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self._STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Outermost interceptor: request id, counters, latency, one structured log line per RPC."""

    def __init__(self, metrics: Metrics):
        self._m = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # health Watch / reflection streams: not measured
        method = handler_call_details.method
        name = method.rsplit("/", 1)[-1]
        metadata = dict(handler_call_details.invocation_metadata or ())
        behavior = handler.unary_unary
        m = self._m
        # Health probes come every few seconds from load balancers: keep them out of INFO logs.
        level = logging.DEBUG if method.startswith("/grpc.health.") else logging.INFO

        async def measured(request, context):
            rid = str(metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex[:16])
            start = time.perf_counter()
            m.requests.labels(name).inc()
            m.in_flight.inc()
            code = grpc.StatusCode.OK
            token = current_request_id.set(rid)
            try:
                response = await behavior(request, context)
                # Echoed once the call succeeded: headers sent earlier would commit the call,
                # and gRPC retries (a refused lookup, after its pushback) only uncommitted ones.
                # A failed call carries the id in its trailers (servicer._rpc).
                await context.send_initial_metadata(((REQUEST_ID_KEY, rid),))
                return response
            except asyncio.CancelledError:  # the client went away or its deadline passed
                remaining = context.time_remaining()
                code = (grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0
                        else grpc.StatusCode.CANCELLED)
                raise
            except BaseException:
                code = _code_of(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                current_request_id.reset(token)
                elapsed = time.perf_counter() - start
                m.in_flight.dec()
                m.latency.labels(name).observe(elapsed)
                if code != grpc.StatusCode.OK:
                    m.errors.labels(name, code.name).inc()
                log.log(level, "rpc", extra={"request_id": rid, "method": name, "code": code.name,
                                             "ms": round(elapsed * 1000, 2), "peer": context.peer()})

        return grpc.unary_unary_rpc_method_handler(
            measured, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _code_of(context) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:
        return None
    if isinstance(code, int):  # some grpcio versions return the raw integer
        return next((c for c in grpc.StatusCode if c.value[0] == code), None)
    return code
