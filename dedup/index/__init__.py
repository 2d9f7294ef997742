"""Sharded FAISS indexes and their versioned, atomically published snapshots."""

from dedup.index.sharded import (
    ShardedIndex,
    hamming_to_similarity,
    resolve_factory,
    similarity_to_hamming,
)

__all__ = ["ShardedIndex", "hamming_to_similarity", "resolve_factory", "similarity_to_hamming"]
