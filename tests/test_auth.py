"""Bearer-token auth: roles per RPC, enforced by the real interceptor chain on a loopback server.

The server here has no engine loaded yet (models load in the e2e tests), so an authorised call
answers UNAVAILABLE ("loading") while a refused one answers UNAUTHENTICATED / PERMISSION_DENIED:
the interceptor decides before any handler runs.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dedup.config import load_config
from dedup.errors import PermissionDenied, Unauthenticated
from dedup.service.auth import METHOD_ROLES, Authenticator, required_role
from dedup.service.server import DedupServer
from dedup.v1 import dedup_pb2 as pb
from dedup.v1 import dedup_pb2_grpc

TOKENS = {"r-tok": "reader", "a-tok": "analyst", "adm-tok": "admin"}


def test_roles_nest_reader_analyst_admin():
    auth = Authenticator(TOKENS)
    md = lambda t: [("authorization", f"Bearer {t}")]  # noqa: E731
    assert auth.authorize("/dedup.v1.Dedup/Lookup", md("r-tok")).role == "reader"
    assert auth.authorize("/dedup.v1.Dedup/AddSeeds", md("a-tok")).role == "analyst"
    assert auth.authorize("/dedup.v1.Dedup/Reload", md("adm-tok")).role == "admin"
    assert auth.authorize("/dedup.v1.Dedup/Lookup", md("adm-tok")).role == "admin"
    with pytest.raises(PermissionDenied, match="needs analyst"):
        auth.authorize("/dedup.v1.Dedup/AddSeeds", md("r-tok"))
    with pytest.raises(PermissionDenied, match="needs admin"):
        auth.authorize("/dedup.v1.Dedup/Reload", md("a-tok"))


def test_missing_malformed_or_unknown_token_is_unauthenticated():
    auth = Authenticator(TOKENS)
    with pytest.raises(Unauthenticated, match="needs a bearer token"):
        auth.authorize("/dedup.v1.Dedup/Lookup", [])
    with pytest.raises(Unauthenticated, match="Bearer"):
        auth.authorize("/dedup.v1.Dedup/Lookup", [("authorization", "Basic r-tok")])
    with pytest.raises(Unauthenticated, match="unknown token"):
        auth.authorize("/dedup.v1.Dedup/Lookup", [("authorization", "Bearer nope")])


def test_anonymous_reader_only_when_enabled():
    auth = Authenticator(TOKENS, allow_anonymous_reader=True)
    assert auth.authorize("/dedup.v1.Dedup/Stats", []).role == "reader"
    for method in ("Lookup", "BatchLookup"):
        assert auth.authorize(f"/dedup.v1.Dedup/{method}", []).actor == "anonymous"
    # seeds themselves (texts, notes, sources, contents, history) need a token
    for method in ("GetSeed", "ListSeeds", "GetSeedContent", "GetSeedHistory", "ListOps",
                   "WhoAmI"):
        with pytest.raises(Unauthenticated):
            auth.authorize(f"/dedup.v1.Dedup/{method}", [])
    # a write without credentials is unauthenticated (not merely denied): log in first
    with pytest.raises(Unauthenticated):
        auth.authorize("/dedup.v1.Dedup/AddSeeds", [])
    with pytest.raises(PermissionDenied):
        auth.authorize("/dedup.v1.Dedup/AddSeeds", [("authorization", "Bearer r-tok")])
    with pytest.raises(Unauthenticated):
        Authenticator(TOKENS).authorize("/dedup.v1.Dedup/Stats", [])


def test_actor_names_the_role_but_never_the_token():
    p = Authenticator(TOKENS).authorize("/dedup.v1.Dedup/Lookup", [("authorization", "Bearer a-tok")])
    assert p.actor.startswith("analyst:") and "a-tok" not in p.actor


def test_tokens_map_to_a_name_the_op_log_records():
    auth = Authenticator({"t1": {"role": "analyst", "name": "alice"}, "t2": "reader",
                          "t3": load_config(None, server__tokens={"t3": {"role": "admin",
                                                                      "name": "root"}})
                          .server.tokens["t3"]})
    md = lambda t: [("authorization", f"Bearer {t}")]  # noqa: E731
    alice = auth.authorize("/dedup.v1.Dedup/RestoreSeed", md("t1"))
    assert (alice.role, alice.actor) == ("analyst", "alice")
    assert auth.authorize("/dedup.v1.Dedup/Reload", md("t3")).actor == "root"
    unnamed = auth.authorize("/dedup.v1.Dedup/WhoAmI", md("t2"))
    assert unnamed.actor.startswith("reader:") and "t2" not in unnamed.actor
    with pytest.raises(PermissionDenied, match="needs analyst"):
        auth.authorize("/dedup.v1.Dedup/GetSeedContent", md("t2"))


def test_every_dedup_rpc_has_a_role_in_the_table():
    service = pb.DESCRIPTOR.services_by_name["Dedup"]
    assert {f"/dedup.v1.Dedup/{m.name}" for m in service.methods} == set(METHOD_ROLES)
    assert set(CALLS) == {m.name for m in service.methods}


def test_health_reflection_public_unknown_methods_admin_only():
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert required_role("/dedup.v1.Dedup/Lookup") == "reader"
    assert required_role("/dedup.v1.Dedup/SomethingNew") == "admin"


CALLS = {  # method -> (request, least role)
    "Lookup": (pb.LookupRequest(item=pb.Item(text="hi")), "reader"),
    "BatchLookup": (pb.BatchLookupRequest(items=[pb.Item(text="hi")]), "reader"),
    "Stats": (pb.StatsRequest(), "reader"),
    "GetSeed": (pb.GetSeedRequest(seed_id=1), "reader"),
    "ListSeeds": (pb.ListSeedsRequest(), "reader"),
    "AddSeeds": (pb.AddSeedsRequest(items=[pb.Item(text="x")], labels=[pb.Label(name="a")]),
                 "analyst"),
    "RemoveSeeds": (pb.RemoveSeedsRequest(seed_ids=[1]), "analyst"),
    "RelabelSeed": (pb.RelabelSeedRequest(seed_id=1, labels=[pb.Label(name="a")]), "analyst"),
    "Reload": (pb.ReloadRequest(), "admin"),
    "PublishSnapshot": (pb.PublishSnapshotRequest(), "admin"),
    "WhoAmI": (pb.WhoAmIRequest(), "reader"),
    "RestoreSeed": (pb.RestoreSeedRequest(seed_id=1, reason="r"), "analyst"),
    "GetSeedHistory": (pb.GetSeedHistoryRequest(seed_id=1), "analyst"),
    "ListOps": (pb.ListOpsRequest(), "analyst"),
    "GetSeedContent": (pb.GetSeedContentRequest(seed_id=1), "analyst"),
    "AddShadowSpace": (pb.AddShadowSpaceRequest(model="pdq"), "admin"),
    "WriteEmbeddings": (pb.WriteEmbeddingsRequest(space="pdq", model_id="pdq"), "admin"),
    "PromoteSpace": (pb.PromoteSpaceRequest(space="pdq"), "admin"),
    "RollbackSpace": (pb.RollbackSpaceRequest(), "admin"),
    "RetireSpace": (pb.RetireSpaceRequest(space="pdq"), "admin"),
}
RANK = {"reader": 0, "analyst": 1, "admin": 2}


def test_every_rpc_enforces_its_role_over_a_real_server(tmp_path):
    release = threading.Event()

    def never_loads(config):  # keeps the engine unloaded for the test's length
        release.wait(30)
        raise RuntimeError("test finished")

    config = load_config(None, data_dir=str(tmp_path), server__port=0, server__metrics_port=None,
                         server__tokens=TOKENS)

    async def main():
        server = DedupServer(config, engine_factory=never_loads)
        port = await server.start()
        seen = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = dedup_pb2_grpc.DedupStub(ch)
                health = health_pb2_grpc.HealthStub(ch)
                status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
                seen["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                for method, (request, _) in CALLS.items():
                    for token in (None, "bogus", "r-tok", "a-tok", "adm-tok"):
                        md = (("authorization", f"Bearer {token}"),) if token else ()
                        try:
                            await getattr(stub, method)(request, metadata=md, timeout=5)
                            seen[method, token] = grpc.StatusCode.OK
                        except grpc.aio.AioRpcError as e:
                            seen[method, token] = e.code()
        finally:
            release.set()
            await server.stop(0)
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 60))
    assert seen["health"] == "NOT_SERVING"  # health needs no token, and says not ready yet
    for method, (_, need) in CALLS.items():
        assert seen[method, None] == grpc.StatusCode.UNAUTHENTICATED, method
        assert seen[method, "bogus"] == grpc.StatusCode.UNAUTHENTICATED, method
        for token, role in (("r-tok", "reader"), ("a-tok", "analyst"), ("adm-tok", "admin")):
            want = (grpc.StatusCode.UNAVAILABLE if RANK[role] >= RANK[need]
                    else grpc.StatusCode.PERMISSION_DENIED)
            assert seen[method, token] == want, (method, role)
