"""``python -m tools.analyst``: the same as ``dedup-admin``."""

from tools.analyst.cli import main

raise SystemExit(main())
