"""Atomic writes: a file or folder appears whole under its final name, or not at all.

Everything is written to a temporary sibling ``.tmp-PID.HOST-RANDOM-NAME`` and renamed. Without
``overwrite`` the rename never replaces (``renameat2(RENAME_NOREPLACE)``, else a hard link), so of two
processes writing the same output the second gets a clear error instead of silently winning.
:func:`all_or_nothing` commits several outputs together (all appear, or none). Temporaries left by a
killed run are removed by the next write into the same folder: those of a dead process of this
machine at once, any other after a day (it may belong to a live run on another machine).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, List, Optional, Set, Tuple, Union

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.paths import check_folder_for

PathLike = Union[str, Path]
STALE_SECONDS = 24 * 3600  # a temporary of another machine (shared file system) is left alone this long
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_OURS = re.compile(r"^\.tmp-(\d+)\.([0-9a-f]{6})-")
_TEMPORARY = re.compile(r"\.tmp-\d+\.[0-9a-f]{6}-[0-9a-f]{6}-")  # the prefix _temporary_sibling puts before a name
_cleaned: Set[str] = set()


def _temporary_sibling(dest: Path) -> Path:
    # Keep the full name at the end so writers that pick a format by suffix (.nii.gz) still work.
    return dest.parent / f".tmp-{os.getpid()}.{_HOST}-{uuid.uuid4().hex[:6]}-{dest.name}"


def _final_name(text: Union[str, Path]) -> str:
    """``OUT/.tmp-PID.HOST-RANDOM-seg.nii.gz`` (and nested temporaries) as ``OUT/seg.nii.gz``: what a message
    shows, since a temporary's name means nothing to the user and is gone when the message is read."""
    return _TEMPORARY.sub("", str(text))


def _for_user(error: LumbarsegError) -> LumbarsegError:
    """The error with temporaries' names replaced by the outputs' names."""
    return LumbarsegError(_final_name(error.source), _final_name(error.problem))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink()


def clean_stale(folder: PathLike) -> None:
    """Remove ``.tmp-*`` leftovers of killed runs from ``folder`` (once per folder and process)."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _cleaned or not folder.is_dir():
        return
    _cleaned.add(key)
    now = time.time()
    for entry in folder.iterdir():
        if not entry.name.startswith(".tmp-"):
            continue
        match = _OURS.match(entry.name)
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        mine = match is not None and match.group(2) == _HOST and os.name == "posix"
        if (mine and not _alive(int(match.group(1)))) or (not mine and age > STALE_SECONDS):  # type: ignore[union-attr]
            _remove(entry)


def make_folder_for(dest: Path) -> None:
    """Create ``dest``'s folder; a file in the way is one line naming the output (not errno 17 naming an input)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_folder_for(dest)
        raise


def exists_error(dest: PathLike) -> LumbarsegError:
    return LumbarsegError(dest, "output exists (use --overwrite)")


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """Linux ``renameat2(RENAME_NOREPLACE)``; False where the kernel, libc or file system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_noreplace = -100, 1
    if call(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def rename_noreplace(src: PathLike, dst: PathLike) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists, also when it appears meanwhile."""
    src, dst = Path(src), Path(dst)
    if _renameat2_noreplace(src, dst):
        return
    if src.is_file():
        os.link(src, dst)  # atomic and exclusive: EEXIST when dst exists
        os.unlink(src)
        return
    if os.path.lexists(dst):  # folders on a file system without renameat2: checked, then renamed
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def _commit(tmp: Path, dest: Path, overwrite: bool) -> None:
    if not overwrite:
        rename_noreplace(tmp, dest)
    elif tmp.is_dir() and dest.is_dir() and not dest.is_symlink():
        old = _temporary_sibling(dest)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def _check_kind(dest: Path, folder: bool) -> None:
    """``--overwrite`` replaces a file by a file and a folder by a folder, never one by the other."""
    if dest.exists() and dest.is_dir() != folder:
        found = "a folder" if dest.is_dir() else "a file"
        raise LumbarsegError(dest, f"{found} is in the way of the output (not replaced, even with --overwrite)")


def _write_error(exc: OSError, dest: Path, tmp: Path) -> Optional[LumbarsegError]:
    """A writing error (disk full, file too large, permission) as one line naming the output."""
    if exc.filename is not None and not str(exc.filename).startswith(str(tmp)):
        return None  # an error about another file (e.g. an input read inside the block)
    return LumbarsegError(_final_name(dest), f"cannot write the output ({exc.strerror or type(exc).__name__})")


