"""``lumbarseg`` for the multi-process tests, where every rank but 0 dies (exit 17) on any write under a folder.

    python rank_guard.py GUARDED_DIR train --dataset ... --out GUARDED_DIR/run ...

Writes are caught where every file of the run folder passes: Python's ``open`` in a writing mode, and
``os`` creating, renaming or removing entries (the atomic writes end in ``os.replace``; ``torch.save``
and EDDL write a temporary name that is then renamed).
"""
from __future__ import annotations

import builtins
import io
import os
import sys
from typing import Any, Callable


def guard(root: str) -> None:
    root = os.path.realpath(root)

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return False
        real = os.path.realpath(os.fspath(path))
        return real == root or real.startswith(root + os.sep)

    def refuse(what: str, path: Any) -> None:
        print(f"rank_guard: rank {os.environ.get('RANK', os.environ.get('OMPI_COMM_WORLD_RANK'))} tried to "
              f"{what} {path}", file=sys.stderr, flush=True)
        os._exit(17)

    def paths(name: str, original: Callable[..., Any], count: int = 1) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for path in args[:count]:
                if inside(path):
                    refuse(name, path)
            return original(*args, **kwargs)
        return wrapper

    for name, count in (("replace", 2), ("rename", 2), ("mkdir", 1), ("rmdir", 1), ("unlink", 1), ("remove", 1)):
        setattr(os, name, paths(name, getattr(os, name), count))

    def opener(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if any(c in mode for c in "wax+") and inside(file):
                refuse(f"open({mode!r})", file)
            return original(file, mode, *args, **kwargs)
        return wrapper

    builtins.open = io.open = opener(io.open)  # type: ignore[assignment]
    os_open = os.open

    def raw_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse("os.open", path)
        return os_open(path, flags, *args, **kwargs)

    os.open = raw_open  # type: ignore[assignment]


if __name__ == "__main__":
    from lumbarseg.cli import main
    from lumbarseg.training.distributed import detect_world

    if not detect_world().is_main:
        guard(sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
