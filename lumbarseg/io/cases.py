"""Find the cases in an input path: one volume, or a folder of many (files, series, slice stacks).

A case is named after what a person sees: ``sub01.nii.gz`` -> ``sub01``, a DICOM study (a folder, flat
or nested, with or without a DICOMDIR) -> its folder name, a PNG stack ``118_t2_SPACE_slice1..N.png`` ->
``118_t2_SPACE``. Prediction and evaluation use the same names, so predicted masks and ground truth pair
up by name. A folder of several DICOM studies is a batch, one case per study; the series each study is
segmented from is chosen by :mod:`lumbarseg.io.dicom.choice` (or ``series=NUMBER|UID``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.readers import (
    METAIMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    png_stacks,
    read_dicom_series,
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
    """One volume to read: a file, a DICOM study/PNG folder, or an explicit list of PNG slices.

    A DICOM study's case reads its chosen series through ``loader`` (or raises why none could be chosen);
    ``note`` says which series and why, in one line."""

    name: str
    path: Path
    format: str
    files: List[Path] = field(default_factory=list)  # PNG slices when a folder holds several stacks
    loader: Optional[Callable[[], Volume]] = field(default=None, compare=False, repr=False)
    note: str = ""
    study: Any = field(default=None, compare=False, repr=False)  # lumbarseg.io.dicom.study.Study
    remote: str = ""  # a DICOMweb study/series URL (without credentials) the case is read from

    def read(self, spacing: Optional[Sequence[float]] = None) -> Volume:
        if self.loader is not None:
            return self.loader()
        if self.files:
            return read_png_stack(self.files, spacing=spacing, source=self.path / f"{self.name}*")
        return read_volume(self.path, spacing=spacing)

    @property
    def source(self) -> str:
        if self.remote:
            return self.remote
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


def fails_when_read(error: LumbarsegError) -> Volume:
    """The loader of a case that cannot be read (a study without a series to segment): raises why, so that a
    batch reports it in its turn and goes on with the other cases."""
    raise error


def _study_home(study: Any, folder: Path) -> Path:
    """The sub-folder of ``folder`` (the input) that holds all of a study's files (``folder`` if it is flat)."""
    try:
        parts = study.folder.relative_to(folder).parts
    except ValueError:
        return study.folder
    return folder / parts[0] if parts else folder


def _study_name(study: Any, folder: Path, studies: Sequence[Any]) -> str:
    """The name of a study's own sub-folder of the input; for studies sharing one, with the study's ID or date."""
    home = _study_home(study, folder)
    if home != folder and sum(_study_home(s, folder) == home for s in studies) == 1:
        return home.name
    return f"{home.name}_{study.study_id or study.date or study.uid[-8:]}"


def study_cases(folder: Path, studies: Sequence[Any], series: Optional[str] = None) -> List[Case]:
    """One case per study, reading the series :func:`~lumbarseg.io.dicom.choice.choose` picks (or ``series``);
    a study without a series to segment becomes a case whose read raises why (a batch goes on with the others)."""
    from lumbarseg.io.dicom.choice import choose

    cases = []
    for study in studies:
        name = folder.name if len(studies) == 1 else _study_name(study, folder, studies)
        where = folder if len(studies) == 1 else _study_home(study, folder)
        try:
            choice = choose(study, series, str(where))
        except LumbarsegError as exc:
            cases.append(Case(name, where, "dicom", loader=partial(fails_when_read, exc), study=study))
            continue
        chosen = choice.series
        loader = partial(read_dicom_series, chosen.files, where, chosen.headers, study.unreadable)
        cases.append(Case(name, where, "dicom", loader=loader, note=choice.line(str(where)), study=study))
    names = [c.name for c in cases]
    return [c if names.count(c.name) == 1 else replace(c, name=f"{c.name}_{c.study.uid[-8:]}") for c in cases]


def _folder_cases(folder: Path, series: Optional[str] = None) -> List[Case]:
    fmt = volume_format(folder)
    if fmt == "dicom":
        from lumbarseg.io.dicom.study import find_studies

        return study_cases(folder, find_studies(folder), series)
    stacks = png_stacks(folder)
    if len(stacks) == 1:
        return [Case(folder.name, folder, "png")]
    return [Case(stack_name(prefix), folder, "png", files) for prefix, files in stacks.items()]


def find_cases(path: PathLike, series: Optional[str] = None) -> List[Case]:
    """The cases at ``path``: itself if it is one volume or one DICOM study, else every volume file, study or
    sub-folder inside. ``series`` (a number or SeriesInstanceUID) overrides the choice rule in DICOM studies."""
    path = Path(path)
    if not path.exists():
        raise LumbarsegError(path, "no such file or folder")
    if path.is_file() and path.name.upper() == "DICOMDIR":
        from lumbarseg.io.dicom.study import find_studies

        return study_cases(path.parent, find_studies(path), series)
    if path.is_file():
        return [Case(case_name(path), path, volume_format(path))]
    has_volume_files = any(
        p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES + METAIMAGE_SUFFIXES) for p in path.iterdir()
    )
    if not has_volume_files:
        try:
            return _folder_cases(path, series)
        except LumbarsegError:
            pass  # not a study/stack itself: look at its children
    cases: List[Case] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and child.name.lower().endswith(NIFTI_SUFFIXES + METAIMAGE_SUFFIXES):
            cases.append(Case(case_name(child), child, volume_format(child)))
        elif child.is_dir():
            try:
                cases.extend(_folder_cases(child, series))
            except LumbarsegError:
                continue  # a folder with neither a series nor slices is not a case
    if not cases:
        raise LumbarsegError(path, "no volumes found (NIfTI, MetaImage, DICOM series or PNG slice folders)")
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LumbarsegError(path, f"several inputs share the case name(s) {', '.join(duplicates)}")
    return cases
