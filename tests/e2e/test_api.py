"""The API end to end, through a real `dedup serve` subprocess serving the demo seed bank.

Modified copies of demo images match their labels, auth is enforced per role, every bad input
gets its status code and names its limit, health and reflection answer with no project code,
metrics are exported, and the seed lifecycle (add, duplicate, relabel, remove) shows in lookups.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from PIL import Image

from dedup.demo import DEMO_TEXTS
from dedup.errors import InvalidArgument, LimitExceeded, NotFound, PermissionDenied, Unauthenticated
from dedup.types import Item, Label
from dedup.v1 import dedup_pb2 as pb
from dedup.v1 import dedup_pb2_grpc

TOKENS = {"reader": "reader-token", "analyst": "analyst-token", "admin": "admin-token"}

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def metadata(role: str | None) -> tuple:
    return (("authorization", f"Bearer {TOKENS[role]}"),) if role else ()

CONFIG = """
demo = true
[limits]
max_image_bytes = 2097152
max_image_pixels = 4000000
max_text_chars = 2000
max_batch_items = 16
max_top_k = 50
max_message_bytes = 4194304
"""


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("api", CONFIG)


@pytest.fixture(scope="module")
def stub(server):
    with server.channel() as ch:
        yield dedup_pb2_grpc.DedupStub(ch)


@pytest.fixture(scope="module")
def reader(server):
    with server.client("reader") as c:
        yield c


@pytest.fixture(scope="module")
def analyst(server):
    with server.client("analyst") as c:
        yield c


def demo_png(name: str) -> bytes:
    import skimage.data

    return (Path(skimage.data.__file__).parent / name).read_bytes()


def modified_copies(img: Image.Image, encode_image) -> dict[str, bytes]:
    w, h = img.size
    return {
        "jpeg_q60": encode_image(img, "JPEG", quality=60),
        "half_size": encode_image(img.resize((w // 2, h // 2)), "PNG"),
        "crop_90": encode_image(img.crop((w // 20, h // 20, w - w // 20, h - h // 20)), "JPEG",
                                quality=85),
        "webp": encode_image(img, "WEBP", quality=70),
    }


def matched_labels(result) -> set[str]:
    return {v.label for v in result.verdicts if v.matched}


# ------------------------------------------------------------------ health, reflection, metrics
def test_health_serving_without_a_token(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with server.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "dedup.v1.Dedup"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lets_a_stock_client_call_stats_without_generated_code(server):
    """Discover the API by reflection, build the request from the reflected descriptor, call."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)

    with server.channel() as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        assert "dedup.v1.Dedup" in db.get_services()
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName("dedup.v1.Dedup")
        assert {"Lookup", "BatchLookup", "AddSeeds", "Reload"} <= {m.name for m in service.methods}
        method = service.methods_by_name["Stats"]
        req_cls = message_factory.GetMessageClass(method.input_type)
        resp_cls = message_factory.GetMessageClass(method.output_type)
        call = ch.unary_unary("/dedup.v1.Dedup/Stats", request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)
        resp = call(req_cls(), metadata=metadata("reader"), timeout=10)
        assert resp.seeds_active >= 8  # the demo bank: 5 images + 3 texts
        assert {s.space for s in resp.spaces} >= {"image:copydet-lite0", "text:minilm-l6"}


def test_metrics_endpoint_exports_rpc_batch_and_index_metrics(server, reader):
    reader.lookup(text="hello metrics")
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                  timeout=10).read().decode()
    assert 'dedup_requests_total{method="Lookup"}' in body
    assert 'dedup_request_latency_seconds_bucket{le="0.005",method="Lookup"}' in body
    assert "dedup_batch_size_bucket" in body
    assert 'dedup_index_vectors{space="image:copydet-lite0"}' in body


def test_request_id_is_echoed_and_logged(server, stub):
    call = stub.Stats.with_call(pb.StatsRequest(), timeout=10,
                                metadata=metadata("reader") + (("x-request-id", "req-abc-123"),))
    _, rpc = call
    assert ("x-request-id", "req-abc-123") in tuple(rpc.initial_metadata())
    lines = [json.loads(x) for x in server.log_text().splitlines() if "req-abc-123" in x]
    assert lines and lines[-1]["method"] == "Stats" and lines[-1]["code"] == "OK"


