"""Small synthetic DICOM studies for the DICOM tests: made here with pydicom, never downloaded.

``write_study`` writes what a PACS export of a lumbar MRI holds: a three-plane localizer, a sagittal T2 TSE
series (by default the 8 slices of the shipped sample ``datasets/sample/spider161_t2.nii.gz``, so the real
model finds a spine), an axial T2 and optionally a sagittal T1; flat or one folder per series, with or without
a DICOMDIR. ``recompress`` re-encodes a study's files in a compressed transfer syntax PACS exports use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "sample" / "spider161_t2.nii.gz"
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # rows run posterior, columns run to the feet (LPS)
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
PATIENT = {"PatientName": "Lumbar^Test", "PatientID": "LS-0001", "PatientBirthDate": "19700101",
           "PatientSex": "F"}


@dataclass
class StudyInfo:
    uid: str = field(default_factory=generate_uid)
    frame_of_reference: str = field(default_factory=generate_uid)
    accession: str = "A20260115"
    study_id: str = "1"
    date: str = "20260115"


@dataclass
class SeriesSpec:
    number: int
    description: str
    orientation: Sequence[float]
    pixels: np.ndarray  # (instances, rows, cols) uint16
    spacing: Tuple[float, float]  # row, column mm
    gap: float  # mm between slice centres
    te: float
    tr: float
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientations: Optional[List[Sequence[float]]] = None  # per instance (a localizer)
    uid: str = field(default_factory=generate_uid)


def sample_sagittal(slices: int = 8) -> Tuple[np.ndarray, Tuple[float, float], float]:
    """The sample's slices (RIP: slice, row = inferior, column = posterior) as uint16, its pixel and slice spacing."""
    image = nib.load(str(SAMPLE))
    array = np.asarray(image.dataobj).astype(np.uint16)
    zooms = image.header.get_zooms()
    picks = np.resize(np.arange(array.shape[0]), slices)  # more slices than the sample: repeat it
    return array[picks], (float(zooms[1]), float(zooms[2])), float(zooms[0])


def mr_instance(study: StudyInfo, series: SeriesSpec, index: int) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    orientation = list(series.orientations[index] if series.orientations else series.orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    position = np.asarray(series.origin) + (0.0 if series.orientations else index * series.gap) * normal
    values = {
        "SOPClassUID": MRImageStorage, "SOPInstanceUID": meta.MediaStorageSOPInstanceUID,
        "StudyInstanceUID": study.uid, "StudyDate": study.date, "StudyTime": "101500",
        "AccessionNumber": study.accession,
        "ReferringPhysicianName": "", "StudyID": study.study_id, "StudyDescription": "MR lumbar spine",
        "Modality": "MR", "SeriesInstanceUID": series.uid, "SeriesNumber": series.number,
        "SeriesDescription": series.description, "SeriesDate": study.date, "SeriesTime": "101500",
        "FrameOfReferenceUID": study.frame_of_reference, "PositionReferenceIndicator": "",
        "Manufacturer": "Synthetic", "InstanceNumber": index + 1, "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"],
        "ImageOrientationPatient": [f"{v:.6f}" for v in orientation],
        "ImagePositionPatient": [f"{v:.4f}" for v in position], "SliceLocation": f"{float(position @ normal):.4f}",
        "PixelSpacing": [f"{series.spacing[0]:.4f}", f"{series.spacing[1]:.4f}"], "SliceThickness": f"{series.gap:.2f}",
        "ScanningSequence": "SE", "SequenceVariant": "SK", "ScanOptions": "", "MRAcquisitionType": "2D",
        "EchoTime": series.te, "RepetitionTime": series.tr, "EchoTrainLength": 15, "MagneticFieldStrength": 1.5,
        "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "Rows": series.pixels.shape[1],
        "Columns": series.pixels.shape[2], "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
        "PixelRepresentation": 0,
    }
    for key, value in values.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(series.pixels[index], dtype="<u2").tobytes()
    return ds


def phantom_series(number: int = 2, description: str = "t2_tse_sag", te: float = 110.0, tr: float = 3500.0,
                   slices: int = 8, spacing: Tuple[float, float] = (0.5, 0.7)) -> SeriesSpec:
    """The reader tests' phantom (tests/volume_synth.py: RIP classes as intensities) as a small sagittal series."""
    from volume_synth import image_of, phantom_rip

    pixels = image_of(phantom_rip((slices, 40, 36))).astype(np.uint16)
    return SeriesSpec(number, description, SAGITTAL, pixels, spacing, 2.0, te, tr)


