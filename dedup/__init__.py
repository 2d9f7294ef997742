"""dedup: near-duplicate detection of known violating content."""

__version__ = "0.1.0"