# ------------------------------------------------------------------ lookups
def test_modified_copies_of_demo_images_match_their_labels(reader, skimage_images, encode):
    cases = {"chelsea": "demo.animal_cruelty", "astronaut": "demo.impersonation",
             "coffee": "demo.spam", "rocket": "demo.terror_propaganda"}
    misses = []
    for name, label in cases.items():
        for variant, data in modified_copies(skimage_images[name], encode).items():
            result = reader.lookup(image=data)
            if label not in matched_labels(result):
                misses.append((name, variant, [(v.label, round(v.score, 3)) for v in result.verdicts]))
    assert not misses, misses


def test_exact_demo_bytes_report_the_exact_match(reader):
    result = reader.lookup(image=demo_png("chelsea.png"))
    assert result.exact_match is not None
    assert result.snapshot_version is not None
    assert result.neighbors[0].seed_id == result.exact_match
    assert "demo.animal_cruelty" in matched_labels(result)


def test_unrelated_image_matches_nothing(reader, skimage_images, encode):
    for name in ("brick", "moon", "page"):
        result = reader.lookup(image=encode(skimage_images[name], "PNG"))
        assert not matched_labels(result), (name, result.verdicts)
        assert result.exact_match is None


def test_reworded_demo_text_matches_and_unrelated_text_does_not(reader):
    text, labels = DEMO_TEXTS[0]
    near = "CONGRATULATIONS!! you won a $1000 gift card - claim now at bit.ly/claim-prize"
    assert labels[0].name in matched_labels(reader.lookup(text=near))
    assert not matched_labels(reader.lookup(text="The committee meets on Tuesday to review the budget."))


def test_label_filter_and_top_k_shape_the_response(reader):
    data = demo_png("motorcycle_left.png")
    full = reader.lookup(image=data, top_k=3)
    assert {"demo.stolen_goods", "demo.spam"} <= matched_labels(full)
    only = reader.lookup(image=data, top_k=3, labels=["demo.spam"])
    assert {v.label for v in only.verdicts} == {"demo.spam"}
    one = reader.lookup(image=data, top_k=1).neighbors  # k per space, plus the exact match
    per_space = {n.space: sum(m.space == n.space for m in one) for n in one}
    assert per_space and max(per_space.values()) == 1, per_space


def test_threshold_override_turns_a_match_off(reader, skimage_images, encode):
    data = modified_copies(skimage_images["coffee"], encode)["jpeg_q60"]
    assert "demo.spam" in matched_labels(reader.lookup(image=data))
    assert not matched_labels(reader.lookup(image=data, threshold=9.99))


def test_batch_lookup_one_bad_item_does_not_fail_the_batch(reader):
    items = [Item(image=demo_png("chelsea.png")), Item(image=b"\x89PNG\r\n\x1a\nnot really"),
             Item(text=DEMO_TEXTS[1][0]), Item()]
    results = reader.batch_lookup(items)
    assert len(results) == 4
    assert "demo.animal_cruelty" in matched_labels(results[0])
    assert isinstance(results[1], InvalidArgument) and "cannot parse" in str(results[1])
    assert "demo.scam" in matched_labels(results[2])
    assert isinstance(results[3], InvalidArgument) and "neither" in str(results[3])


