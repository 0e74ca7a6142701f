"""Batch mode from Python (``predict_folder``) and the one ``--spacing ROW,COL[,SLICE]`` syntax."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx_models import threshold_model, tiny_metadata
from volume_synth import LABELS, image_of, phantom_rip, write_case

from lumbarseg.cli import main
from lumbarseg.cli.options import parse_spacing, volume_spacing
from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.batch import plan_outputs, predict_folder
from lumbarseg.inference.predict import Predictor
from lumbarseg.io.cases import find_cases
from lumbarseg.io.readers import read_volume


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    return threshold_model(path, tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS,
                                               training_data={"slice_spacing": 3.0}))


def test_predict_folder_isolates_failures_and_writes_the_table(tmp_path: Path, model: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    expected = write_case(cases / "a.nii.gz")
    (cases / "broken.nii.gz").write_bytes(b"not a volume" * 30)
    seen = []
    result = predict_folder(cases, tmp_path / "out", model, on_error=seen.append)
    assert (result.total, result.done, list(result.failed)) == (2, 1, ["broken"])
    assert [str(e) for e in seen] == [str(result.failed["broken"])] and "not a readable NIfTI" in str(seen[0])
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "a.nii.gz").array,
                                  np.array(LABELS, np.uint8)[expected])
    assert result.measurements == tmp_path / "out" / "measurements"
    assert set(json.loads((tmp_path / "out" / "measurements.json").read_text())["cases"]) == {"a"}
    with pytest.raises(LumbarsegError, match="inside the input folder"):
        predict_folder(cases, cases / "out", model)
    with pytest.raises(LumbarsegError, match="give an output folder, not a file"):
        plan_outputs(find_cases(cases), tmp_path / "one.nii.gz")


def test_png_slices_assume_the_training_slice_spacing(tmp_path: Path, model: Path) -> None:
    (tmp_path / "pngs").mkdir()
    for k, plane in enumerate((image_of(phantom_rip()) // 4).astype(np.uint8)):
        cv2.imwrite(str(tmp_path / "pngs" / f"s_slice{k + 1}.png"), plane)
    predictor = Predictor(model)
    assumed = predictor.read(tmp_path / "pngs")
    assert assumed.spacing == pytest.approx((3.0, 0.5, 0.7)) and assumed.header.spacing_assumed
    given = predictor.read(tmp_path / "pngs", (None, 0.4, 0.6))
    assert given.spacing == pytest.approx((3.0, 0.4, 0.6)) and not given.header.spacing_assumed


def test_spacing_is_row_col_slice_everywhere_and_the_old_form_warns(capsys) -> None:
    assert parse_spacing(["0.5,0.7,2"]) == (0.5, 0.7, 2.0) and capsys.readouterr().err == ""
    assert parse_spacing(["0.5,0.7"]) == (0.5, 0.7, None)
    assert parse_spacing(["2", "0.5", "0.7"]) == (0.5, 0.7, 2.0)  # deprecated SLICE ROW COL
    assert "--spacing SLICE ROW COL is deprecated" in capsys.readouterr().err
    assert volume_spacing((0.5, 0.7, 2.0)) == (2.0, 0.5, 0.7)
    assert volume_spacing((0.5, 0.7, None), slice_default=1.0) == (1.0, 0.5, 0.7)
    for bad in (["0.5"], ["a,b"], ["0.5,-1"], ["1", "2"]):
        with pytest.raises(LumbarsegError, match="need ROW,COL"):
            parse_spacing(bad)


def test_cli_predict_takes_the_comma_spacing(tmp_path: Path, model: Path, capsys) -> None:
    (tmp_path / "pngs").mkdir()
    classes = phantom_rip()
    for k, plane in enumerate((image_of(classes) // 4).astype(np.uint8)):
        cv2.imwrite(str(tmp_path / "pngs" / f"s_slice{k + 1}.png"), plane)
    assert main(["predict", "-i", str(tmp_path / "pngs"), "-o", str(tmp_path / "o"), "--model", str(model),
                 "--spacing", "0.5,0.7,2"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    table = json.loads((tmp_path / "o" / "measurements.json").read_text())
    assert table["cases"]["pngs"]["disc"]["volume_ml"] == pytest.approx((classes == 2).sum() * 0.7 / 1000, abs=1e-4)


def test_background_reads_and_writes_keep_cases_apart(tmp_path: Path, model: Path) -> None:
    """Case i+1 is read and case i-1 written in threads while case i is segmented: every good case's mask is its
    own, a read failure and a write failure are both reported, in case order, naming the case."""
    cases = tmp_path / "cases"
    cases.mkdir()
    expected = {name: write_case(cases / f"{name}.nii.gz", orientation)
                for name, orientation in (("a", "LPS"), ("c", "RAS"), ("d", "PIR"), ("e", "LPS"))}
    (cases / "b.nii.gz").write_bytes(b"not a volume" * 30)
    out = tmp_path / "out"
    (out / "d.nii.gz").mkdir(parents=True)  # d's mask cannot be written: a folder is in the way
    seen = []
    result = predict_folder(cases, out, model, on_error=seen.append, overwrite=True)
    assert list(result.failed) == ["b", "d"] and [str(e) for e in seen] == [str(result.failed[n]) for n in "bd"]
    assert "b.nii.gz" in str(seen[0]) and "d.nii.gz" in str(seen[1])
    for name in "ace":
        np.testing.assert_array_equal(read_volume(out / f"{name}.nii.gz").array,
                                      np.array(LABELS, np.uint8)[expected[name]])
    assert (out / "d.nii.gz").is_dir() and not list((out / "d.nii.gz").iterdir())
    assert set(json.loads((out / "measurements.json").read_text())["cases"]) == {"a", "c", "e"}
