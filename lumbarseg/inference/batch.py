"""Batch mode: every case of an input path segmented with one model, outputs planned and guarded.

:func:`predict_folder` is what ``lumbarseg predict`` runs: before any inference it plans where each
case's outputs go and refuses outputs that are, contain or lie inside an input, or that exist without
``overwrite``; then it writes each case's files all or nothing, isolates each case's failure (the
others still finish; a single case's error is raised) and writes the measurements table of all cases
that succeeded. DICOM studies and DICOMweb URLs come in as cases like any other (:mod:`lumbarseg.io.dicom`);
``output_type="dicom"`` writes each case's SEG, SR and figures (:mod:`lumbarseg.inference.dicom`) as files, or
stores them with STOW-RS when ``output`` is a DICOMweb URL.
"""
from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.outputs import (
    MASK_SUFFIXES,
    case_outputs,
    mask_suffix,
    measure,
    measurement_paths,
    write_case,
    write_measurements,
)
from lumbarseg.inference.postprocess import ComponentRule
from lumbarseg.inference.predict import PathLike, Predictor
from lumbarseg.io import checks, paths
from lumbarseg.io.atomic import all_or_nothing, exists_error
from lumbarseg.io.cases import Case, case_name, find_cases
from lumbarseg.model.registry import resolve_model

# A failure of one case among several: reported and skipped (anything else stops the batch).
CASE_ERRORS = (LumbarsegError, MemoryError, RuntimeError, ValueError, OSError)


@dataclass(frozen=True)
class Planned:
    """Where one case's outputs go: the mask, and the stem of its extras (``_probabilities``, ``_overlay``)."""

    case: Case
    mask: Path
    stem: Path


@dataclass
class BatchResult:
    """What a batch did.

    Attributes:
        total: cases found.
        failed: case name -> its error, for the cases that failed.
        measurements: the stem of the measurements table written (`<stem>.csv`, `<stem>.json`).
    """

    total: int
    failed: Dict[str, LumbarsegError] = field(default_factory=dict)
    measurements: Optional[Path] = None
    output: str = ""  # where the outputs went (a DICOMweb URL without credentials, or the output path)

    @property
    def done(self) -> int:
        return self.total - len(self.failed)


def plan_outputs(cases: Sequence[Case], output: Path, dicom: bool = False) -> Tuple[List[Planned], Path]:
    """Each case's outputs, and the measurements stem: a mask (or SEG) file name for one case, else a folder."""
    if output.name.lower().endswith(MASK_SUFFIXES):
        if len(cases) != 1:
            raise LumbarsegError(output, f"input holds {len(cases)} cases: give an output folder, not a file")
        if dicom != output.name.lower().endswith(".dcm"):
            raise LumbarsegError(output, "DICOM outputs go to a .dcm file or a folder" if dicom
                                 else "a .dcm output needs --output-type dicom")
        stem = output.with_name(case_name(output) if not dicom else output.name[:-4])
        return [Planned(cases[0], output, stem)], stem.with_name(stem.name + "_measurements")
    plan = [Planned(c, output / (c.name + mask_suffix(c.format, c.path, dicom)), output / c.name) for c in cases]
    return plan, output / "measurements"


def check_outputs(input_path: Optional[Path], output: Path, model: Optional[PathLike], cases: Sequence[Case],
                  plan: Sequence[Planned], measurements: Path, probabilities: bool, overlay: bool,
                  overwrite: bool, dicom: bool = False, measure_spine: bool = False) -> None:
    """Before any inference: no output is, contains or lies inside an input (the model included), none lies
    below a file, and none exists unless ``overwrite``."""
    inputs = [("", input_path), ("--model", resolve_model(model))]
    inputs += [("", case.path) for case in cases if not case.remote]
    paths.check_not_input(output, inputs)
    outputs = [path for planned in plan for path in
               case_outputs(planned.mask, planned.stem, probabilities, overlay, dicom, measure_spine).values()]
    for path in outputs + measurement_paths(measurements):
        paths.check_not_input(path, inputs)
        paths.check_folder_for(path)
        if path.exists() and not overwrite:
            raise exists_error(path)


def check_dicom_cases(cases: Sequence[Case]) -> None:
    """DICOM outputs refer to the images they were made on: every case must be a DICOM study or series."""
    for case in cases:
        if case.format != "dicom":
            raise LumbarsegError(case.source, "--output-type dicom needs DICOM input (a study, series or DICOMweb "
                                              "URL): the SEG and SR refer to the images they segment")


