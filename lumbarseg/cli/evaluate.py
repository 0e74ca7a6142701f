"""`lumbarseg evaluate`: placeholder until its issue lands."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("evaluate", help="(not yet available)")
