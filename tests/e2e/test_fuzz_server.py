"""Fuzzing the service over the wire: generated requests (odd fields, corrupted images, raw
garbage bytes) to every RPC of a real server. Every answer is OK or a deliberate status code:
never UNKNOWN, never INTERNAL, and the server keeps serving."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dedup.v1 import dedup_pb2 as pb
from tools.localserver import metadata

pytestmark = pytest.mark.slow

CONFIG = """
[spaces."pdq"]
model = "pdq"
threshold = 0.9
"""
NEVER = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
        buf, "PNG")
    return buf.getvalue()


PNG = _png()

texts = st.text(max_size=200)
images = st.one_of(st.just(b""), st.just(PNG), st.binary(max_size=300),
                   st.builds(lambda cut, flip: PNG[:cut] + bytes([flip]) + PNG[cut + 1:],
                             st.integers(0, len(PNG) - 1), st.integers(0, 255)))
items = st.builds(lambda i, t, h: pb.Item(image=i, text=t, pdq=h), images, texts,
                  st.one_of(st.just(""), st.text(max_size=70),
                            st.text("0123456789abcdef", min_size=64, max_size=64)))
labels = st.builds(lambda n, s: pb.Label(name=n, severity=s), st.text(max_size=40),
                   st.integers(-5, 2**31 - 1))
u64 = st.integers(0, 2**64 - 1)
requests = st.one_of(
    st.builds(lambda it, k, ls: ("Lookup", pb.LookupRequest(item=it, top_k=k, labels=ls)),
              items, st.integers(0, 2**32 - 1), st.lists(texts, max_size=3)),
    st.builds(lambda its, k: ("BatchLookup", pb.BatchLookupRequest(items=its, top_k=k)),
              st.lists(items, max_size=5), st.integers(0, 300)),
    st.builds(lambda its, ls, src, note: ("AddSeeds", pb.AddSeedsRequest(
        items=its, labels=ls, source=src, note=note)),
        st.lists(items, max_size=3), st.lists(labels, max_size=3), texts, texts),
    st.builds(lambda ids: ("RemoveSeeds", pb.RemoveSeedsRequest(seed_ids=ids)),
              st.lists(u64, max_size=4)),
    st.builds(lambda i, ls: ("RelabelSeed", pb.RelabelSeedRequest(seed_id=i, labels=ls)),
              u64, st.lists(labels, max_size=3)),
    st.builds(lambda i: ("GetSeed", pb.GetSeedRequest(seed_id=i)), u64),
    st.builds(lambda lb, tok, n: ("ListSeeds", pb.ListSeedsRequest(
        label=lb, page_token=tok, page_size=n)), texts, texts, st.integers(0, 2**32 - 1)),
)
garbage = st.tuples(st.sampled_from(["Lookup", "BatchLookup", "AddSeeds", "ListSeeds",
                                     "GetSeed", "RemoveSeeds"]), st.binary(max_size=200))


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("fuzz", config_text=CONFIG)


def _call(channel, method: str, body: bytes) -> grpc.StatusCode:
    raw = channel.unary_unary(f"/dedup.v1.Dedup/{method}", request_serializer=None,
                              response_deserializer=None)
    try:
        raw(body, metadata=metadata("admin"), timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(requests)
def test_generated_requests_get_deliberate_codes(server, request_pair):
    method, message = request_pair
    with server.channel() as ch:
        code = _call(ch, method, message.SerializeToString())
    assert code not in NEVER, (method, message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(garbage)
def test_garbage_bytes_get_deliberate_codes(server, pair):
    method, body = pair
    with server.channel() as ch:
        assert _call(ch, method, body) not in NEVER


def test_the_server_still_serves_after_the_fuzzing(server):
    with server.client("reader") as reader:
        assert reader.health() == "SERVING"
        reader.lookup(image=PNG)
