"""Generated protobuf and gRPC code for the dedup.v1 API (tools/gen_protos.py; never edit by hand)."""