def default_series(slices: int = 8, sagittal_t1: bool = False) -> List[SeriesSpec]:
    rng = np.random.default_rng(0)
    small = lambda n: rng.integers(0, 400, (n, 48, 48)).astype(np.uint16)  # noqa: E731
    sag, spacing, gap = sample_sagittal(slices)
    series = [
        SeriesSpec(1, "localizer", SAGITTAL, small(3), (4.0, 4.0), 0.0, 3.0, 8.0,
                   orientations=[SAGITTAL, CORONAL, AXIAL]),
        SeriesSpec(2, "t2_tse_sag", SAGITTAL, sag, spacing, gap, 110.0, 3500.0),
        SeriesSpec(3, "t2_tse_tra", AXIAL, small(5), (0.7, 0.7), 4.0, 100.0, 4000.0, origin=(-20.0, -20.0, -150.0)),
    ]
    if sagittal_t1:
        series.append(SeriesSpec(4, "t1_tse_sag", SAGITTAL, sag[:, ::2, ::2], (spacing[0] * 2, spacing[1] * 2), gap,
                                 12.0, 600.0))
    return series


def write_study(folder: Path, series: Optional[List[SeriesSpec]] = None, layout: str = "flat",
                study: Optional[StudyInfo] = None, dicomdir: bool = False) -> Dict[int, List[Path]]:
    """Write a study: ``layout`` "flat" (all files in ``folder``) or "nested" (``folder/SERIES<n>/``)."""
    study = study or StudyInfo()
    series = series if series is not None else default_series()
    written: Dict[int, List[Path]] = {}
    for spec in series:
        where = folder if layout == "flat" else folder / f"SE{spec.number:04d}"
        where.mkdir(parents=True, exist_ok=True)
        for index in range(spec.pixels.shape[0]):
            path = where / f"IM{spec.number:02d}{index + 1:04d}"
            mr_instance(study, spec, index).save_as(str(path), enforce_file_format=True)
            written.setdefault(spec.number, []).append(path)
    if dicomdir:
        write_dicomdir(folder, [p for files in written.values() for p in files])
    return written


def write_dicomdir(folder: Path, files: Sequence[Path]) -> Path:
    """A DICOMDIR listing ``files`` (pydicom's FileSet)."""
    from pydicom.fileset import FileSet

    fs = FileSet()
    for path in files:
        fs.add(pydicom.dcmread(str(path)))
    staging = folder.parent / (folder.name + "-fileset")
    fs.write(str(staging))
    for path in sorted(staging.rglob("*")):  # the FileSet copies the files under its own names: move them in
        target = folder / path.relative_to(staging)
        if path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
    for path in files:
        path.unlink()
    return folder / "DICOMDIR"


COMPRESSED = {
    "jpeg-lossless": "1.2.840.10008.1.2.4.70", "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg-2000": "1.2.840.10008.1.2.4.90", "rle": "1.2.840.10008.1.2.5",
}


GDCM_COMPRESSORS = {"jpeg-lossless": "JPEG", "jpeg-2000": "JPEG2000"}  # what pydicom cannot (or needs a plugin to)


def recompress(files: Sequence[Path], name: str) -> None:
    """Re-encode files in place: RLE by pydicom itself, JPEG-LS by pyjpegls (pydicom's encoder, installed with
    highdicom); JPEG lossless (process 14) and JPEG 2000, which pydicom cannot encode without other plugins, by
    GDCM inside SimpleITK."""
    from pydicom.uid import UID

    syntax = UID(COMPRESSED[name])
    for path in files:
        ds = pydicom.dcmread(str(path))
        if name in GDCM_COMPRESSORS:
            ds.PixelData = _gdcm_encoded(ds.pixel_array, GDCM_COMPRESSORS[name], syntax)
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax)
        ds.save_as(str(path), enforce_file_format=True)


def _gdcm_encoded(plane: np.ndarray, compressor: str, syntax: str) -> bytes:
    """The encapsulated pixel data of the file GDCM writes for ``plane`` with ``compressor``."""
    import tempfile

    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "x.dcm"
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(target))
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
        writer.Execute(sitk.GetImageFromArray(plane.astype(np.uint16)))
        written = pydicom.dcmread(str(target))
        assert written.file_meta.TransferSyntaxUID == syntax, written.file_meta.TransferSyntaxUID
        return written.PixelData
