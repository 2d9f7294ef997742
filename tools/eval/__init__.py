"""Near-duplicate evaluation and threshold calibration (``dedup-eval``).

dataset: benchmark built from packaged images and docstring sentences; augment: seeded edits in
levels; runner: the protocol (index seeds, search queries); metrics: recall@1, micro-AP, recall at
a false-match rate; report: JSON, plots, table; cli: the console command.
"""
