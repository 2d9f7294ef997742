"""Batch rebuilds of the index: read a consistent LMDB view, build shards, validate, publish."""