@contextmanager
def atomic_path(dest: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    ``overwrite=False``: never replace; an existing ``dest`` (even one created meanwhile) is an error."""
    dest = Path(dest)
    make_folder_for(dest)
    clean_stale(dest.parent)
    if not overwrite and os.path.lexists(dest):
        raise exists_error(dest)
    tmp = _temporary_sibling(dest)
    try:
        yield tmp
        _check_kind(dest, tmp.is_dir())
        try:
            _commit(tmp, dest, overwrite)
        except FileExistsError:
            raise exists_error(dest) from None
    except OSError as exc:
        error = _write_error(exc, dest, tmp)
        if error is None:
            raise
        raise error from None
    except LumbarsegError as exc:  # a writer's own error names the temporary it was writing
        raise _for_user(exc) from None
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


@contextmanager
def atomic_dir(dest: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``dest`` only if the block succeeds.

    FileExistsError when ``dest`` exists (or appears meanwhile) and ``overwrite`` is False."""
    dest = Path(dest)
    if os.path.lexists(dest) and not overwrite:
        raise FileExistsError(dest)
    _check_kind(dest, True)
    make_folder_for(dest)
    clean_stale(dest.parent)
    tmp = _temporary_sibling(dest)
    tmp.mkdir()
    try:
        yield tmp
        _check_kind(dest, True)
        _commit(tmp, dest, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class Staging:
    """Outputs written under temporary names by :func:`all_or_nothing`, renamed together at the end."""

    def __init__(self, overwrite: bool) -> None:
        self.overwrite = overwrite
        self.staged: List[Tuple[Path, Path]] = []  # (temporary, final)

    def path(self, dest: PathLike) -> Path:
        """The temporary path to write ``dest`` to (a file, or a folder the writer creates)."""
        dest = Path(dest)
        if not self.overwrite and os.path.lexists(dest):
            raise exists_error(dest)
        make_folder_for(dest)
        clean_stale(dest.parent)
        tmp = _temporary_sibling(dest)
        self.staged.append((tmp, dest))
        return tmp

    def commit(self) -> None:
        """Rename every staged output; on any failure undo the renames done (old outputs come back)."""
        for tmp, dest in self.staged:
            if not os.path.lexists(tmp):
                raise LumbarsegError(dest, "the output was not written")
            _check_kind(dest, tmp.is_dir())
            if not self.overwrite and os.path.lexists(dest):
                raise exists_error(dest)
        done: List[List[Any]] = []  # [final, its previous version moved aside or None, renamed yet]
        try:
            for tmp, dest in self.staged:
                entry: List[Any] = [dest, None, False]
                done.append(entry)
                if self.overwrite:
                    if os.path.lexists(dest):
                        entry[1] = _temporary_sibling(dest)
                        os.replace(dest, entry[1])
                    os.replace(tmp, dest)
                else:
                    rename_noreplace(tmp, dest)
                entry[2] = True
        except OSError as exc:
            for dest, backup, renamed in reversed(done):
                if renamed:
                    _remove(dest)
                if backup is not None:
                    os.replace(backup, dest)
            failed = done[-1][0]
            if isinstance(exc, FileExistsError):
                raise exists_error(failed) from None
            raise LumbarsegError(failed, f"cannot write the output ({exc.strerror or type(exc).__name__})") from None
        for _, backup, _ in done:
            if backup is not None:
                _remove(backup)

    def discard(self) -> None:
        for tmp, _ in self.staged:
            if os.path.lexists(tmp):
                _remove(tmp)


@contextmanager
def all_or_nothing(overwrite: bool = False) -> Iterator[Staging]:
    """Stage several outputs (``staging.path(dest)`` gives where to write each); they all get their final
    names when the block succeeds, none when it fails. A writing error names the output it was writing."""
    staging = Staging(overwrite)
    try:
        yield staging
        staging.commit()
    except OSError as exc:
        dest = next((d for t, d in staging.staged if exc.filename and str(exc.filename).startswith(str(t))),
                    staging.staged[-1][1] if staging.staged else None)
        if dest is None:
            raise
        raise LumbarsegError(dest, f"cannot write the output ({exc.strerror or type(exc).__name__})") from None
    except LumbarsegError as exc:  # a writer's own error names the temporary it was writing
        raise _for_user(exc) from None
    finally:
        staging.discard()


def write_text(dest: PathLike, text: str, overwrite: bool = True) -> None:
    """Write a text file atomically."""
    with atomic_path(dest, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(dest: PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write a binary file atomically."""
    with atomic_path(dest, overwrite) as tmp:
        tmp.write_bytes(data)
