"""The ``dedup`` console command. ``dedup serve`` with no config serves the demo seed bank.

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
    return parser


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
