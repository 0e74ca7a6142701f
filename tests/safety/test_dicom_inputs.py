"""The bad-input corpus, DICOM and PACS side (issue 20), and three mended messages of the output side.

Each case runs the real command in a fresh, memory-limited process (``corpus.run_cli``) and asserts one line
``lumbarseg: error: FILE-OR-URL: PROBLEM``, exit code 2, and nothing written (locally) or stored (on the
server). The studies are made here (tests/dicom_synth.py); the server is a real Orthanc (the ``orthanc``
fixture) or, for an HTTP 503, a two-line HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import http.server
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pydicom
import pytest
from corpus import assert_one_line_error, assert_unchanged, run_cli, snapshot
from dicom_synth import AXIAL, SeriesSpec, StudyInfo, phantom_series, write_study
from onnx_models import threshold_model, tiny_metadata
from volume_synth import LABELS, write_case

from lumbarseg.io.slices import write_png

SECRET = "s3cr3t-token"


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    threshold_model(tmp_path / "model.onnx", tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS))
    return tmp_path


def predict(tmp: Path, source, *flags: str) -> List[str]:
    return ["predict", "-i", str(source), "-o", str(tmp / "out"), "--model", str(tmp / "model.onnx"), *flags]


def _edit(folder: Path, change) -> None:
    for index, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(str(path))
        change(index, ds)
        ds.save_as(str(path))


def test_mixed_frames_of_reference(tmp: Path) -> None:
    write_study(tmp / "in" / "study", [phantom_series()])
    other = pydicom.uid.generate_uid()
    _edit(tmp / "in" / "study", lambda i, ds: setattr(ds, "FrameOfReferenceUID", other) if i >= 4 else None)
    _expect(tmp, predict(tmp, tmp / "in" / "study"), ["study"], r"mixed frames of reference in one series \(4 in .*"
                                                                r"4 in .*\)")


def test_duplicate_slices(tmp: Path) -> None:
    write_study(tmp / "in" / "study", [phantom_series()])
    first = sorted((tmp / "in" / "study").iterdir())[3]
    ds = pydicom.dcmread(str(first))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(str(first.with_name("IM_copy")))
    _expect(tmp, predict(tmp, tmp / "in" / "study"), ["study"],
            r"non-uniform sampling: slice spacing 0 mm between IM020004 and IM_copy .*doubled")


def test_no_usable_series(tmp: Path) -> None:
    axial = SeriesSpec(3, "t2_tse_tra", AXIAL, phantom_series().pixels[:4], (0.7, 0.7), 4.0, 100.0, 4000.0)
    write_study(tmp / "in" / "study", [phantom_series(2, "t1_tse_sag", 12.0, 600.0), axial])
    _expect(tmp, predict(tmp, tmp / "in" / "study"), ["study"],
            r'no series to segment .* the study holds: 2 "t1_tse_sag" \(sagittal T1, 8 slices\), 3 "t2_tse_tra" '
            r"\(axial T2, 4 slices\); choose one with --series NUMBER\|UID")


def test_a_seg_that_would_be_empty(tmp: Path) -> None:
    series = phantom_series()
    series.pixels[:] = 0  # nothing for the model to find
    write_study(tmp / "in" / "study", [series])
    pytest.importorskip("highdicom", reason="DICOM outputs need the 'dicom' extra")
    _expect(tmp, predict(tmp, tmp / "in" / "study", "--output-type", "dicom"), ["study"],
            r"the segmentation is empty .*no DICOM SEG written")


def test_dicom_output_of_a_nifti_input(tmp: Path) -> None:
    pytest.importorskip("highdicom", reason="DICOM outputs need the 'dicom' extra")
    write_case(tmp / "in" / "case.nii.gz") if (tmp / "in").mkdir() is None else None
    _expect(tmp, predict(tmp, tmp / "in" / "case.nii.gz", "--output-type", "dicom"), ["case.nii.gz"],
            r"--output-type dicom needs DICOM input")


def _expect(tmp: Path, args: List[str], names: List[str], problem: str) -> str:
    before = snapshot(tmp)
    line = assert_one_line_error(run_cli(args), names, problem)
    assert_unchanged(before, tmp)
    assert not (tmp / "out").exists()
    return line


# --- servers -------------------------------------------------------------------------------------------------


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def unavailable() -> Iterator[int]:
    """A server on 127.0.0.1 that answers every request with HTTP 503."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    from orthanc import free_port

    return free_port()


def test_dicomweb_input_errors_name_the_url_and_never_a_credential(tmp: Path, unavailable: int) -> None:
    pytest.importorskip("dicomweb_client", reason="DICOMweb needs the 'dicom' extra")
    study = "1.2.826.0.1.3680043.8.498.1"
    closed = _free_port()
    for url, shown, problem in [
        (f"http://user:pw@127.0.0.1:{closed}/dicom-web/studies/{study}", f"http://127.0.0.1:{closed}/dicom-web",
         r"QIDO-RS\) failed: cannot reach the DICOMweb server"),
        (f"http://127.0.0.1:{unavailable}/dicom-web/studies/{study}", f"127.0.0.1:{unavailable}/dicom-web/studies/",
         r"failed: HTTP 503"),
        ("http://127.0.0.1:1/not/dicomweb", "http://127.0.0.1:1/not/dicomweb", r"not a DICOMweb study or series URL"),
    ]:
        line = _expect(tmp, predict(tmp, url, "--dicomweb-token", SECRET), [shown], problem)
        assert SECRET not in line and "pw@" not in line and "user" not in line


