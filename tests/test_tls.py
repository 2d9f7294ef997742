"""TLS and mTLS on the real aio server: certificates made with the openssl CLI, handshakes over
loopback (the health service answers without models, so no engine is needed here)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dedup.config import load_config
from dedup.service.server import DedupServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server cert for 127.0.0.1/localhost, and a client cert, all signed by the CA."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=dedup-test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)
    return {p.stem + p.suffix: p for p in d.iterdir()}


def _health(target: str, creds: grpc.ChannelCredentials | None) -> str:
    async def check():
        ch = (grpc.aio.secure_channel(target, creds) if creds
              else grpc.aio.insecure_channel(target))
        async with ch:
            stub = health_pb2_grpc.HealthStub(ch)
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.aio.AioRpcError as e:
                return e.code().name
    return asyncio.run(check())


def _with_server(config, fn):
    release = threading.Event()

    def never_loads(_config):
        release.wait(30)
        raise RuntimeError("test finished")

    async def main():
        server = DedupServer(config, engine_factory=never_loads)
        port = await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, f"127.0.0.1:{port}")
        finally:
            release.set()
            await server.stop(0)

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_tls_server_refuses_plaintext_and_serves_verified_clients(tmp_path):
    pki = make_pki(tmp_path)
    config = load_config(None, data_dir=str(tmp_path / "data"), server__port=0,
                         server__metrics_port=None,
                         server__tls={"cert_file": str(pki["server.pem"]),
                                      "key_file": str(pki["server.key"])})
    ca = pki["ca.pem"].read_bytes()

    def probe(target):
        return (_health(target, None), _health(target, grpc.ssl_channel_credentials(ca)))

    plaintext, tls = _with_server(config, probe)
    assert plaintext == "UNAVAILABLE"
    assert tls == "NOT_SERVING"  # handshake fine; the (never loading) engine keeps it not ready


def test_mtls_requires_a_client_certificate_signed_by_the_ca(tmp_path):
    pki = make_pki(tmp_path)
    config = load_config(None, data_dir=str(tmp_path / "data"), server__port=0,
                         server__metrics_port=None,
                         server__tls={"cert_file": str(pki["server.pem"]),
                                      "key_file": str(pki["server.key"]),
                                      "client_ca_file": str(pki["ca.pem"])})
    ca = pki["ca.pem"].read_bytes()
    with_cert = grpc.ssl_channel_credentials(ca, pki["client.key"].read_bytes(),
                                             pki["client.pem"].read_bytes())

    def probe(target):
        return (_health(target, grpc.ssl_channel_credentials(ca)), _health(target, with_cert))

    without, with_ = _with_server(config, probe)
    assert without == "UNAVAILABLE"
    assert with_ == "NOT_SERVING"