# ------------------------------------------------------------------ auth
def test_missing_token_is_unauthenticated(server, stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Lookup(pb.LookupRequest(item=pb.Item(text="x")), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with server.client(None) as anon, pytest.raises(Unauthenticated):
        anon.stats()


def test_wrong_role_is_permission_denied(server, reader, analyst):
    with pytest.raises(PermissionDenied):
        reader.add_seeds([Item(text="reader may not write")], [Label("x")])
    with pytest.raises(PermissionDenied):
        reader.remove_seeds([1])
    with pytest.raises(PermissionDenied):
        analyst.reload()
    with server.client("admin") as admin:
        assert admin.stats()["seeds_active"] >= 8


# ------------------------------------------------------------------ bad input -> status codes
def _code(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_every_bad_input_gets_its_code_and_names_the_limit(stub):
    md = metadata("reader")
    look = lambda **kw: stub.Lookup(pb.LookupRequest(**kw), metadata=md, timeout=20)  # noqa: E731
    bad = {
        "garbage image": (lambda: look(item=pb.Item(image=b"definitely not an image")),
                          grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image"),
        "empty item": (lambda: look(item=pb.Item()), grpc.StatusCode.INVALID_ARGUMENT, "neither"),
        "pdq not hex": (lambda: look(item=pb.Item(pdq="zz" * 32)),
                        grpc.StatusCode.INVALID_ARGUMENT, "bad PDQ hex"),
        "pdq length": (lambda: look(item=pb.Item(pdq="ab" * 31)),
                       grpc.StatusCode.INVALID_ARGUMENT, "64 hex digits"),
        "pdq and image": (lambda: look(item=pb.Item(pdq="ab" * 32, image=demo_png("coffee.png"))),
                          grpc.StatusCode.INVALID_ARGUMENT, "not both"),
        "pixels": (lambda: look(item=pb.Item(image=_png(2500, 2000))),
                   grpc.StatusCode.INVALID_ARGUMENT, "max_image_pixels=4000000"),
        "image bytes": (lambda: look(item=pb.Item(image=b"\x89PNG\r\n\x1a\n" + b"\0" * 2_200_000)),
                        grpc.StatusCode.INVALID_ARGUMENT, "max_image_bytes=2097152"),
        "text length": (lambda: look(item=pb.Item(text="a" * 2001)),
                        grpc.StatusCode.INVALID_ARGUMENT, "max_text_chars=2000"),
        "top_k": (lambda: look(item=pb.Item(text="x"), top_k=51),
                  grpc.StatusCode.INVALID_ARGUMENT, "max_top_k=50"),
        "threshold": (lambda: look(item=pb.Item(text="x"), threshold=17.0),
                      grpc.StatusCode.INVALID_ARGUMENT, "threshold"),
        "batch size": (lambda: stub.BatchLookup(
            pb.BatchLookupRequest(items=[pb.Item(text=f"t{i}") for i in range(17)]),
            metadata=md, timeout=20), grpc.StatusCode.INVALID_ARGUMENT, "max_batch_items=16"),
        "empty batch": (lambda: stub.BatchLookup(pb.BatchLookupRequest(), metadata=md, timeout=20),
                        grpc.StatusCode.INVALID_ARGUMENT, "no items"),
        "message size": (lambda: look(item=pb.Item(image=b"\0" * 5_000_000)),
                         grpc.StatusCode.RESOURCE_EXHAUSTED, "4194304"),
        "unknown seed": (lambda: stub.GetSeed(pb.GetSeedRequest(seed_id=10**12), metadata=md,
                                              timeout=20), grpc.StatusCode.NOT_FOUND, "does not exist"),
        "page token": (lambda: stub.ListSeeds(pb.ListSeedsRequest(page_token="zz"), metadata=md,
                                              timeout=20), grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
        "seed without labels": (lambda: stub.AddSeeds(
            pb.AddSeedsRequest(items=[pb.Item(text="no labels")]), metadata=metadata("analyst"),
            timeout=20), grpc.StatusCode.INVALID_ARGUMENT, "label"),
    }
    wrong = {}
    for name, (fn, want_code, want_text) in bad.items():
        code, details = _code(fn)
        if code != want_code or want_text not in (details or ""):
            wrong[name] = (code, details)
    assert not wrong, wrong


def test_deadline_is_honoured(stub):
    code, _ = _code(lambda: stub.BatchLookup(
        pb.BatchLookupRequest(items=[pb.Item(image=demo_png("astronaut.png"))] * 8),
        metadata=metadata("reader"), timeout=0.005))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_client_raises_typed_errors_naming_the_limit(reader):
    with pytest.raises(LimitExceeded) as e:
        reader.lookup(text="b" * 5000)
    assert e.value.limit == "max_text_chars=2000"
    assert e.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(NotFound):
        reader.get_seed(10**12)


def test_partner_pdq_hash_seed_matches_an_upload_through_the_api(reader, analyst, skimage_images,
                                                                   encode):
    from dedup.embed.pdq import PdqEmbedder, to_hex

    img = skimage_images["immunohistochemistry"]
    partner_hash = to_hex(PdqEmbedder().embed_images([img]))[0]
    [(sid, created)] = analyst.add_seeds([Item(pdq=partner_hash)], [Label("partner.csam_hash", 5)],
                                         source="partner-share")
    assert created
    result = reader.lookup(image=encode(img, "JPEG", quality=75))
    assert "partner.csam_hash" in matched_labels(result)
    assert any(n.seed_id == sid and n.space == "pdq" for n in result.neighbors)
    assert reader.lookup(pdq=partner_hash).exact_match == sid


# ------------------------------------------------------------------ seed lifecycle
def test_seed_lifecycle_add_duplicate_relabel_remove(reader, analyst, skimage_images, encode):
    img = skimage_images["camera"]
    original = encode(img, "PNG")
    copy = encode(img.resize((256, 256)), "JPEG", quality=70)
    assert not matched_labels(reader.lookup(image=copy))

    (added,) = analyst.add_seeds([Item(image=original)], [Label("test.lifecycle", 2)],
                                 source="CASE-1", note="e2e")
    seed_id, created = added
    assert created
    assert "test.lifecycle" in matched_labels(reader.lookup(image=copy))
    assert analyst.add_seeds([Item(image=original)], [Label("test.lifecycle", 2)]) == [(seed_id, False)]

    seed = reader.get_seed(seed_id)
    assert (seed.source, seed.note, seed.modalities) == ("CASE-1", "e2e", ("image",))
    assert [s.seed_id for s in reader.iter_seeds("test.lifecycle")] == [seed_id]
    assert reader.stats()["labels"]["test.lifecycle"] == 1

    analyst.relabel(seed_id, [Label("test.relabelled", 4)])
    labels = matched_labels(reader.lookup(image=copy))
    assert "test.relabelled" in labels and "test.lifecycle" not in labels

    assert analyst.remove_seeds([seed_id]) == [seed_id]
    after = reader.lookup(image=copy)
    assert seed_id not in {n.seed_id for n in after.neighbors}  # removed: never evidence again
    assert not matched_labels(after)
    assert reader.get_seed(seed_id).removed
    assert analyst.remove_seeds([seed_id]) == []


def test_list_seeds_pages_through_the_bank(reader):
    seeds, token = reader.list_seeds(page_size=3)
    assert len(seeds) == 3 and token
    everything = list(reader.iter_seeds(page_size=3))
    ids = [s.seed_id for s in everything]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) >= 8
    assert {s.seed_id for s in reader.iter_seeds("demo.scam")} <= set(ids)


# ------------------------------------------------------------------ the analyst tool
def _analyst(server, *args, role="analyst"):
    cmd = [sys.executable, "-m", "tools.analyst", "--target", server.target,
           "--token", TOKENS[role], *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_analyst_tool_json_and_tables(server, tmp_path, skimage_images, encode):
    stats = _analyst(server, "--json", "stats")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["seeds_active"] >= 8

    path = tmp_path / "clock.png"
    path.write_bytes(encode(skimage_images["clock"], "PNG"))
    add = _analyst(server, "--json", "add", str(path), "--label", "test.tool:3", "--source", "T-9")
    assert add.returncode == 0, add.stderr
    (row,) = json.loads(add.stdout)
    assert row["created"] is True

    table = _analyst(server, "list", "--label", "test.tool")
    assert table.returncode == 0 and "test.tool:3" in table.stdout and "seed_id" in table.stdout

    lookup = _analyst(server, "--json", "lookup", str(path))
    assert json.loads(lookup.stdout)[0]["exact_match"] == row["seed_id"]

    denied = _analyst(server, "reload", role="reader")
    assert denied.returncode == 4 and "PermissionDenied" in denied.stderr
    missing = _analyst(server, "get", "999999999")
    assert missing.returncode == 3
