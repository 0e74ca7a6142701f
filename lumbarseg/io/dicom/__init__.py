"""DICOM studies in: find the series of a study folder (:mod:`.study`), choose the one to segment
(:mod:`.choice`), and talk to a DICOMweb server (:mod:`.web`). Pixel data are read by
:func:`lumbarseg.io.readers.read_dicom_series`; DICOM outputs are written by :mod:`lumbarseg.inference.dicom`.
"""
from __future__ import annotations

from typing import Any


def save_dataset(dataset: Any, path: str) -> None:
    """Write a data set as a DICOM Part 10 file (preamble and file meta), with pydicom 3 or 2."""
    try:
        dataset.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        dataset.save_as(path, write_like_original=False)
