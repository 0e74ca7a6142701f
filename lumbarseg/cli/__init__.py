"""The ``lumbarseg`` command: thin adapters over the Python API, one module per command group."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from lumbarseg import __version__
from lumbarseg.errors import LumbarsegError

# Each module defines ``register(subparsers)``, which adds its parser(s) with ``func=handler``.
COMMAND_MODULES = ["dataset", "train", "export", "predict", "measure", "evaluate", "models", "series"]


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` (one of COMMAND_MODULES) only that command's module is imported, so
    that ``lumbarseg predict`` does not pay for the imports of the other commands' option lists."""
    parser = argparse.ArgumentParser(
        prog="lumbarseg",
        description="Lumbar spine MRI segmentation (vertebrae, discs, spinal canal) on the DeepHealth toolkit.",
    )
    parser.add_argument("--version", action="version", version=f"lumbarseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [command] if command in COMMAND_MODULES else COMMAND_MODULES:
        importlib.import_module(f"lumbarseg.cli.{name}").register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if hasattr(args, "max_voxels"):
            from lumbarseg.io.limits import set_limits

            set_limits(args.max_voxels, args.max_slice_pixels)
        return int(args.func(args) or 0)
    except LumbarsegError as exc:
        if not getattr(exc, "main_only", False) or _is_main_rank():
            print(f"lumbarseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lumbarseg: interrupted", file=sys.stderr)
        return 130


def _is_main_rank() -> bool:
    """Rank 0 of a multi-process launch (or a plain process); see lumbarseg.training.distributed."""
    from lumbarseg.training.distributed import detect_world

    try:
        return detect_world().is_main
    except LumbarsegError:
        return True
