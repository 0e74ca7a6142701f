"""``predict --output-type dicom`` on a study made here: the SEG decodes to exactly the NIfTI mask, SEG, SR and
Secondary Captures pass dciodvfy and read back with highdicom, the UIDs are new, the patient and study are the
source's. The real shipped model (``fast``) segments the sample's 8 slices, so the spine report has levels."""
from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_synth import PATIENT, write_study

from lumbarseg.cli import main
from lumbarseg.io.readers import read_volume

hd = pytest.importorskip("highdicom", reason="DICOM outputs need the 'dicom' extra (highdicom)")
STUDY_KEYS = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The study, and predict with --measure --overlay into DICOM and into NIfTI (the same model and input)."""
    root = tmp_path_factory.mktemp("dicom-out")
    write_study(root / "study")
    for kind in ("dicom", "nifti"):
        assert main(["predict", "-i", str(root / "study"), "-o", str(root / kind), "--model", "fast", "--measure",
                     "--overlay", "--output-type", kind]) == 0
    return {"root": root, "dicom": root / "dicom", "nifti": root / "nifti", "study": root / "study"}


def _source(runs: dict) -> pydicom.Dataset:
    return pydicom.dcmread(str(sorted((runs["study"]).glob("IM02*"))[0]))


def test_outputs_replace_the_mask_and_pictures_and_keep_the_tables(runs: dict) -> None:
    assert sorted(p.name for p in runs["dicom"].iterdir()) == [
        "measurements.csv", "measurements.json", "study.dcm", "study_overlay.dcm", "study_spine.csv",
        "study_spine.dcm", "study_spine.json", "study_sr.dcm"]


def test_the_seg_decodes_to_exactly_the_nifti_mask(runs: dict) -> None:
    seg = hd.seg.segread(str(runs["dicom"] / "study.dcm"))
    mask = read_volume(runs["nifti"] / "study.nii.gz").array  # (column, row, instance) of the series
    sources = [str(pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID)
               for p in sorted(runs["study"].glob("IM02*"))]
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    classes = [labels.index(name) + 1 for name in ("vertebra", "disc", "canal")]
    order = sorted(sources, key=lambda uid: [str(pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID)
                                             for p in sorted(runs["study"].glob("IM02*"))].index(uid))
    decoded = seg.get_pixels_by_source_instance(order, segment_numbers=classes, combine_segments=True,
                                                relabel=True)  # (instance, row, column): 1 vertebra, 2 disc, 3 canal
    expected = np.transpose(mask, (2, 1, 0))
    assert expected.any() and decoded.shape == expected.shape
    np.testing.assert_array_equal(decoded, expected)
    assert str(seg.FrameOfReferenceUID) == str(_source(runs).FrameOfReferenceUID)


def test_the_level_segments_decode_to_exactly_the_nifti_levels_mask(runs: dict) -> None:
    seg = hd.seg.segread(str(runs["dicom"] / "study.dcm"))
    levels = np.transpose(read_volume(runs["nifti"] / "study_levels.nii.gz").array, (2, 1, 0))
    sources = [str(pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID)
               for p in sorted(runs["study"].glob("IM02*"))]
    numbers = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
    report = json.loads((runs["nifti"] / "study_spine.json").read_text())
    assert len(report["levels"]) > 3
    for level in report["levels"]:
        label = level["name"] + (" (partial)" if level["partial"] else "")
        decoded = seg.get_pixels_by_source_instance(sources, segment_numbers=[numbers[label]])[..., 0]
        expected = levels == level["label_value"]
        assert expected.any()
        np.testing.assert_array_equal(decoded.astype(bool), expected, err_msg=label)


def test_the_collector_and_highdicom_tables_are_left_as_found(runs: dict) -> None:
    """highdicom's tables are frozen for the garbage collector while a batch runs, then unfrozen and dropped (the
    batches of the fixture left nothing frozen); a build that fails turns the collector back on."""
    from types import SimpleNamespace

    from highdicom._standard_utils import get_module_attribute_map

    from lumbarseg.errors import LumbarsegError
    from lumbarseg.inference.dicom import Tables, build_case

    assert gc.isenabled() and gc.get_freeze_count() == 0
    tables = Tables()
    tables.ready()
    assert gc.get_freeze_count() > 0 and get_module_attribute_map.cache_info().currsize == 1
    tables.close()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert get_module_attribute_map.cache_info().currsize == 0
    nifti = SimpleNamespace(image=SimpleNamespace(source="case.nii.gz", header=SimpleNamespace(dicom=())))
    with pytest.raises(LumbarsegError, match="DICOM outputs need a DICOM input"):
        build_case(nifti, Path("model.onnx"), [])
    assert gc.isenabled()


def test_seg_and_sr_read_back_with_the_spine_report_values(runs: dict) -> None:
    seg = hd.seg.segread(str(runs["dicom"] / "study.dcm"))
    report = json.loads((runs["dicom"] / "study_spine.json").read_text())
    names = [level["name"] for level in report["levels"]]
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    assert labels[:3] == ["vertebra", "disc", "canal"] and set(names) <= {lbl.replace(" (partial)", "")
                                                                          for lbl in labels[3:]}
    codes = {d.SegmentLabel: d.SegmentedPropertyTypeCodeSequence[0].CodeValue for d in seg.SegmentSequence}
    assert codes["vertebra"] == "51282000" and codes["disc"] == "360499006" and codes["canal"] == "61853006"
    assert codes["L4"] == "11994002" and codes["L4-L5"] == "84020006"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "lumbarseg" and "lumbarseg-spine-t2-fast.onnx" in algorithm.AlgorithmParameters
    sr = hd.sr.srread(str(runs["dicom"] / "study_sr.dcm"))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    by_name = {g.tracking_identifier: g for g in groups}
    level = next(lv for lv in report["levels"] if lv["name"] == "L4")
    measured = {m.name.value: m.value for m in by_name["L4"].get_measurements()}
    expected = {k: v for k, v in level["measurements"].items() if v is not None}
    assert set(measured) == set(expected)
    for key, value in expected.items():
        assert measured[key] == pytest.approx(value, abs=1e-3)
    [reference] = [item.ReferencedSOPSequence[0] for item in by_name["L4"][0].ContentSequence
                   if item.name.value == "121191"]  # DCM Referenced Segment
    assert reference.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert labels[int(reference.ReferencedSegmentNumber) - 1] == "L4"
    volumes = json.loads((runs["dicom"] / "measurements.json").read_text())["cases"]["study"]
    disc_ml = {m.name.value: m.value for m in by_name["disc"].get_measurements()}
    assert disc_ml == {"118565006": pytest.approx(volumes["disc"]["volume_ml"])}
    flagged = [lv for lv in report["levels"] if lv["flags"]]
    for lv in flagged:
        group = by_name[lv["name"] + (" (partial)" if lv["partial"] else "")]
        evaluations = {e.name.value for e in group.get_qualitative_evaluations()}
        assert set(lv["flags"]) <= evaluations
    uncertain = {"75540009": False, "64957009": True}  # SCT High, Uncertain
    for lv in report["levels"]:
        group = by_name[lv["name"] + (" (partial)" if lv["partial"] else "")]
        [named] = [e.value.value for e in group.get_qualitative_evaluations()
                   if e.name.value == "level_name_confidence"]
        assert uncertain[named] == lv["uncertain"]


def test_dciodvfy_finds_no_errors(runs: dict) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian: apt-get install dicom3tools; .ci/install-dicom)")
    for name in ("study.dcm", "study_sr.dcm", "study_overlay.dcm", "study_spine.dcm"):
        result = subprocess.run(["dciodvfy", str(runs["dicom"] / name)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (name, errors)


def test_patient_and_study_are_the_sources_and_uids_new_every_run(runs: dict, tmp_path: Path) -> None:
    source = _source(runs)
    assert main(["predict", "-i", str(runs["study"]), "-o", str(tmp_path / "again.dcm"), "--model", "fast"]) == 0
    first, again = pydicom.dcmread(str(runs["dicom"] / "study.dcm")), pydicom.dcmread(str(tmp_path / "again.dcm"))
    for name in ("study.dcm", "study_sr.dcm", "study_overlay.dcm", "study_spine.dcm"):
        ds = pydicom.dcmread(str(runs["dicom"] / name))
        for key in STUDY_KEYS:
            assert str(ds.get(key, "")) == str(source.get(key, "")), (name, key)
        assert "PatientAge" not in ds and "PatientWeight" not in ds and "InstitutionName" not in ds  # not invented
    assert str(first.PatientName) == PATIENT["PatientName"]
    for key in ("SOPInstanceUID", "SeriesInstanceUID"):
        assert str(first.get(key)) != str(again.get(key))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.dcm", "again_measurements.csv",
                                                          "again_measurements.json", "again_sr.dcm"]


def test_dicom_outputs_need_dicom_input_and_the_extra(runs: dict, tmp_path: Path) -> None:
    from volume_synth import write_case

    write_case(tmp_path / "case.nii.gz")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["highdicom"] = None  # as if the 'dicom' extra were not installed
        from lumbarseg.cli import main
        sys.exit(main(["predict", "-i", {str(runs["study"])!r}, "-o", {str(tmp_path / "o")!r}, "--model", "fast",
                       "--output-type", "dicom"]))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "lumbarseg: error: --output-type: DICOM outputs need the 'dicom' extra: pip install 'lumbarseg[dicom]' "
        "(highdicom, dicomweb-client)"]
    result = subprocess.run([sys.executable, "-m", "lumbarseg", "predict", "-i", str(tmp_path / "case.nii.gz"), "-o",
                             str(tmp_path / "o"), "--model", "fast", "--output-type", "dicom"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "needs DICOM input" in result.stderr and not (tmp_path / "o").exists()
