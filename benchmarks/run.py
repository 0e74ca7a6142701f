"""`make bench`: run every benchmarks/bench_*.py script (or those named) in its own process.

One process each, so that a script's peak-memory figures are its own.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        if only and script.stem not in only:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
