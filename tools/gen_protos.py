"""Regenerate dedup/v1/*_pb2*.py from protos/ with grpc_tools.protoc.

The proto path (protos/dedup/v1/dedup.proto) equals the Python package path (dedup/v1/), so the
generated absolute imports (``from dedup.v1 import dedup_pb2``) work without rewriting.
Run: ``python tools/gen_protos.py`` (then commit dedup/v1/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under ``root``, sorted, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def generate(out_root: Path, root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc into ``out_root`` (python, grpc and .pyi outputs); return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    out_root.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p) for p in proto_files(root)]
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    stems = [out_root / rel.parent / rel.stem for rel in proto_files(root)]
    return [Path(f"{stem}{suffix}") for stem in stems for suffix in GENERATED_SUFFIXES]


def main(argv: list[str] | None = None) -> int:
    """Regenerate into the repository root (or ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO, help="output root (default: repo root)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
