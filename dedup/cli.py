"""The ``dedup`` console command. ``dedup serve`` with no config serves the demo seed bank;
``dedup ui`` serves the analyst workbench (a web page) over a running service.

Exit codes: 0 clean shutdown, 2 bad arguments or config or a port in use, 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from dedup.errors import DedupError, InvalidArgument


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dedup", description="near-duplicate detection service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC service (demo seed bank without --config)")
    serve.add_argument("--config", metavar="FILE", help="TOML config; without it: the demo")
    serve.add_argument("--data-dir", metavar="DIR", help="store and index directory "
                       "(default: the config's, ./dedup-data)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 50051; 0 picks a free one)")
    serve.add_argument("--metrics-port", type=int,
                       help="Prometheus /metrics port (default 9464; 0 picks a free one)")
    serve.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint")
    serve.add_argument("--workers", type=int, help="threads for embedding and search")
    serve.add_argument("--no-batching", action="store_true", help="disable the micro-batcher")
    serve.add_argument("--max-wait-ms", type=float, help="micro-batcher wait bound")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--text-logs", action="store_true", help="plain text logs instead of JSON")
    ui = sub.add_parser("ui", help="serve the analyst workbench (a web page over the service)")
    ui.add_argument("--target", default=os.environ.get("DEDUP_TARGET", "127.0.0.1:50051"),
                    help="the dedup service (default 127.0.0.1:50051 or DEDUP_TARGET)")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    ui.add_argument("--tls-ca", help="CA certificate (PEM) of the service; enables TLS to it")
    ui.add_argument("--secure-cookie", action="store_true",
                    help="session cookie over HTTPS only (set behind a TLS proxy)")
    ui.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    backup = sub.add_parser("backup", help="copy the store (compacted) and the serving snapshot "
                            "into a new directory; safe beside a running service")
    backup.add_argument("out", metavar="DIR", help="the backup directory to create")
    backup.add_argument("--data-dir", default="./dedup-data", help="the service's data dir")
    restore = sub.add_parser("restore", help="copy a backup into an empty data dir")
    restore.add_argument("backup", metavar="DIR", help="a directory made by `dedup backup`")
    restore.add_argument("--data-dir", required=True, help="the (new, empty) data dir")
    return parser


def _backup_command(args: argparse.Namespace) -> int:
    """``dedup backup`` / ``dedup restore``: one JSON line on success, one error line else."""
    import json

    from dedup.backup import backup, restore

    try:
        info = (backup(args.data_dir, args.out) if args.command == "backup"
                else restore(args.backup, args.data_dir))
    except DedupError as e:
        print(f"dedup {args.command}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


def setup_logging(level: str, json_logs: bool = True) -> None:
    """Structured (JSON) logs on stderr."""
    from dedup.service.metrics import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def serve_config(args: argparse.Namespace):
    """The Config for ``dedup serve``: file (or the demo), then flags."""
    from dedup.config import load_config

    flags = {
        "data_dir": args.data_dir,
        "server__host": args.host,
        "server__port": args.port,
        "server__metrics_port": args.metrics_port,
        "server__workers": args.workers,
        "batcher__max_wait_ms": args.max_wait_ms,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    if args.no_batching:
        overrides["batcher__enabled"] = False
    if args.no_metrics:
        overrides["server__metrics_port"] = None
    if args.config is None:
        # The demo: seed the demo bank, and on loopback let callers without a token read
        # (Lookup, Stats) so a newcomer can try it at once; writes still need a token from
        # DEDUP_AUTH_TOKENS, and a demo bound to another address needs tokens for everything.
        overrides["demo"] = True
        loopback = args.host in (None, "127.0.0.1", "localhost", "::1")
        overrides["server__allow_anonymous_reader"] = loopback
    return load_config(args.config, **overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dedup`` console command."""
    args = _parser().parse_args(argv)
    if args.command in ("backup", "restore"):
        return _backup_command(args)
    if args.command == "ui":
        from dedup.ui.app import serve as serve_ui

        # DEDUP_UI_SECRET keeps sign-ins across restarts; without it each start signs all out.
        serve_ui(args.target, args.host, args.port, secret=os.environ.get("DEDUP_UI_SECRET"),
                 secure_cookie=args.secure_cookie, root_cert=args.tls_ca,
                 log_level=args.log_level.lower())
        return 0
    setup_logging(args.log_level, json_logs=not args.text_logs)
    log = logging.getLogger("dedup.cli")
    try:
        config = serve_config(args)
    except (InvalidArgument, OSError) as e:
        log.error("bad config: %s", e)
        return 2
    from dedup.service.server import PortInUse, StartupCancelled, serve

    try:
        drained = asyncio.run(serve(config))
    except PortInUse as e:
        log.error("%s", e)
        return 2
    except StartupCancelled:
        return 0
    except DedupError as e:
        log.error("%s: %s", type(e).__name__, e)
        return 1
    if not drained:
        # Engine calls outlived the grace: leave without waiting for them (as a crash would;
        # nothing unacknowledged is kept, nothing acknowledged is lost).
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
