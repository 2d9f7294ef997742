"""The committed generated code in dedup/v1/ is exactly what tools/gen_protos.py makes now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "tools" / "gen_protos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_code_matches_proto(tmp_path):
    gen = _gen_module()
    written = gen.generate(tmp_path)
    assert written, "protoc wrote nothing"
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        committed = REPO / rel
        assert committed.exists(), f"{rel} is not committed; run python tools/gen_protos.py"
        assert committed.read_text() == fresh.read_text(), (
            f"{rel} differs from protos/; run python tools/gen_protos.py and commit")


def test_generated_module_imports_as_package_module():
    from dedup.v1 import dedup_pb2, dedup_pb2_grpc

    service = dedup_pb2.DESCRIPTOR.services_by_name["Dedup"]
    assert service.full_name == "dedup.v1.Dedup"
    names = {m.name for m in service.methods}
    assert {"Lookup", "BatchLookup", "AddSeeds", "RemoveSeeds", "RelabelSeed", "GetSeed",
            "ListSeeds", "Stats", "Reload"} <= names
    assert hasattr(dedup_pb2_grpc, "DedupStub")
