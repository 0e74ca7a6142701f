"""A real PACS: Orthanc with its DICOMweb plugin, started on 127.0.0.1 (the ``orthanc`` fixture). A study is
uploaded, ``lumbarseg predict`` runs URL to URL, and the SEG, SR and figures are read back from Orthanc.
Bad servers, answers and rejections are in the bad-input corpus (tests/safety/test_dicom_inputs.py)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pydicom
import pytest
from dicom_synth import write_study

pytest.importorskip("dicomweb_client", reason="DICOMweb needs the 'dicom' extra (dicomweb-client)")
hd = pytest.importorskip("highdicom", reason="DICOM outputs need the 'dicom' extra (highdicom)")
from dicomweb_client.api import DICOMwebClient  # noqa: E402

SECRET = "s3cr3t-token"


def upload(server, folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    DICOMwebClient(server.root).store_instances([pydicom.dcmread(str(p)) for p in files])
    return str(pydicom.dcmread(str(files[0])).StudyInstanceUID)


def modalities(server, study: str) -> List[str]:
    return sorted(str(item["00080060"]["Value"][0]) for item in DICOMwebClient(server.root).search_for_series(study))


def test_predict_url_to_url_stores_seg_sr_and_figures_into_the_study(orthanc, tmp_path: Path) -> None:
    write_study(tmp_path / "study")
    study = upload(orthanc, tmp_path / "study")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lumbarseg", "predict", "-i", f"{orthanc.root}/studies/{study}",
                             "-o", orthanc.root, "--model", "fast", "--measure", "--overlay", "--dicomweb-token",
                             SECRET], capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert 'series 2 "t2_tse_sag" (sagittal T2, 8 slices): the only sagittal T2 series' in lines[0]
    assert lines[-1] == f"1 of 1 case(s) segmented -> {orthanc.root}"
    assert modalities(orthanc, study) == ["MR", "MR", "MR", "OT", "SEG", "SR"]
    web = DICOMwebClient(orthanc.root)
    series = {str(s["0008103E"]["Value"][0]): str(s["0020000E"]["Value"][0]) for s in web.search_for_series(study)}
    [seg] = web.retrieve_series(study, series["lumbarseg segmentation"])
    [sr] = web.retrieve_series(study, series["lumbarseg measurements"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["t2_tse_sag"]
    labels = [item.SegmentLabel for item in seg.SegmentSequence]
    assert labels[:3] == ["vertebra", "disc", "canal"] and "L4" in labels
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(labels)
    figures = web.retrieve_series(study, series["lumbarseg figures"])
    assert sorted(int(f.InstanceNumber) for f in figures) == [1, 2] and figures[0].PatientID == "LS-0001"
    print(f"Orthanc round trip (predict URL -> URL, fast model, 8 slices, --measure --overlay): {seconds:.1f} s")
