"""The gRPC service: aio server wiring, a thin servicer over the Engine, auth, micro-batching."""
