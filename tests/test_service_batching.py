"""The micro-batcher in front of the real Engine: concurrent Lookups share embedding batches and
get exactly the answers a direct Engine.lookup gives (real models, real LMDB, real aio server)."""

from __future__ import annotations

import asyncio

import pytest

from dedup.config import load_config
from dedup.service.server import DedupServer
from dedup.types import Item
from dedup.v1 import dedup_pb2 as pb
from dedup.v1 import dedup_pb2_grpc

pytestmark = pytest.mark.slow


def test_concurrent_lookups_share_batches_and_match_direct_engine_results(tmp_path, skimage_images,
                                                                          encode):
    import grpc

    config = load_config(None, demo=True, data_dir=str(tmp_path), server__port=0,
                         server__metrics_port=None, server__tokens={"t": "reader"},
                         batcher__max_wait_ms=50.0, batcher__max_batch=16)
    names = ["chelsea", "coffee", "astronaut", "brick", "camera", "rocket", "moon", "clock"]
    images = [encode(skimage_images[n].resize((320, 240)), "JPEG", quality=75) for n in names]
    items = [Item(image=b) for b in images] + [Item(text="claim your free gift card now"),
                                               Item(text="the weather is nice today")]

    async def main():
        server = DedupServer(config)
        port = await server.start()
        try:
            await asyncio.wait_for(server.wait_loaded(), 300)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = dedup_pb2_grpc.DedupStub(ch)
                md = (("authorization", "Bearer t"),)
                await stub.Stats(pb.StatsRequest(), metadata=md, timeout=30)
                responses = await asyncio.gather(*(
                    stub.Lookup(pb.LookupRequest(item=pb.Item(image=i.image or b"", text=i.text or ""),
                                                 top_k=5), metadata=md, timeout=120)
                    for i in items))
            loop = asyncio.get_running_loop()
            direct = await loop.run_in_executor(None, lambda: server.engine.lookup(items, top_k=5))
            sizes = {s.name: s.value for s in server.metrics.batch_size.collect()[0].samples}
            return responses, direct, sizes
        finally:
            await server.stop(1)

    responses, direct, sizes = asyncio.run(main())
    assert sizes["dedup_batch_size_sum"] == len(items)  # every item went through the batcher
    assert sizes["dedup_batch_size_count"] < len(items)  # ... in fewer passes than items
    for resp, want in zip(responses, direct):
        assert (resp.exact_match if resp.HasField("exact_match") else None) == want.exact_match
        assert [n.seed_id for n in resp.neighbors] == [n.seed_id for n in want.neighbors]
        assert [round(n.score, 4) for n in resp.neighbors] == [round(n.score, 4) for n in want.neighbors]
        assert [(v.label, v.matched) for v in resp.verdicts] == [(v.label, v.matched) for v in want.verdicts]
