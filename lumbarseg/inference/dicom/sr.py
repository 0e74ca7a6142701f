"""The DICOM Structured Report (TID 1500 Measurement Report, highdicom.sr) of a prediction.

One TID 1411 volumetric group per SEG segment, referencing it: the class volumes (mL) and, with a spine
report, each level's measurements (the report's own keys and units: heights and depths in mm, ratios,
grades, canal AP diameter, listhesis) with its flags and whether its name is uncertain, as
qualitative evaluations. The alignment (lordosis) and the report's level-naming confidence
form a TID 1501 group. Values absent from the report (a partial level's heights) are left out.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from lumbarseg.inference.dicom import codes
from lumbarseg.inference.dicom.seg import Segment


def _measurements(values: Dict[str, Optional[float]]) -> List[Any]:
    import highdicom as hd

    out = []
    for key, value in values.items():
        if value is None or not math.isfinite(float(value)):
            continue
        unit, _ = codes.unit_of(key)
        out.append(hd.sr.Measurement(name=codes.measurement_code(key), value=float(value), unit=unit))
    return out


def _evaluations(level: Any) -> List[Any]:
    import highdicom as hd

    out = [hd.sr.QualitativeEvaluation(codes.flag_code(flag), codes.present()) for flag in level.flags]
    out.append(hd.sr.QualitativeEvaluation(codes.code("level_name_confidence", codes.SCHEME, "Level name confidence"),
                                           codes.confidence("uncertain" if level.uncertain else "high")))
    return out


def _group(seg: Any, segment: Segment, measurements: List[Any], evaluations: List[Any]) -> Any:
    import highdicom as hd

    reference = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segment.number,
        source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=segment.label[:64]),
        referenced_segment=reference, finding_type=segment.property_type,
        measurements=measurements or None, qualitative_evaluations=evaluations or None)


def _alignment(report: Any) -> Any:
    import highdicom as hd

    measurements = _measurements(dict(report.alignment))
    evaluations = [hd.sr.QualitativeEvaluation(codes.code("levels_confidence", codes.SCHEME, "Level naming confidence"),
                                               codes.confidence(report.levels_confidence))]
    for note in report.confidence_notes:
        evaluations.append(hd.sr.QualitativeEvaluation(
            codes.code("confidence_note", codes.SCHEME, "Level naming note"),
            codes.code("note", codes.SCHEME, str(note)[:64])))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="alignment"),
        finding_type=codes.code("122496007", "SCT", "Lumbar spine"),
        measurements=measurements or None, qualitative_evaluations=evaluations)


def build_sr(seg: Any, segments: Sequence[Segment], volumes: Dict[str, float], report: Any = None,
             series_number: int = 1, model_name: str = "") -> Any:
    """The Comprehensive 3D SR measurement report; ``volumes`` are the class volumes in mL by class name."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    groups = []
    for segment in segments:
        if segment.level is None:
            values = {"volume_ml": volumes.get(segment.label)}
            groups.append(_group(seg, segment, _measurements(values), []))
        else:
            groups.append(_group(seg, segment, _measurements(segment.level.measurements),
                                 _evaluations(segment.level)))
    if report is not None:
        groups.append(_alignment(report))
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="lumbarseg", manufacturer_name="lumbarseg", model_name=model_name[:64] or None))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.code("363679005", "SCT", "Imaging procedure"), imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg], content=content[0], series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lumbarseg", is_complete=True)
    sr.SeriesDescription = "lumbarseg measurements"
    sr.CodingSchemeIdentificationSequence = [codes.scheme_identification()]  # required for a scheme not in PS3.16
    return sr
