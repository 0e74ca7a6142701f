"""`make bench`: run every benchmarks/bench_*.py script's main() in turn and print its figures."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])
    for script in sorted(here.glob("bench_*.py")):
        if only and script.stem not in only:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