def test_dicomweb_http_404_and_an_unreachable_output(tmp: Path, orthanc) -> None:
    pytest.importorskip("dicomweb_client", reason="DICOMweb needs the 'dicom' extra")
    url = f"{orthanc.root}/studies/1.2.826.0.1.3680043.8.498.1/series/1.2.3"
    _expect(tmp, predict(tmp, url), [url], r"failed: HTTP 404 .*no such study or series on the server")
    write_study(tmp / "in" / "study", [phantom_series()])
    closed = f"http://127.0.0.1:{_free_port()}/dicom-web"
    args = ["predict", "-i", str(tmp / "in" / "study"), "-o", closed, "--model", str(tmp / "model.onnx")]
    _expect(tmp, args, [closed], r"QIDO-RS\) failed: cannot reach")


def test_a_stow_rejection_stores_nothing_of_the_case(tmp: Path, orthanc) -> None:
    """Orthanc's Lua filter (tests/orthanc.py) refuses SEG and SR objects of one patient; Orthanc's DICOMweb
    plugin (1.7) still answers success, so lumbarseg checks what the server holds afterwards."""
    pytest.importorskip("highdicom", reason="DICOM outputs need the 'dicom' extra")
    from dicomweb_client.api import DICOMwebClient
    from orthanc import REJECTED_PATIENT

    write_study(tmp / "in" / "study", [phantom_series()], study=StudyInfo())
    _edit(tmp / "in" / "study", lambda i, ds: setattr(ds, "PatientID", REJECTED_PATIENT))
    files = sorted((tmp / "in" / "study").iterdir())
    web = DICOMwebClient(orthanc.root)
    web.store_instances([pydicom.dcmread(str(p)) for p in files])
    study = str(pydicom.dcmread(str(files[0])).StudyInstanceUID)
    args = ["predict", "-i", str(tmp / "in" / "study"), "-o", orthanc.root, "--model", str(tmp / "model.onnx")]
    _expect(tmp, args, [f"{orthanc.root}/studies/{study}"],
            r"STOW-RS: 2 of 2 object\(s\) not stored \(.*refused by a filter\?\); 0 stored")
    assert sorted(str(s["00080060"]["Value"][0]) for s in web.search_for_series(study)) == ["MR"]


# --- three mended messages -----------------------------------------------------------------------------------


def test_an_output_below_a_file_names_the_output(tmp: Path) -> None:
    write_case(tmp / "in" / "case.nii.gz") if (tmp / "in").mkdir() is None else None
    (tmp / "afile").write_text("a file where a folder should be")
    for output in (tmp / "afile" / "seg.nii.gz", tmp / "afile" / "sub"):
        args = ["predict", "-i", str(tmp / "in" / "case.nii.gz"), "-o", str(output), "--model", str(tmp / "model.onnx")]
        before = snapshot(tmp)
        line = assert_one_line_error(run_cli(args), [str(output)], rf"cannot write here: {tmp / 'afile'} is a file")
        assert "Errno" not in line and line.startswith(f"lumbarseg: error: {output}")  # the output, not the input
        assert_unchanged(before, tmp)


def _read_only(folder: Path) -> bool:
    """Make ``folder`` unwritable, also for root (the immutable attribute); False where that is not possible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(folder)]).returncode == 0


def test_a_read_only_folder_and_a_full_disk_name_the_output_not_a_temporary(tmp: Path) -> None:
    write_case(tmp / "in" / "case.nii.gz") if (tmp / "in").mkdir() is None else None
    locked = tmp / "locked"
    locked.mkdir()
    if not _read_only(locked):
        pytest.skip("cannot make a folder read-only for root here (no chattr +i on this file system)")
    try:
        for output in (locked / "seg.nii.gz", locked / "seg.mha"):
            args = ["predict", "-i", str(tmp / "in" / "case.nii.gz"), "-o", str(output), "--model",
                    str(tmp / "model.onnx"), "--overlay"]
            line = assert_one_line_error(run_cli(args), [str(output)], r"cannot write")
            assert ".tmp-" not in line
        assert not list(locked.iterdir())
    finally:
        subprocess.run(["chattr", "-i", str(locked)]) if os.geteuid() == 0 else locked.chmod(0o755)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))

    (tmp / "full").mkdir()
    result = subprocess.run([sys.executable, "-m", "lumbarseg", "predict", "-i", str(tmp / "in" / "case.nii.gz"), "-o",
                             str(tmp / "full" / "seg.nii.gz"), "--model", str(tmp / "model.onnx")],
                            capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    line = assert_one_line_error(result, [str(tmp / "full" / "seg.nii.gz")], r"cannot write the output \(File too l")
    assert ".tmp-" not in line and not list((tmp / "full").iterdir())


def test_dataset_check_strict_refuses_locations_outside_without_opening_them(tmp: Path) -> None:
    """``../outside.png`` (a broken image outside the dataset's folder) and an absolute path are refused by name;
    neither is opened (no 'cannot decode' for them)."""
    (tmp / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    data = tmp / "ds"
    (data / "images").mkdir(parents=True)
    write_png(data / "images" / "1_slice1.png", np.zeros((8, 8), np.uint8))
    (data / "ds.yml").write_text(
        "name: t\nimages:\n- location: images/1_slice1.png\n  label: images/1_slice1.png\n"
        "- location: ../outside.png\n  label: ../outside.png\n"
        f"- location: {tmp / 'outside.png'}\n  label: {tmp / 'outside.png'}\n"
        "split:\n  training: [0, 1, 2]\n")
    result = run_cli(["dataset", "check", str(data / "ds.yml"), "--strict"])
    lines = [line for line in result.stderr.splitlines() if line.startswith("lumbarseg: error:")]
    assert result.returncode == 2
    assert any("location '../outside.png' escapes the dataset folder" in line for line in lines)
    assert any("is absolute (escapes the dataset folder)" in line for line in lines)
    assert not any("outside.png: cannot decode" in line for line in lines), lines
