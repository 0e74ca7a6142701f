"""DICOM studies in: series discovery (flat, nested, DICOMDIR), the choice rule, batches of studies, and the
compressed transfer syntaxes PACS exports use, on studies made here (tests/dicom_synth.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_synth import (
    AXIAL,
    COMPRESSED,
    SAGITTAL,
    SeriesSpec,
    StudyInfo,
    default_series,
    phantom_series,
    recompress,
    write_study,
)

from lumbarseg.cli import main
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.cases import find_cases
from lumbarseg.io.dicom.choice import choose
from lumbarseg.io.dicom.study import find_studies, plane_of, weighting
from lumbarseg.io.readers import read_volume


def test_a_flat_export_lists_its_series_and_the_sagittal_t2_is_chosen(tmp_path: Path) -> None:
    write_study(tmp_path / "study")
    [study] = find_studies(tmp_path / "study")
    assert [(s.number, s.plane, s.weighting, s.slices, s.localizer) for s in study.series] == [
        (1, "mixed", "T1", 3, True), (2, "sagittal", "T2", 8, False), (3, "axial", "T2", 5, False)]
    choice = choose(study)
    assert choice.series.number == 2 and choice.reason == "the only sagittal T2 series"
    [case] = find_cases(tmp_path / "study")
    assert case.name == "study" and 't2_tse_sag' in case.note and "the only sagittal T2 series" in case.note
    volume = case.read()
    assert volume.shape == (512, 640, 8) and volume.orientation == "PIR" and len(volume.header.dicom) == 8
    np.testing.assert_allclose(volume.spacing, (0.47, 0.47, 0.9), atol=1e-4)


@pytest.mark.parametrize("layout", ["nested", "dicomdir"])
def test_nested_folders_and_a_dicomdir_give_the_same_study(tmp_path: Path, layout: str) -> None:
    series = [phantom_series(), SeriesSpec(3, "t2_tse_tra", AXIAL, phantom_series().pixels[:4], (0.7, 0.7), 4.0,
                                           100.0, 4000.0)]
    write_study(tmp_path / "flat", series)
    write_study(tmp_path / "other", series, layout="nested" if layout == "nested" else "flat",
                dicomdir=layout == "dicomdir")
    if layout == "dicomdir":
        assert (tmp_path / "other" / "DICOMDIR").is_file() and not list((tmp_path / "other").glob("IM*"))
        (tmp_path / "other" / "stray.dcm").write_bytes(b"not listed by the DICOMDIR")  # a DICOMDIR is honoured
    [flat], [other] = find_studies(tmp_path / "flat"), find_studies(tmp_path / "other")
    assert [s.summary() for s in flat.series] == [s.summary() for s in other.series]
    np.testing.assert_array_equal(find_cases(tmp_path / "flat")[0].read().array,
                                  find_cases(tmp_path / "other")[0].read().array)


def test_the_rule_prefers_t2_then_slices_then_finer_spacing_and_says_why(tmp_path: Path) -> None:
    series = [phantom_series(2, "t1_tse_sag", 12.0, 600.0, slices=12), phantom_series(3, "t2 coarse", slices=8,
                                                                                     spacing=(0.9, 0.9)),
              phantom_series(4, "t2 fine", slices=8, spacing=(0.5, 0.5))]
    write_study(tmp_path / "a", series)
    choice = choose(find_studies(tmp_path / "a")[0])
    assert choice.series.number == 4 and choice.reason == "the sagittal T2 series with the finest in-plane spacing"
    write_study(tmp_path / "b", series[:2] + [phantom_series(4, "t2 fine", slices=6, spacing=(0.5, 0.5))])
    choice = choose(find_studies(tmp_path / "b")[0])
    assert choice.series.number == 3 and choice.reason == "the sagittal T2 series with the most slices"


def test_no_fitting_series_is_one_line_listing_the_study_and_series_overrides(tmp_path: Path) -> None:
    axial = SeriesSpec(3, "t2_tse_tra", AXIAL, phantom_series().pixels[:4], (0.7, 0.7), 4.0, 100.0, 4000.0)
    written = write_study(tmp_path / "s", [phantom_series(2, "t1_tse_sag", 12.0, 600.0), axial])
    [case] = find_cases(tmp_path / "s")
    with pytest.raises(LumbarsegError, match=r'no series to segment .*2 "t1_tse_sag" \(sagittal T1, 8 slices\), '
                                             r'3 "t2_tse_tra" \(axial T2, 4 slices\); choose one with --series'):
        case.read()
    [by_number] = find_cases(tmp_path / "s", series="2")
    assert by_number.note.endswith("chosen with --series") and by_number.read().shape == (36, 40, 8)
    import pydicom

    uid = str(pydicom.dcmread(str(written[3][0])).SeriesInstanceUID)
    assert find_cases(tmp_path / "s", series=uid)[0].read().shape == (36, 40, 4)
    with pytest.raises(LumbarsegError, match="--series 9: no such series"):
        find_cases(tmp_path / "s", series="9")[0].read()


def test_weighting_and_plane_guesses() -> None:
    assert [weighting(d, te, tr, ti) for d, te, tr, ti in [
        ("t2_tse_sag", None, None, None), ("", 110, 3500, None), ("", 12, 600, None), ("sag tirm", 60, 4000, 150),
        ("", 30, 4000, 160), ("pd_tse", 30, 3000, None), ("", None, None, None)]] == [
        "T2", "T2", "T1", "STIR", "STIR", "other", "other"]
    assert [plane_of(o) for o in (SAGITTAL, AXIAL, [1, 0, 0, 0, 0, -1], None)] == ["sagittal", "axial", "coronal", "-"]


def test_a_folder_of_studies_is_a_batch_one_case_per_study(tmp_path: Path) -> None:
    write_study(tmp_path / "all" / "p01", [phantom_series()], study=StudyInfo(study_id="11"))
    write_study(tmp_path / "all" / "p02", [phantom_series()], layout="nested", study=StudyInfo(study_id="12"))
    cases = find_cases(tmp_path / "all")
    assert [c.name for c in cases] == ["p01", "p02"] and all(c.read().shape == (36, 40, 8) for c in cases)
    flat = tmp_path / "flat"
    for number, study_id in ((2, "21"), (5, "22")):  # file names differ by series number
        write_study(flat, [phantom_series(number)], study=StudyInfo(study_id=study_id))
    assert sorted(c.name for c in find_cases(flat)) == ["flat_21", "flat_22"]
    with pytest.raises(LumbarsegError, match="holds 2 DICOM studies"):
        read_volume(flat)


@pytest.mark.parametrize("syntax", sorted(COMPRESSED))
def test_compressed_transfer_syntaxes_read_like_the_uncompressed_series(tmp_path: Path, syntax: str) -> None:
    if syntax == "jpeg-ls":
        pytest.importorskip("jpeg_ls", reason="pyjpegls (installed with highdicom) encodes JPEG-LS")
    files = write_study(tmp_path / "plain", [phantom_series()])[2]
    shutil.copytree(tmp_path / "plain", tmp_path / "packed")
    recompress(sorted((tmp_path / "packed").iterdir()), syntax)
    import pydicom

    assert pydicom.dcmread(str(tmp_path / "packed" / files[0].name)).file_meta.TransferSyntaxUID == COMPRESSED[syntax]
    plain, packed = read_volume(tmp_path / "plain"), read_volume(tmp_path / "packed")
    np.testing.assert_array_equal(packed.array, plain.array)
    np.testing.assert_allclose(packed.affine, plain.affine)


def test_series_command_lists_and_marks_the_chosen_series(tmp_path: Path, capsys) -> None:
    write_study(tmp_path / "study", default_series())
    assert main(["series", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out.splitlines()
    marked = [line for line in out if line.startswith("*  ")]
    assert len(marked) == 1 and "t2_tse_sag" in marked[0] and "sagittal" in marked[0] and "0.47 x 0.47" in marked[0]
    assert "* the only sagittal T2 series" in out and out[-1].startswith("rule: sagittal, T2-weighted")
    assert main(["series", str(tmp_path / "study"), "--series", "3"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("*  ")][0].split()[1] == "3"
