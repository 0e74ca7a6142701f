"""DICOM outputs of a prediction (``predict --output-type dicom``): a Segmentation, a TID 1500 Structured
Report and Secondary Capture figures, built with highdicom (the ``dicom`` extra, imported only here) in the
source study, with new UIDs and the source's patient and study attributes.
"""
from __future__ import annotations

import gc
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from lumbarseg.errors import LumbarsegError

KINDS = ("seg", "sr", "overlay", "spine")  # the objects of one case, in the order they are stored


@dataclass
class CaseObjects:
    """The DICOM objects of one case by kind (``seg``, ``sr``, ``overlay``, ``spine``)."""

    objects: Dict[str, Any]

    @property
    def study_uid(self) -> str:
        return str(self.objects["seg"].StudyInstanceUID)

    def ordered(self) -> List[Tuple[str, Any]]:
        return [(kind, self.objects[kind]) for kind in KINDS if kind in self.objects]


MISSING = "DICOM outputs need the 'dicom' extra: pip install 'lumbarseg[dicom]' (highdicom, dicomweb-client)"


def require_highdicom(source: str = "--output-type") -> None:
    """highdicom is installed, or one clear line says that the ``dicom`` extra is missing. It is looked for, not
    imported (0.1 s): :class:`Tables` imports it while the first case is read."""
    try:
        found = importlib.util.find_spec("highdicom") is not None
    except (ImportError, ValueError):  # a parent package that fails, a module without a spec
        found = False
    if not found:
        raise LumbarsegError(source, MISSING)


def _highdicom(source: str = "--output-type") -> Any:
    """highdicom, imported; a broken installation says the same one line as a missing one."""
    try:
        import highdicom
    except ImportError:
        raise LumbarsegError(source, MISSING) from None
    return highdicom


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while highdicom builds, and pydicom writes, the objects of a case:
    tens of thousands of small containers, which would set off collections that walk them, and the heap, to find
    no cycles. Memory is freed by reference counting as before; the collector is back on (if it was) after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _loader() -> Any:
    """highdicom's cached loader of its DICOM module tables (a private function; None where it has none)."""
    return getattr(getattr(_highdicom(), "_standard_utils", None), "get_module_attribute_map", None)


class Tables:
    """The DICOM module tables highdicom reads when it builds an object (22 MB of JSON: 0.1 s to decode into 110 MB
    of Python objects, 200,000 of them containers), loaded in a background thread while a batch reads and segments
    its first case (:meth:`ready` waits for them), and dropped by :meth:`close` once the batch is done (a later
    batch loads them again). While they are loaded they are frozen (``gc.freeze``, unless someone else froze
    objects): the garbage collector would otherwise walk them three times as they age, and at every full
    collection, the ones at interpreter exit too (0.2-0.3 s in all). highdicom itself is imported in the caller's
    thread, best while another reads the first case (two threads importing the same packages at once can fail on
    a partly initialised module: the reader's SimpleITK shares none with highdicom, pydicom is imported by then)."""

    def __init__(self) -> None:
        _highdicom()
        self._frozen = False
        self._loading = threading.Thread(target=self._load, name="lumbarseg-dicom-tables", daemon=True)
        self._loading.start()

    def _load(self) -> None:
        load = _loader()
        if load is None:  # without it the first object pays the load itself
            return
        with _collector_paused():
            load()
            if gc.get_freeze_count() == 0:  # what this process freezes here is ours to unfreeze
                gc.freeze()
                self._frozen = True

    def ready(self) -> None:
        self._loading.join()

    def close(self) -> None:
        self._loading.join()
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        load = _loader()
        if load is not None and hasattr(load, "cache_clear"):
            load.cache_clear()


def build_case(prediction: Any, model_path: Path, volumes: Sequence[Dict[str, Any]], report: Any = None,
               overlay: bool = False, title: str = "") -> CaseObjects:
    """SEG (classes, and levels with ``report``), SR (class volumes from ``volumes``, the rows of
    :func:`lumbarseg.inference.outputs.measure`, and the report's measurements), and Secondary Captures of the
    overlay (``overlay``) and of the spine figure (with ``report``)."""
    _highdicom()
    with _collector_paused():
        return _build_case(prediction, model_path, volumes, report, overlay, title)


def _build_case(prediction: Any, model_path: Path, volumes: Sequence[Dict[str, Any]], report: Any,
                overlay: bool, title: str) -> CaseObjects:
    from lumbarseg.inference.dicom.seg import build_seg, labels_of, segments_of, series_numbers
    from lumbarseg.inference.dicom.sr import build_sr

    source = prediction.image.source or "input"
    if not prediction.image.header.dicom:
        raise LumbarsegError(source, "DICOM outputs need a DICOM input: the SEG and SR refer to its images")
    reference = prediction.image.header.dicom[0]
    numbers = series_numbers(reference)
    # The figures (OpenCV and numpy, which release the GIL) are drawn while the SEG and SR are built.
    with ThreadPoolExecutor(1, "lumbarseg-dicom-figures") as drawer:
        figures = drawer.submit(_figures, prediction, reference, numbers["figures"], report, overlay, title)
        labels = labels_of(prediction, report)
        segments = segments_of(prediction, labels, report)
        seg = build_seg(prediction, segments, labels, model_path, numbers["seg"])
        ml = {row["class"]: row["volume_ml"] for row in volumes}
        sr = build_sr(seg, segments, ml, report, numbers["sr"], Path(model_path).name)
        return CaseObjects({"seg": seg, "sr": sr, **figures.result()})


def _figures(prediction: Any, reference: Any, series_number: int, report: Any, overlay: bool,
             title: str) -> Dict[str, Any]:
    """The Secondary Captures by kind: the overlay (``overlay``) and the spine figure (with ``report``)."""
    from lumbarseg.inference.dicom.sc import build_figures

    pictures = []
    if overlay:
        pictures.append(("overlay", "overlay of the labels", prediction.overlay(title)))
    if report is not None:
        from lumbarseg.analysis.figure import spine_picture

        pictures.append(("spine", "spine report figure", spine_picture(report)))
    figures = build_figures(reference, [(what, rgb) for _, what, rgb in pictures], series_number)
    return {kind: figure for (kind, _, _), figure in zip(pictures, figures)}


def write_case(objects: CaseObjects, paths: Dict[str, Path]) -> None:
    """Each object to its file (``paths`` by kind, e.g. staging paths), as DICOM Part 10."""
    from lumbarseg.io.dicom import save_dataset

    with _collector_paused():
        for kind, dataset in objects.ordered():
            save_dataset(dataset, str(paths[kind]))
