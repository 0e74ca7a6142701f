"""DICOM outputs of a prediction (``predict --output-type dicom``): a Segmentation, a TID 1500 Structured
Report and Secondary Capture figures, built with highdicom (the ``dicom`` extra, imported only here) in the
source study, with new UIDs and the source's patient and study attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

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


def require_highdicom(source: str = "--output-type") -> None:
    """Import highdicom, or say in one clear line that the ``dicom`` extra is missing."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise LumbarsegError(source, "DICOM outputs need the 'dicom' extra: pip install 'lumbarseg[dicom]' "
                                     "(highdicom, dicomweb-client)") from None


def warm_up() -> None:
    """Load the DICOM module tables highdicom reads when it builds its first object (0.3-0.5 s of JSON decoding),
    in a thread while the input is read and the network runs, so that the first case does not wait for them.
    Only after :func:`require_highdicom` (imports stay in the main thread: two threads importing the same
    packages at once can fail on a partly initialised module)."""
    import highdicom

    tables = getattr(getattr(highdicom, "_standard_utils", None), "get_module_attribute_map", None)
    if tables is not None:  # a cached private loader; without it the first object pays the load itself
        tables()


def build_case(prediction: Any, model_path: Path, volumes: Sequence[Dict[str, Any]], report: Any = None,
               overlay: bool = False, title: str = "") -> CaseObjects:
    """SEG (classes, and levels with ``report``), SR (class volumes from ``volumes``, the rows of
    :func:`lumbarseg.inference.outputs.measure`, and the report's measurements), and Secondary Captures of the
    overlay (``overlay``) and of the spine figure (with ``report``)."""
    require_highdicom()
    from lumbarseg.inference.dicom.sc import build_figures
    from lumbarseg.inference.dicom.seg import build_seg, model_identity, segments_of, series_numbers
    from lumbarseg.inference.dicom.sr import build_sr

    source = prediction.image.source or "input"
    if not prediction.image.header.dicom:
        raise LumbarsegError(source, "DICOM outputs need a DICOM input: the SEG and SR refer to its images")
    reference = prediction.image.header.dicom[0]
    segments = segments_of(prediction, report)
    numbers = series_numbers(reference)
    seg = build_seg(prediction, segments, model_path, numbers["seg"])
    name, _ = model_identity(model_path)
    ml = {row["class"]: row["volume_ml"] for row in volumes}
    objects: Dict[str, Any] = {"seg": seg, "sr": build_sr(seg, segments, ml, report, numbers["sr"], name)}
    pictures = []
    if overlay:
        from lumbarseg.inference.outputs import overlay_of

        pictures.append(("overlay", "overlay of the labels", overlay_of(prediction, title)))
    if report is not None:
        from lumbarseg.analysis.figure import spine_picture

        pictures.append(("spine", "spine report figure", spine_picture(report)))
    figures = build_figures(reference, [(what, rgb) for _, what, rgb in pictures], numbers["figures"])
    objects.update({kind: figure for (kind, _, _), figure in zip(pictures, figures)})
    return CaseObjects(objects)


def write_case(objects: CaseObjects, paths: Dict[str, Path]) -> None:
    """Each object to its file (``paths`` by kind, e.g. staging paths), as DICOM Part 10."""
    from lumbarseg.io.dicom import save_dataset

    for kind, dataset in objects.ordered():
        save_dataset(dataset, str(paths[kind]))
