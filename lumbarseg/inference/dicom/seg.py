"""The DICOM Segmentation (highdicom) of a prediction on a DICOM series.

One BINARY segment per foreground class present (SNOMED CT: vertebra, intervertebral disc, vertebral
canal) and, with a spine report, one per named level (L1 ... L5, S1, discs L1-L2 ... L5-S1). Frames
follow the source series' instances one to one (same frame of reference, same grid), so the SEG
decodes to exactly the mask lumbarseg writes as NIfTI. The algorithm is identified as PS3.3 C.8.20.2
asks: name, version, family (artificial intelligence) and, as parameters, the model file and its SHA-256.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
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


def segments_of(prediction: Any, report: Any = None) -> List[Segment]:
    """The class segments (present classes only) and, with ``report``, one segment per level present."""
    indices = prediction.class_indices()
    colours = prediction.metadata.colors
    segments: List[Segment] = []
    for index, name in enumerate(prediction.classes):
        if index and (indices == index).any():
            segments.append(Segment(len(segments) + 1, name, codes.class_code(name), index,
                                    tuple(int(c) for c in colours[index])))  # type: ignore[arg-type]
    if report is not None:
        from lumbarseg.analysis.levels import level_colour  # analysis is loaded when there is a report

        values = np.asarray(report.levels_volume.array)
        for level in report.levels:
            if (values == level.value).any():
                label = level.name + (" (partial)" if level.partial else "")
                segments.append(Segment(len(segments) + 1, label, codes.level_code(level.name, level.kind),
                                        level.value, level_colour(level), level))
    return segments


def seg_pixels(prediction: Any, segments: Sequence[Segment], report: Any = None) -> np.ndarray:
    """The array highdicom encodes, uint8 in the series' (instance, row, column) grid: the segment numbers as one
    label map when no segments overlap (classes only), else one binary plane per segment, made in place in one
    block (segment, instance, row, column) and viewed as (instance, row, column, segment), so that each frame
    highdicom takes is contiguous and already of its type."""
    indices = np.ascontiguousarray(frames_of(prediction.class_indices()))
    if all(s.level is None for s in segments):  # classes never overlap: a label map, 2-3 times faster to encode
        numbers = np.zeros(len(prediction.classes), np.uint8)
        for segment in segments:
            numbers[segment.value] = segment.number
        return numbers[indices]
    levels = np.ascontiguousarray(frames_of(np.asarray(report.levels_volume.array)))
    planes = np.empty((len(segments),) + indices.shape, np.uint8)
    for segment, plane in zip(segments, planes):
        np.equal(indices if segment.level is None else levels, segment.value, out=plane)
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


def build_seg(prediction: Any, segments: List[Segment], model_path: Path, series_number: Optional[int] = None,
              report: Any = None) -> Any:
    """The highdicom Segmentation of ``segments`` (level segments: of ``report``'s levels) on the prediction's
    source series (new UIDs every call)."""
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
        source_images=sources, pixel_array=seg_pixels(prediction, segments, report),
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
