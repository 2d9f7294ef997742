"""service/convert.py: typed errors <-> status codes in one table; values survive the proto trip."""

from __future__ import annotations

import grpc
import pytest

from dedup.config import Limits
from dedup.errors import (DedupError, InvalidArgument, InvalidItem, LimitExceeded, ModelMismatch,
                          NotFound, Overloaded, PermissionDenied, SnapshotError, StoreError,
                          Unauthenticated)
from dedup.service import convert
from dedup.types import Label, LookupResult, Neighbor, Seed, Verdict
from dedup.v1 import dedup_pb2 as pb


@pytest.mark.parametrize("error, code", [
    (InvalidItem("bad png"), grpc.StatusCode.INVALID_ARGUMENT),
    (LimitExceeded("too big", "max_image_pixels=10"), grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument("k"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("seed 3"), grpc.StatusCode.NOT_FOUND),
    (Overloaded("queue"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("role"), grpc.StatusCode.PERMISSION_DENIED),
    (ModelMismatch("m"), grpc.StatusCode.FAILED_PRECONDITION),
    (SnapshotError("s"), grpc.StatusCode.FAILED_PRECONDITION),
    (StoreError("disk"), grpc.StatusCode.INTERNAL),
])
def test_each_typed_error_has_its_status_code(error, code):
    assert convert.status_for(error) == (code, str(error))


def test_unexpected_exception_is_internal_without_leaking_its_text():
    code, message = convert.status_for(RuntimeError("secret path /etc/x"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in message


def test_limit_survives_the_round_trip_to_the_client():
    err = LimitExceeded("text is 9 characters", limit="max_text_chars=5")
    back = convert.error_from_status(*convert.status_for(err))
    assert isinstance(back, LimitExceeded) and back.limit == "max_text_chars=5"
    item_err = convert.item_error_from_proto(convert.item_error_to_proto(err))
    assert isinstance(item_err, LimitExceeded) and item_err.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert type(convert.error_from_status(grpc.StatusCode.UNAVAILABLE, "x")) is Overloaded
    assert type(convert.error_from_status(grpc.StatusCode.UNKNOWN, "x")) is DedupError


def test_lookup_params_enforce_top_k_and_threshold():
    limits = Limits(max_top_k=20)
    assert convert.lookup_params(pb.LookupRequest(), limits) == convert.LookupParams(10, None, None)
    p = convert.lookup_params(pb.LookupRequest(top_k=5, labels=["a"], threshold=0.5), limits)
    assert p == convert.LookupParams(5, ("a",), 0.5)
    with pytest.raises(LimitExceeded, match="max_top_k=20"):
        convert.lookup_params(pb.LookupRequest(top_k=21), limits)
    with pytest.raises(InvalidArgument, match="threshold"):
        convert.lookup_params(pb.LookupRequest(threshold=11.5), limits)
    with pytest.raises(LimitExceeded, match="max_batch_items=64"):
        Limits().check_batch(65)
    with pytest.raises(InvalidArgument, match="no items"):
        Limits().check_batch(0)


def test_lookup_result_round_trips_with_evidence_and_exact_match():
    n1 = Neighbor(7, "image:effnet-lite0", 0.97, (Label("spam", 2),))
    n2 = Neighbor(9, "text:minilm-l6", 0.91, (Label("scam", 4), Label("spam", 1)))
    r = LookupResult(
        verdicts=(Verdict("spam", True, 0.97, 0.17, (n1,), 2), Verdict("scam", False, 0.91, -0.01, (n2,), 4)),
        neighbors=(n1, n2), exact_match=7, snapshot_version="v3", spaces=("image:effnet-lite0",))
    back = convert.lookup_result_from_proto(convert.lookup_result_to_proto(r))
    assert back.exact_match == 7 and back.snapshot_version == "v3"
    assert [v.label for v in back.verdicts] == ["spam", "scam"]
    assert back.verdicts[0].evidence[0].seed_id == 7
    assert convert.lookup_result_to_proto(r).verdicts[1].evidence_seed_ids == [9]
    assert pytest.approx(back.neighbors[1].score, abs=1e-6) == 0.91
    none = convert.lookup_result_to_proto(LookupResult((), (), None))
    assert not none.HasField("exact_match")


def test_seed_round_trips_including_optional_fields():
    s = Seed(5, (Label("a", 3),), "CASE-1", "n", 1700000000.5, "ab" * 32, ("text",),
             has_content=True, removed=True, removed_at=1700000100.0, text="hello")
    assert convert.seed_from_proto(convert.seed_to_proto(s)) == s
    bare = Seed(6, (Label("a", 1),), "", "", 1.0, "cd" * 32, ("image",))
    assert convert.seed_from_proto(convert.seed_to_proto(bare)) == bare


def test_batch_results_keep_order_and_per_item_errors():
    ok = LookupResult((), (), 3, "v1")
    msg = convert.batch_results_to_proto([ok, InvalidItem("corrupt"), ok], "v1")
    back = convert.batch_results_from_proto(msg)
    assert back[0].exact_match == 3 and back[2].exact_match == 3
    assert isinstance(back[1], InvalidArgument) and "corrupt" in str(back[1])


def test_label_severity_absent_is_one_but_an_explicit_zero_is_kept_for_the_rule():
    from dedup.types import check_labels

    absent = pb.Label.FromString(pb.Label(name="spam.scam").SerializeToString())
    assert convert.label_from_proto(absent) == Label("spam.scam", 1)
    zero = pb.Label.FromString(pb.Label(name="spam.scam", severity=0).SerializeToString())
    assert convert.label_from_proto(zero) == Label("spam.scam", 0)
    with pytest.raises(InvalidArgument, match="severity must be an int in 1..5, got 0"):
        check_labels([convert.label_from_proto(zero)])


def test_audit_values_survive_the_proto_trip():
    from dedup.types import (AddResult, OpEntry, OpFilter, OpKind, RemoveResult, RemoveStatus,
                             SeedContent, SeedFilter)

    op = OpEntry(7, OpKind.RESTORE, 3, 1.5e9, (Label("a.b", 2),), "alice", "why",
                 (Label("c", 1),))
    assert convert.op_from_proto(convert.op_to_proto(op)) == op
    results = [RemoveResult(1, RemoveStatus.REMOVED), RemoveResult(2, RemoveStatus.NOT_FOUND),
               RemoveResult(3, RemoveStatus.ALREADY_REMOVED)]
    msg = convert.remove_results_to_proto(results)
    assert list(msg.removed_ids) == [1] and convert.remove_results_from_proto(msg) == results
    added = [AddResult(4, False, True, (Label("x", 3),)), InvalidItem("bad")]
    back = convert.add_results_from_proto(convert.add_results_to_proto(added))
    assert back[0] == (4, False) and back[0].labels_merged and back[0].labels == (Label("x", 3),)
    assert isinstance(back[1], InvalidArgument) and "bad" in str(back[1])
    where = OpFilter(actor="bob", kinds=(OpKind.REMOVE, OpKind.ADD), since=1.0, until=2.0,
                     label="a.b", seed_id=0)
    assert convert.op_filter(convert.op_filter_to_proto(where, "9", 5)) == where
    seeds = SeedFilter(label="a", source="case", added_by="al", created_after=3.0,
                       include_removed=True)
    assert convert.seed_filter(convert.seed_filter_to_proto(seeds)) == seeds
    content = SeedContent(5, b"\x89PNG", "image/png")
    assert convert.content_from_proto(convert.content_to_proto(content)) == content


def test_stats_carry_the_limits_clients_chunk_by():
    from dedup.types import EngineStats

    stats = EngineStats(1, 0, {"a": 1}, 3, "v1", 2, {})
    got = convert.stats_from_proto(convert.stats_to_proto(stats, Limits(max_batch_items=7)))
    assert got["limits"]["max_batch_items"] == 7
    assert got["limits"]["max_reason_chars"] == Limits().max_reason_chars
