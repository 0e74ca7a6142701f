"""Atomic writes: a file or folder appears whole under its final name, or not at all."""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, Path]


def _temporary_sibling(dest: Path) -> Path:
    # Keep the full name at the end so writers that pick a format by suffix (.nii.gz) still work.
    return dest.parent / f".tmp-{uuid.uuid4().hex[:8]}-{dest.name}"


@contextmanager
def atomic_path(dest: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(dest: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``dest`` only if the block succeeds."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(dest)
    tmp.mkdir()
    try:
        yield tmp
        if dest.exists():
            old = _temporary_sibling(dest)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(dest: PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(dest: PathLike, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
