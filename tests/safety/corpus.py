"""The bad-input corpus harness: run the real ``lumbarseg`` command on a hostile input and assert the rules.

Every case asserts the same contract (docs/design.md, Conventions): a non-zero exit, exactly one line on stderr of
the form ``lumbarseg: error: FILE: PROBLEM`` naming the file and the problem, no traceback, nothing written
or replaced in the watched folders, and bounded memory (the process runs under an address-space limit, so
a case that would allocate tens of GB fails the test instead of the machine).
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

# Address-space cap for one CLI run: onnxruntime and torch reserve a few GB of virtual memory at start-up.
MEMORY_LIMIT_BYTES = 6 * 1024**3
ERROR_LINE = re.compile(r"^lumbarseg: error: (?P<source>.+?): (?P<problem>.+)$")

Snapshot = Dict[str, Tuple[int, str]]


def run_cli(args: Sequence[str], cwd: Optional[Path] = None, timeout: float = 120.0,
            memory_limit: int = MEMORY_LIMIT_BYTES) -> subprocess.CompletedProcess:
    """``python -m lumbarseg ARGS`` in a fresh process with an address-space limit."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    env = {**os.environ, "PYTHONWARNINGS": "default"}  # library warnings must still not reach the user
    return subprocess.run([sys.executable, "-m", "lumbarseg", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def snapshot(*folders: Path) -> Snapshot:
    """Every file below the folders: relative path -> (size, sha256), to prove nothing was written or replaced."""
    state: Snapshot = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                state[str(path)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def assert_one_line_error(result: subprocess.CompletedProcess, names: Iterable[str], problem: str,
                          exit_codes: Sequence[int] = (2,)) -> str:
    """The process failed with one ``lumbarseg: error: FILE: PROBLEM`` line naming ``names`` and ``problem``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode in exit_codes, f"exit {result.returncode}, stderr:\n{result.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    match = ERROR_LINE.match(lines[0])
    assert match, f"not a lumbarseg error line: {lines[0]!r}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    assert re.search(problem, lines[0], re.IGNORECASE), f"problem /{problem}/ not in {lines[0]!r}"
    return lines[0]


def assert_unchanged(before: Snapshot, *folders: Path) -> None:
    """No file below the folders was created, removed or changed since ``before``."""
    after = snapshot(*folders)
    assert after == before, (f"files changed: created {sorted(set(after) - set(before))}, "
                             f"removed {sorted(set(before) - set(after))}, "
                             f"modified {sorted(k for k in before if k in after and after[k] != before[k])}")
