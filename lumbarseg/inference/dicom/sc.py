"""DICOM Secondary Capture images of the overlay mosaic and the spine figure, for viewers that show no SEG.

Both pictures show sagittal slices as radiologists read them: head at the top (rows run to the feet, F),
anterior on the left (columns run posterior, P). Patient and study attributes come from the source image.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from lumbarseg import __version__


def build_figures(reference: Any, pictures: Sequence[Tuple[str, np.ndarray]], series_number: int) -> List[Any]:
    """One SC instance per (description, RGB picture), all in one new series."""
    import highdicom as hd

    series_uid = hd.UID()
    out = []
    for number, (description, rgb) in enumerate(pictures, start=1):
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB, bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT, series_instance_uid=series_uid,
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=number, manufacturer="lumbarseg",
            patient_orientation=("P", "F"))
        sc.SeriesDescription = "lumbarseg figures"
        sc.DerivationDescription = (f"{description} drawn by lumbarseg {__version__} (research use, not for "
                                    "clinical use)")
        sc.BurnedInAnnotation = "YES"  # captions (the case name among them) are drawn into the pixels
        sc.Laterality = ""  # type 2C: the spine is not a paired structure
        out.append(sc)
    return out
