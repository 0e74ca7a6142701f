"""Find the cases in an input path: one volume, or a folder of many (files, series, slice stacks).

A case is named after what a person sees: ``sub01.nii.gz`` -> ``sub01``, a DICOM series folder ->
its folder name, a PNG stack ``118_t2_SPACE_slice1..N.png`` -> ``118_t2_SPACE``. Prediction and
evaluation use the same names, so predicted masks and ground truth pair up by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.readers import (
    METAIMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    png_stacks,
    read_png_stack,
    read_volume,
    volume_format,
    volume_stem,
)
from lumbarseg.io.volume import Volume

PathLike = Union[str, Path]
_STACK_SUFFIXES = ("_slice", "-slice", "slice", "_", "-", ".")


@dataclass(frozen=True)
class Case:
    """One volume to read: a file, a DICOM/PNG folder, or an explicit list of PNG slices."""

    name: str
    path: Path
    format: str
    files: List[Path] = field(default_factory=list)  # PNG slices when a folder holds several stacks

    def read(self, spacing: Optional[Sequence[float]] = None) -> Volume:
        if self.files:
            return read_png_stack(self.files, spacing=spacing, source=self.path / f"{self.name}*")
        return read_volume(self.path, spacing=spacing)

    @property
    def source(self) -> str:
        return str(self.path / f"{self.name}*.png") if self.files else str(self.path)


def case_name(path: PathLike) -> str:
    """A volume's name without its format suffix."""
    name = Path(path).name
    stem = volume_stem(name)
    return name if stem is None else stem


def stack_name(prefix: str) -> str:
    """``118_t2_SPACE_slice`` -> ``118_t2_SPACE``: a PNG stack's name without the slice-number stem."""
    name = prefix
    for suffix in _STACK_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name or prefix


def _folder_cases(folder: Path) -> List[Case]:
    fmt = volume_format(folder)
    if fmt == "dicom":
        return [Case(folder.name, folder, "dicom")]
    stacks = png_stacks(folder)
    if len(stacks) == 1:
        return [Case(folder.name, folder, "png")]
    return [Case(stack_name(prefix), folder, "png", files) for prefix, files in stacks.items()]


def find_cases(path: PathLike) -> List[Case]:
    """The cases at ``path``: itself if it is one volume, else every volume file or sub-folder inside."""
    path = Path(path)
    if not path.exists():
        raise LumbarsegError(path, "no such file or folder")
    if path.is_file():
        return [Case(case_name(path), path, volume_format(path))]
    has_volume_files = any(
        p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES + METAIMAGE_SUFFIXES) for p in path.iterdir()
    )
    if not has_volume_files:
        try:
            return _folder_cases(path)
        except LumbarsegError:
            pass  # not a series/stack itself: look at its children
    cases: List[Case] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and child.name.lower().endswith(NIFTI_SUFFIXES + METAIMAGE_SUFFIXES):
            cases.append(Case(case_name(child), child, volume_format(child)))
        elif child.is_dir():
            try:
                cases.extend(_folder_cases(child))
            except LumbarsegError:
                continue  # a folder with neither a series nor slices is not a case
    if not cases:
        raise LumbarsegError(path, "no volumes found (NIfTI, MetaImage, DICOM series or PNG slice folders)")
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LumbarsegError(path, f"several inputs share the case name(s) {', '.join(duplicates)}")
    return cases