class _NoBar:
    """What the batch loop uses of a tqdm bar, when none is shown."""

    def __init__(self, iterable: Any = None, **_: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _progress(iterable: Any = None, disable: Optional[bool] = None, **options: Any) -> Any:
    """A tqdm bar (``disable`` as tqdm's: None = on a terminal only); tqdm (0.07 s to import) only when shown."""
    if disable or (disable is None and not sys.stderr.isatty()):
        return _NoBar(iterable)
    from tqdm import tqdm

    return tqdm(iterable, disable=disable, **options)


def predict_folder(input: PathLike, output: PathLike, model: Optional[PathLike] = None,
                   runtime: str = "onnxruntime", device: str = "cpu", tta: Union[bool, Sequence[str]] = False,
                   postprocess: Union[bool, Mapping[str, ComponentRule]] = True, batch_size: int = 2,
                   threads: Optional[int] = None, spacing: Optional[Sequence[Optional[float]]] = None,
                   probabilities: bool = False, overlay: bool = False, overwrite: bool = False,
                   progress: bool = False, on_error: Optional[Callable[[LumbarsegError], None]] = None,
                   measure_spine: bool = False, output_type: str = "nifti", series: Optional[str] = None,
                   dicomweb_token: Optional[str] = None,
                   on_note: Optional[Callable[[str], None]] = None) -> BatchResult:
    """Segment every case of a volume or a folder of cases and write the outputs: what `lumbarseg predict` runs.

    Each case gets its mask (and, when asked, probabilities, overlay and spine report); the run writes
    `measurements.csv`/`.json` over all cases. One case's outputs appear together or not at all. The next case
    is read and the previous one written while the network runs.

    Args:
        input: one volume (file, DICOM series or PNG folder), a DICOM study, a folder of cases, or a DICOMweb
            study/series URL.
        output: a mask file (`.nii.gz`, `.nii`, `.mha`; one case only), an output folder, or a DICOMweb root.
        model: a shipped model's name (`accurate`, the default, or `fast`) or an ONNX file.
        runtime: `onnxruntime`, `torch` or `eddl`.
        device: `cpu`, `cuda`, `cuda:N` or `fpga` (with `eddl`).
        tta: test-time flips, as for `predict`.
        postprocess: as for `predict`.
        batch_size: slices per inference batch.
        threads: CPU threads of the runtime.
        spacing: (slice, row, col) voxel size in mm for PNG slices (see `Predictor.read`).
        probabilities: also write `<case>_probabilities.nii.gz` (4D, last axis = class).
        overlay: also write `<case>_overlay.png`.
        overwrite: replace existing outputs (never an input).
        progress: show progress bars on stderr.
        on_error: called with the error of each failing case when there are several; a single case's error is
            raised.
        measure_spine: also write each case's spine report (`lumbarseg measure`) and, for several cases,
            `spine.csv`.
        output_type: `nifti` (the default) or `dicom` (implied by a `.dcm` or DICOMweb output): DICOM SEG, SR
            and Secondary Captures instead of the mask, overlay PNG and spine picture.
        series: the DICOM series to segment from a study (number or UID); by default the one
            `lumbarseg.io.dicom.choice` picks.
        dicomweb_token: a bearer token for DICOMweb input or output (never printed).
        on_note: called with one line per study saying which series was segmented and why.

    Returns:
        A `BatchResult`: cases done and failed, and where the measurements went.
    """
    from lumbarseg.io.dicom import web

    if output_type not in ("nifti", "dicom"):
        raise LumbarsegError("--output-type", f"unknown output type {output_type!r} (nifti or dicom)")
    store_url = str(output) if web.is_url(output) else None
    dicom = output_type == "dicom" or store_url is not None or str(output).lower().endswith(".dcm")
    tables: Any = None  # with DICOM outputs: highdicom and its tables (lumbarseg.inference.dicom.Tables)
    if dicom:
        from lumbarseg.inference.dicom import require_highdicom

        require_highdicom()
    input_path = None if web.is_url(input) else Path(input)
    cases = web.find_cases(str(input), series, dicomweb_token) if input_path is None else find_cases(input_path, series)
    if dicom:
        check_dicom_cases(cases)
    if store_url is not None:
        web.check_reachable(store_url, dicomweb_token)
        output = Path(web.public(store_url))
        plan, measurements_stem = [Planned(c, Path(c.name), Path(c.name)) for c in cases], Path("measurements")
    else:
        output = Path(output)
        plan, measurements_stem = plan_outputs(cases, output, dicom)
        check_outputs(input_path, output, model, cases, plan, measurements_stem, probabilities, overlay, overwrite,
                      dicom, measure_spine)
    predictor = Predictor(model, runtime, device, tta, postprocess, batch_size, threads)
    result = BatchResult(len(plan), output=web.public(store_url) if store_url is not None else str(output))
    rows: List[Dict[str, Any]] = []
    spines: List[Any] = []
    single = len(plan) == 1
    bars = None if progress else True  # tqdm's disable: None = show on a terminal only
    info = {"model": str(predictor.model_path), "runtime": runtime}

    def fail(case: Case, exc: Exception) -> None:
        error = exc if isinstance(exc, LumbarsegError) else LumbarsegError(case.source, f"{type(exc).__name__}: {exc}")
        if single:
            raise error from None
        result.failed[case.name] = error
        if on_error is not None:
            with checks.own_stderr():  # not into a reader's capture of fd 2
                on_error(error)

    def write(planned: Planned, prediction: Any, case_rows: List[Dict[str, Any]], spine: Any) -> None:
        objects = None
        if dicom:
            from lumbarseg.inference.dicom import build_case

            tables.ready()
            objects = build_case(prediction, predictor.model_path, case_rows, spine, overlay, planned.case.name)
        if store_url is not None:  # one STOW-RS request; nothing is written locally
            web.store(store_url, [ds for _, ds in objects.ordered()], objects.study_uid, dicomweb_token)
            return
        with all_or_nothing(overwrite) as staging:  # mask, extras (and one case's measurements) together
            write_case(prediction, case_outputs(planned.mask, planned.stem, probabilities, overlay, dicom,
                                                spine is not None), staging, title=planned.case.name, objects=objects)
            if single:
                write_measurements(case_rows, measurements_stem, info, staging)
        if spine is not None:
            _write_spine(spine, planned.stem.parent, pictures=not dicom)

    def written(job: Optional[Tuple[Planned, Future, List[Dict[str, Any]], Any]]) -> None:
        """Wait for a case's outputs; then its rows count (or its failure is reported)."""
        if job is None:
            return
        planned, future, case_rows, spine = job
        try:
            future.result()
        except CASE_ERRORS as exc:
            fail(planned.case, exc)
        else:
            rows.extend(case_rows)
            if spine is not None:
                spines.append(spine)
            if planned.case.note and on_note is not None:  # once done: a failing case has its one error line
                with checks.own_stderr():
                    on_note(planned.case.note)

    # One reader and one writer thread: case i+1 is read and case i-1 written while case i is segmented
    # (decompression, compression and numpy release the GIL). Outputs stay all or nothing per case. With DICOM
    # outputs, highdicom is imported while the first case is read and its tables load while it is segmented; they
    # are dropped once the writer is done.
    with ExitStack() as stack:
        reader = stack.enter_context(ThreadPoolExecutor(1, "lumbarseg-read"))
        reads = {0: reader.submit(predictor.read, plan[0].case, spacing)} if plan else {}
        if dicom:
            from lumbarseg.inference.dicom import Tables

            tables = stack.enter_context(closing(Tables()))
        writer = stack.enter_context(ThreadPoolExecutor(1, "lumbarseg-write"))
        pending = None
        cases_bar = _progress(plan, desc="cases", unit="case", disable=True if single else bars, file=sys.stderr)
        for index, planned in enumerate(cases_bar):
            case = planned.case
            if index + 1 < len(plan):
                reads[index + 1] = reader.submit(predictor.read, plan[index + 1].case, spacing)
            try:
                volume = reads.pop(index).result()
                with _progress(total=volume.shape[0], desc=case.name, unit="slice", disable=bars if single else True,
                               file=sys.stderr, leave=False) as bar:
                    prediction = predictor(volume, probabilities=probabilities, progress=bar)
                spine = _analyse(prediction, planned.stem.name) if measure_spine else None  # before any writing
                case_rows = measure(prediction, case.name)
            except CASE_ERRORS as exc:  # one bad case: go on (after the previous case's report, in order)
                written(pending)
                pending = None
                fail(case, exc)
                continue
            written(pending)
            pending = (planned, writer.submit(write, planned, prediction, case_rows, spine), case_rows, spine)
            del prediction
        written(pending)
    if store_url is not None:
        return result
    if rows and not single:
        with all_or_nothing(overwrite) as staging:
            write_measurements(rows, measurements_stem, info, staging)
    if rows:
        result.measurements = measurements_stem
    if spines and not single:
        _write_spine(spines, measurements_stem.with_name("spine.csv"))
    return result


def _analyse(prediction: Any, case: str) -> Any:
    from lumbarseg.analysis import measure_prediction

    return measure_prediction(prediction, case)


def _write_spine(spine: Any, where: Path, pictures: bool = True) -> None:
    """One case's spine report into a folder (without its picture and levels mask when they went into DICOM
    objects), or a list of them as one CSV."""
    from lumbarseg.analysis import write_batch_csv, write_case

    if isinstance(spine, list):
        write_batch_csv(spine, where)
    else:
        write_case(spine, where, pictures=pictures)
