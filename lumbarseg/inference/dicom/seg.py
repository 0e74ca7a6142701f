"""The DICOM Segmentation (highdicom) of a prediction on a DICOM series.

One BINARY segment per foreground class present (SNOMED CT: vertebra, intervertebral disc, vertebral
canal) and, with a spine report, one per named level (L1 ... L5, S1, discs L1-L2 ... L5-S1). Frames
follow the source series' instances one to one (same frame of reference, same grid), so the SEG
decodes to exactly the mask lumbarseg writes as NIfTI. The algorithm is identified as PS3.3 C.8.20.2
asks: name, version, family (artificial intelligence) and, as parameters, the model file and its SHA-256.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lumbarseg import __version__
from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.dicom import codes

SEG_SERIES_OFFSET = 1000  # SEG series number = source series number + this (SR: + 1, figures: + 2)


@dataclass
class Segment:
    """A segment of the SEG: its number, label, codes, and the voxels it covers: those of class index ``value``
    in the prediction, or, for a level segment, those of level value ``value`` in the report's levels volume."""

    number: int
    label: str
    property_type: Any
    value: int
    colour: Tuple[int, int, int] = (255, 255, 255)
    level: Any = None  # the spine report's Level, for level segments


def model_identity(model_path: Path) -> Tuple[str, str]:
    """(model file name, first 16 hex digits of its SHA-256)."""
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    return Path(model_path).name, digest[:16]


def frames_of(volume_array: np.ndarray) -> np.ndarray:
    """A volume array read from a DICOM series (ITK x, y, z = column, row, instance) as (instance, row, column)."""
    return np.transpose(volume_array, (2, 1, 0))


@dataclass(frozen=True)
class Labels:
    """What the segments cover, in the series' (instance, row, column) grid as contiguous arrays, each made once:
    the prediction's class indices and, with a spine report, its level values."""

    classes: np.ndarray = field(repr=False)
    levels: Optional[np.ndarray] = field(default=None, repr=False)


def labels_of(prediction: Any, report: Any = None) -> Labels:
    classes = np.ascontiguousarray(frames_of(prediction.class_indices()))
    if report is None:
        return Labels(classes)
    return Labels(classes, np.ascontiguousarray(frames_of(np.asarray(report.levels_volume.array))))


def segments_of(prediction: Any, labels: Labels, report: Any = None) -> List[Segment]:
    """The class segments (present classes only) and, with ``report``, one segment per level present."""
    colours = prediction.metadata.colors
    segments: List[Segment] = []
    for index, name in enumerate(prediction.classes):
        if index and (labels.classes == index).any():
            segments.append(Segment(len(segments) + 1, name, codes.class_code(name), index,
                                    tuple(int(c) for c in colours[index])))  # type: ignore[arg-type]
    if report is not None and labels.levels is not None:
        from lumbarseg.analysis.levels import level_colour  # analysis is loaded when there is a report

        for level in report.levels:
            if (labels.levels == level.value).any():
                label = level.name + (" (partial)" if level.partial else "")
                segments.append(Segment(len(segments) + 1, label, codes.level_code(level.name, level.kind),
                                        level.value, level_colour(level), level))
    return segments


def seg_pixels(labels: Labels, segments: Sequence[Segment]) -> np.ndarray:
    """The array highdicom encodes, uint8 in the series' (instance, row, column) grid: the segment numbers as one
    label map when no segments overlap (classes only), else one binary plane per segment, made in place in one
    block (segment, instance, row, column) and viewed as (instance, row, column, segment), so that each frame
    highdicom takes is contiguous and already of its type."""
    if all(s.level is None for s in segments):  # classes never overlap: a label map, 2-3 times faster to encode
        numbers = np.zeros(int(labels.classes.max()) + 1, np.uint8)
        for segment in segments:
            numbers[segment.value] = segment.number
        return numbers[labels.classes]
    planes = np.empty((len(segments),) + labels.classes.shape, np.uint8)
    for segment, plane in zip(segments, planes):
        np.equal(labels.classes if segment.level is None else labels.levels, segment.value, out=plane)
    return np.moveaxis(planes, 0, -1)


def _description(segment: Segment, algorithm: Any) -> Any:
    import highdicom as hd

    colour = hd.color.CIELabColor.from_rgb(*segment.colour)
    return hd.seg.SegmentDescription(
        segment_number=segment.number, segment_label=segment.label[:64],
        segmented_property_category=codes.sct(codes.ANATOMICAL_STRUCTURE),
        segmented_property_type=segment.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=segment.label[:64], display_color=colour)


def check_sources(sources: Sequence[Any], shape: Tuple[int, ...], source: str) -> None:
    """The mask's grid is the source series' grid: one frame per instance, Rows x Columns each."""
    if not sources:
        raise LumbarsegError(source, "DICOM outputs need a DICOM input: the SEG refers to the images of its series")
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if shape != (len(sources), rows, cols):
        raise LumbarsegError(source, f"mask grid {shape} is not the series' {len(sources)} x {rows} x {cols}")


def build_seg(prediction: Any, segments: List[Segment], labels: Labels, model_path: Path,
              series_number: Optional[int] = None) -> Any:
    """The highdicom Segmentation of ``segments`` (covering ``labels``) on the prediction's source series (new UIDs
    every call)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    sources = list(prediction.image.header.dicom)
    source = prediction.image.source or "input"
    check_sources(sources, frames_of(prediction.mask.array).shape, source)
    if not segments:
        raise LumbarsegError(source, "the segmentation is empty (no vertebra, disc or canal found): no DICOM SEG "
                                     "written")
    name, digest = model_identity(model_path)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="lumbarseg", family=dcm_codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters={"model": name, "model_sha256": digest})
    number = series_number if series_number is not None else _series_number(sources[0], 0)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=seg_pixels(labels, segments),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(s, algorithm) for s in segments], series_instance_uid=hd.UID(),
        series_number=number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lumbarseg",
        manufacturer_model_name=Path(name).stem[:64], software_versions=__version__, device_serial_number=digest,
        content_label="LUMBARSEG", content_description="Lumbar spine segmentation (research use, not for clinical use)",
        content_creator_name=None)
    seg.SeriesDescription = "lumbarseg segmentation"
    return seg


def _series_number(reference: Any, offset: int) -> int:
    number = reference.get("SeriesNumber")
    try:
        base = int(number) if number not in (None, "") else 0
    except (TypeError, ValueError):
        base = 0
    return base + SEG_SERIES_OFFSET + offset


def series_numbers(reference: Any) -> Dict[str, int]:
    """Series numbers of the outputs: the source series' number + 1000 (SEG), + 1001 (SR), + 1002 (figures)."""
    return {kind: _series_number(reference, offset) for offset, kind in enumerate(("seg", "sr", "figures"))}
