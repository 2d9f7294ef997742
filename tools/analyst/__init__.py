"""The analyst tool (console ``dedup-admin``): grow, fix and audit the seed bank over gRPC.

    dedup-admin add photos/ --label violence.graphic:4 --source CASE-123   # folders, files, globs
    dedup-admin add --manifest bank.csv --reason "weekly import"           # CSV / JSONL manifest
    dedup-admin add photos/ --label spam.scam --dry-run                    # what already matches
    dedup-admin add --text "send 1 BTC ..." --label spam.scam:3
    dedup-admin add --pdq 3f0c...e1 --label partner.csam_hash:5            # a partner's PDQ hash
    dedup-admin lookup suspicious.png | lookup --pdq HEX | lookup --text "..."
    dedup-admin remove 42 43 --reason "false positive, see CASE-9"
    dedup-admin relabel 42 --label spam.scam:2 --reason "severity review"
    dedup-admin restore 42 --reason "removed by mistake"
    dedup-admin history 42 | ops --actor alice --kind remove --since 2025-01-01
    dedup-admin content 42 -o seed42.jpg | get 42 | list --label spam.scam | stats | whoami
    dedup-admin reload | publish                                           # admin

Target and token come from --target/--token or DEDUP_TARGET/DEDUP_TOKEN. Tables by default,
``--json`` (in any position) for scripts. ``add`` reads files, folders (recursively: image
files), globs and manifests (CSV with a header, or JSONL; columns path | text | pdq, labels,
severity, source, note); it sends batches within the server's limits, shows progress on stderr,
adds nothing twice (a re-run reports every item as already present) and ends with a summary.

Exit codes:
  0  done: every item added, found, removed, ... (or already so)
  1  partly done: some items were rejected or not found (the summary names them)
  2  bad input or arguments (labels, files, manifest, limits)
  3  not found (get, history, content, relabel, restore of an unknown seed)
  4  not authenticated, or the token's role may not do this
  5  service unavailable or overloaded: retry later
  6  server-side failure
"""

from tools.analyst.cli import main, parser, run

__all__ = ["main", "parser", "run"]
