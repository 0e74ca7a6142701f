"""The one rule for every command's outputs: an output never is, contains or lies inside an input.

``--overwrite`` replaces earlier *outputs*; it never makes an input writable. Paths are compared
after resolving symbolic links and ``..``, so another spelling of an input is caught too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

from lumbarseg.errors import LumbarsegError

PathLike = Union[str, Path]


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _relation(output: Path, source: Path) -> Optional[str]:
    if output == source:
        return "is"
    if output in source.parents:
        return "contains"
    if source in output.parents:
        return "lies inside"
    return None


def check_not_input(output: PathLike, inputs: Iterable[Tuple[str, Optional[PathLike]]]) -> None:
    """Refuse ``output`` when it is, contains or lies inside one of ``inputs``: (what, path) pairs, ``what`` a
    flag or a word (may be empty), None paths skipped."""
    out = _resolved(output)
    for what, source in inputs:
        if source is None:
            continue
        resolved = _resolved(source)
        relation = _relation(out, resolved)
        if relation is not None:
            kind = "folder" if resolved.is_dir() else "file"
            label = f"{what} {kind}" if what else kind
            raise LumbarsegError(output, f"output {relation} the input {label} {source}: inputs are never replaced "
                                         "or written into (not even with --overwrite); choose another output")


def blocking_file(output: PathLike) -> Optional[Path]:
    """The file standing where a folder of ``output``'s path must be (its nearest existing ancestor), or None."""
    for parent in Path(output).absolute().parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def check_folder_for(output: PathLike) -> None:
    """The folder of ``output`` exists or can be made: no file stands where one of its folders must be."""
    blocker = blocking_file(output)
    if blocker is not None:
        raise LumbarsegError(output, f"cannot write here: {blocker} is a file, not a folder")


def inside(path: PathLike, folder: PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (after resolving links)."""
    return _relation(_resolved(path), _resolved(folder)) in ("is", "lies inside")


def folders_of(files: Iterable[Optional[PathLike]]) -> List[Path]:
    """The distinct folders holding ``files`` (e.g. a dataset's image and mask folders), None skipped."""
    return sorted({Path(f).parent for f in files if f is not None})
