"""Errors over a real gRPC server: an unexpected exception is INTERNAL with a request id and no
internal text, fails only the item (or caller) it belongs to, and typed errors keep their type.

The faults are injected into the engine (the service layer is what is under test here); the
server, the client, the models and the store are real.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from dedup.client import DedupClient
from dedup.config import load_config
from dedup.errors import DedupError, ModelMismatch
from dedup.service.server import DedupServer
from dedup.types import Item, Label

pytestmark = pytest.mark.slow

SCAM = Label("spam.scam", 3)
SECRET = "/srv/secret/path leaked"


class Running:
    """A DedupServer on 127.0.0.1 in a background event loop, for the length of a test."""

    def __init__(self, tmp_path, **overrides):
        self.config = load_config(None, data_dir=str(tmp_path / "data"), server__port=0,
                                  server__metrics_port=None, server__tokens={"adm": "admin"},
                                  spaces={"text:minilm-l6": {"model": "text:minilm-l6",
                                                             "threshold": 0.8}},
                                  **overrides)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._run(self._make())  # grpc.aio objects belong to their loop
        self.port = self._run(self.server.start())
        self._run(asyncio.wait_for(self.server.wait_loaded(), 300))

    async def _make(self) -> DedupServer:
        return DedupServer(self.config)

    def _run(self, coro, timeout: float = 320):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self) -> DedupClient:
        return DedupClient(f"127.0.0.1:{self.port}", "adm", timeout=60)

    def close(self) -> None:
        self._run(self.server.stop(1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture()
def running(tmp_path):
    r = Running(tmp_path, batcher__max_wait_ms=200.0)
    yield r
    r.close()


def poison(engine, monkeypatch):
    """Make the engine fail, as a bug would, on any batch holding a text with 'poison'."""
    real = engine.lookup_prepared

    def failing(prepared, params):
        if any(p.text and "poison" in p.text for p in prepared):
            raise RuntimeError(SECRET)
        return real(prepared, params)

    monkeypatch.setattr(engine, "lookup_prepared", failing)


def test_unexpected_error_is_internal_with_a_request_id_and_no_internal_text(running, monkeypatch):
    poison(running.server.engine, monkeypatch)
    with running.client() as client:
        with pytest.raises(DedupError) as info:
            client.lookup(text="poison pill", request_id="req-4242")
    rpc = info.value.__cause__
    assert rpc.code() == grpc.StatusCode.INTERNAL
    assert "req-4242" in rpc.details() and SECRET not in rpc.details()
    assert "RuntimeError" not in rpc.details()


def test_a_failing_item_fails_alone_in_a_batch_and_in_a_micro_batch(running, monkeypatch):
    with running.client() as client:
        [(seed, _)] = client.add_seeds([Item(text="claim your prize at the post office")], [SCAM])
        poison(running.server.engine, monkeypatch)
        good, bad, good2 = client.batch_lookup([
            Item(text="claim your prize at the post office!"), Item(text="poison"),
            Item(text="Claim your prize at the post office")])
        assert good.neighbors[0].seed_id == seed and good2.neighbors[0].seed_id == seed
        assert isinstance(bad, DedupError) and bad.grpc_code == grpc.StatusCode.INTERNAL
        assert SECRET not in str(bad)

        # Concurrent callers sharing one micro-batch (200 ms window): only the poisoned fails.
        outcomes: dict[str, object] = {}

        def call(name: str, text: str) -> None:
            try:
                outcomes[name] = client.lookup(text=text)
            except DedupError as e:
                outcomes[name] = e

        threads = [threading.Thread(target=call, args=(n, t)) for n, t in
                   (("a", "claim your prize at the post office"), ("b", "poison again"),
                    ("c", "the weather is mild today"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert outcomes["a"].neighbors[0].seed_id == seed
    assert isinstance(outcomes["b"], DedupError)
    assert outcomes["b"].grpc_code == grpc.StatusCode.INTERNAL
    assert not isinstance(outcomes["c"], DedupError)
    sizes = {s.name: s.value for s in running.server.metrics.batch_size.collect()[0].samples}
    assert sizes["dedup_batch_size_count"] < sizes["dedup_batch_size_sum"]  # some batch was shared


def test_model_mismatch_reaches_the_client_as_itself(running):
    with running.client() as client:
        client.add_seeds([Item(text="a seed before the snapshot")], [SCAM])
        version = client.publish_snapshot()
        engine = running.server.engine
        manifest = engine.live.root / "snapshots" / version / "manifest.json"
        model_id = engine.spaces["text:minilm-l6"].model_id
        manifest.write_text(manifest.read_text().replace(model_id, "text:minilm-l6@elsewhere"))
        with pytest.raises(ModelMismatch, match="elsewhere") as info:
            client.reload()
    assert info.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION
