"""predict: the mask lands where the structure is, in the input's own grid, for every orientation and format."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import onnx
import pytest
from onnx_models import CLASSES, threshold_model, tiny_metadata, unet_model
from volume_synth import LABELS, image_of, in_orientation, phantom_rip, write_case, write_dicom_series

import lumbarseg
from lumbarseg.cli import main
from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.postprocess import ComponentRule, postprocess
from lumbarseg.inference.predict import Predictor, default_model_path, tta_axes
from lumbarseg.io.readers import read_volume
from lumbarseg.networks.unet import UNetSpec


@pytest.fixture(scope="module")
def model_1mm(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "thr-1mm.onnx"
    return threshold_model(path, tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS))


@pytest.mark.parametrize("orientation, oblique", [("RAS", False), ("LPS", False), ("PIR", False), ("RIP", False),
                                                  ("ASL", False), ("RAS", True)])
def test_mask_lands_exactly_where_the_structure_is(model_1mm: Path, orientation: str, oblique: bool) -> None:
    """In-plane spacing equal to the model's: no resampling, so the mask must match voxel for voxel."""
    classes = phantom_rip()
    image, expected = in_orientation(classes, (2.5, 0.5, 0.7), orientation, oblique)
    prediction = lumbarseg.predict(image, model=model_1mm)
    assert prediction.mask.shape == image.shape
    np.testing.assert_array_equal(prediction.mask.affine, image.affine)
    np.testing.assert_array_equal(prediction.mask.array, np.array(LABELS, np.uint8)[expected])
    assert prediction.mask.array.dtype == np.uint8


@pytest.mark.parametrize("orientation", ["LPS", "PIR"])
def test_resampled_prediction_maps_back_to_the_input_grid(tmp_path: Path, orientation: str) -> None:
    """Input 1.0 x 1.4 mm in-plane, model 0.5 x 0.7 mm: the slices are upsampled 2x and mapped back."""
    model = threshold_model(tmp_path / "m.onnx", tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS))
    classes = phantom_rip()
    image, expected = in_orientation(classes, (3.0, 1.0, 1.4), orientation)
    prediction = lumbarseg.predict(image, model=model, postprocess=False)
    got = prediction.class_indices()
    np.testing.assert_array_equal(got > 0, expected > 0)  # the foreground is exactly where it was
    for index in (1, 3):  # pure-intensity structures; the disc's mid intensity also appears on blurred edges
        truth, pred = expected == index, got == index
        assert 2 * (truth & pred).sum() / (truth.sum() + pred.sum()) > 0.95
        np.testing.assert_allclose(np.argwhere(pred).mean(0), np.argwhere(truth).mean(0), atol=0.25)
    disc = expected == 2
    assert (got[disc] == 2).mean() > 0.85  # its corners blur towards the vertebra intensity


def test_probabilities_and_info(model_1mm: Path) -> None:
    image, expected = in_orientation(phantom_rip(), (2.0, 0.5, 0.7), "LPS")
    prediction = lumbarseg.predict(image, model=model_1mm, probabilities=True)
    assert prediction.probabilities.shape == (4, *image.shape)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(prediction.probabilities.argmax(axis=0), expected)
    assert prediction.info["input_orientation"] == "LPS" and prediction.classes == CLASSES


def test_tta_flips(model_1mm: Path, tmp_path: Path) -> None:
    image, expected = in_orientation(phantom_rip(), (2.0, 0.5, 0.7), "RAS")
    flipped = threshold_model(tmp_path / "flips.onnx", tiny_metadata(
        spacing=(0.5, 0.7), label_values=LABELS, training_data={"flips": ["AugFlip", "AugMirror"]}))
    for tta in (True, ["ap", "si"]):
        prediction = lumbarseg.predict(image, model=flipped, tta=tta)
        np.testing.assert_array_equal(prediction.class_indices(), expected)
    with pytest.raises(LumbarsegError, match="not trained with AugMirror"):  # trained without flips
        lumbarseg.predict(image, model=model_1mm, tta=True)
    assert tta_axes(True) == ("ap",) and tta_axes(False) == ()
    with pytest.raises(LumbarsegError, match="unknown flip"):
        tta_axes(["lr"])


def test_postprocess_rules() -> None:
    mask = np.zeros((4, 30, 30), np.uint8)
    mask[1:3, 2:10, 2:10] = 1  # vertebra
    mask[1:3, 12:20, 2:10] = 1  # a second vertebra of the same size: kept
    mask[0, 25, 25] = 1  # a speck: dropped
    mask[1:3, 2:28, 14:18] = 3  # the canal
    mask[1:3, 5, 15] = 0  # a hole in the canal: filled
    mask[3, 27:29, 27:29] = 3  # a second canal piece: dropped (one tube)
    mask[1, 4:6, 4:6] = 0  # a hole in a vertebra: filled
    out = postprocess(mask, CLASSES)
    assert out[0, 25, 25] == 0 and out[3, 27, 27] == 0
    assert out[1, 5, 15] == 3 and out[1, 4, 4] == 1
    assert (out[1:3, 12:20, 2:10] == 1).all()
    kept_all = postprocess(mask, CLASSES, {"vertebra": ComponentRule(min_fraction=0.0, fill_holes=False)})
    assert kept_all[0, 25, 25] == 1 and kept_all[1, 4, 4] == 0
    largest = postprocess(mask, CLASSES, {"vertebra": ComponentRule(max_components=1)})
    assert (largest == 1).sum() == (out[1:3, 2:10, 2:10] == 1).sum()


def test_predictor_model_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain.onnx"
    threshold_model(plain)
    model = onnx.load(str(plain))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(LumbarsegError, match="no 'lumbarseg' metadata"):
        Predictor(plain)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(LumbarsegError, match="junk.onnx"):
        Predictor(tmp_path / "junk.onnx")
    wrong = threshold_model(tmp_path / "wrong.onnx")
    model = onnx.load(str(wrong))
    meta = json.loads(model.metadata_props[0].value)
    meta["classes"] = meta["classes"][:3]
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(wrong))
    with pytest.raises(LumbarsegError, match="wrong.onnx.*classes"):
        Predictor(wrong)
    with pytest.raises(LumbarsegError, match="unknown runtime"):
        Predictor(threshold_model(tmp_path / "ok.onnx"), runtime="tensorflow")
    with pytest.raises(LumbarsegError, match="fpga"):
        Predictor(tmp_path / "ok.onnx", device="fpga")


def test_default_model_is_resolved_or_named(monkeypatch) -> None:
    try:
        path = default_model_path()
    except LumbarsegError as exc:
        assert "lumbarseg-spine-t2-accurate.onnx" in str(exc) and "--model" in str(exc)
    else:
        assert path.name == "lumbarseg-spine-t2-accurate.onnx" and path.is_file()


def test_cli_batch_finishes_good_cases_and_reports_the_bad(tmp_path: Path, model_1mm: Path, capsys) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    expected_a = write_case(cases / "a.nii.gz", "LPS")
    expected_b = write_case(cases / "b.mha", "PIR")
    (cases / "broken.nii.gz").write_bytes(b"not a volume" * 30)
    nan = np.ones((4, 16, 16), np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(cases / "nan.nii.gz"))
    out = tmp_path / "out"
    code = main(["predict", "-i", str(cases), "-o", str(out), "--model", str(model_1mm), "--overlay",
                 "--probabilities"])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.nii.gz: not a readable NIfTI" in err and "NaN/Inf" in err and "2 case(s) failed" in err
    np.testing.assert_array_equal(read_volume(out / "a.nii.gz").array, np.array(LABELS, np.uint8)[expected_a])
    np.testing.assert_array_equal(read_volume(out / "b.mha").array, np.array(LABELS, np.uint8)[expected_b])
    assert read_volume(out / "b.mha").orientation == "PIR"
    assert nib.load(str(out / "a_probabilities.nii.gz")).shape == (*expected_a.shape, 4)
    overlay = cv2.imread(str(out / "a_overlay.png"))
    assert overlay is not None and overlay.shape[0] > 100
    table = json.loads((out / "measurements.json").read_text())
    vertebra = table["cases"]["a"]["vertebra"]
    assert vertebra["voxels"] == int((expected_a == 1).sum())
    assert vertebra["volume_ml"] == pytest.approx(vertebra["voxels"] * 2.0 * 0.5 * 0.7 / 1000, abs=1e-4)
    assert vertebra["slices"] == 4 and set(table["cases"]) == {"a", "b"}
    assert "a,vertebra,76," in (out / "measurements.csv").read_text()
    assert not [p for p in out.rglob(".tmp*")] and not (out / "broken.nii.gz").exists()


def test_cli_single_case_errors(tmp_path: Path, model_1mm: Path, capsys) -> None:
    write_case(tmp_path / "a.nii.gz")
    folder = tmp_path / "cases"
    folder.mkdir()
    write_case(folder / "c.nii.gz")
    args = ["--model", str(model_1mm)]
    assert main(["predict", "-i", str(folder), "-o", str(folder / "out"), *args]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert main(["predict", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "a.nii.gz"), *args]) == 2
    assert "output is the input" in capsys.readouterr().err
    assert main(["predict", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), *args]) == 0
    assert main(["predict", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), *args]) == 2
    assert "exists (use --overwrite)" in capsys.readouterr().err
    assert main(["predict", "-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), *args,
                 "--overwrite"]) == 0
    nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    assert main(["predict", "-i", str(tmp_path / "flat.nii.gz"), "-o", str(tmp_path / "f.nii.gz"), *args]) == 2
    assert "flat.nii.gz: 2D image" in capsys.readouterr().err
    assert not (tmp_path / "f.nii.gz").exists()


def test_cli_png_stack_in_png_stack_out(tmp_path: Path, model_1mm: Path) -> None:
    classes = phantom_rip()
    (tmp_path / "pngs").mkdir()
    image = (image_of(classes) // 4).astype(np.uint8)
    for k, plane in enumerate(image):
        cv2.imwrite(str(tmp_path / "pngs" / f"7_t2_slice{k + 1}.png"), plane)
    out = tmp_path / "out"
    assert main(["predict", "-i", str(tmp_path / "pngs"), "-o", str(out), "--model", str(model_1mm)]) == 0
    names = sorted(p.name for p in (out / "pngs").iterdir())
    assert names == sorted(f"7_t2_slice{k + 1}.png" for k in range(classes.shape[0]))
    np.testing.assert_array_equal(read_volume(out / "pngs").array, np.array(LABELS, np.uint8)[classes])
    table = json.loads((out / "measurements.json").read_text())  # spacing assumed: 1 mm x model's in-plane
    assert table["cases"]["pngs"]["disc"]["volume_ml"] == pytest.approx((classes == 2).sum() * 0.35 / 1000, abs=1e-4)
    assert main(["predict", "-i", str(tmp_path / "pngs"), "-o", str(tmp_path / "o2"), "--model", str(model_1mm),
                 "--spacing", "2", "0.5", "0.7"]) == 0
    table = json.loads((tmp_path / "o2" / "measurements.json").read_text())
    assert table["cases"]["pngs"]["disc"]["volume_ml"] == pytest.approx((classes == 2).sum() * 0.7 / 1000, abs=1e-4)


def test_dicom_input_gives_nifti_with_series_geometry(tmp_path: Path, model_1mm: Path) -> None:
    image, expected = in_orientation(phantom_rip(), (2.0, 0.5, 0.7), "LPS")
    write_dicom_series(image, tmp_path / "series")
    assert main(["predict", "-i", str(tmp_path / "series"), "-o", str(tmp_path / "out"), "--model",
                 str(model_1mm)]) == 0
    mask = read_volume(tmp_path / "out" / "series.nii.gz")
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-3)
    np.testing.assert_array_equal(mask.array, np.array(LABELS, np.uint8)[expected])


def test_nifti_output_keeps_the_input_header(tmp_path: Path, model_1mm: Path) -> None:
    image, _ = in_orientation(phantom_rip(), (2.0, 0.5, 0.7), "RAS")
    nifti = nib.Nifti1Image(image.array.astype(np.float32), image.affine)
    nifti.header["descrip"] = b"from the scanner"
    nifti.set_qform(image.affine, code=1)
    nib.save(nifti, str(tmp_path / "in.nii.gz"))
    assert main(["predict", "-i", str(tmp_path / "in.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--model",
                 str(model_1mm)]) == 0
    out = nib.load(str(tmp_path / "m.nii.gz"))
    assert out.header["descrip"].tobytes().startswith(b"from the scanner") and int(out.header["qform_code"]) == 1
    assert out.header.get_data_dtype() == np.uint8


@pytest.mark.parametrize("runtime", ["torch", "eddl"])
def test_engine_runtimes_match_onnxruntime(tmp_path: Path, runtime: str) -> None:
    pytest.importorskip("torch", reason="the torch engine exports the test U-Net")
    if runtime == "eddl":
        pytest.importorskip("pyeddl", reason="pyeddl is not installed")
        if importlib.util.find_spec("lumbarseg.engines.eddl_engine") is None:
            pytest.skip("lumbarseg/engines/eddl_engine.py does not exist yet")
    spec = UNetSpec(num_classes=4, depth=2, base_filters=4)
    meta = tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS, depth=2)
    meta.architecture = spec.to_dict()
    model = unet_model(tmp_path / "unet.onnx", spec, meta)
    image, _ = in_orientation(phantom_rip((3, 24, 20)), (2.0, 0.5, 0.7), "LPS")
    reference = lumbarseg.predict(image, model=model, probabilities=True, postprocess=False)
    other = lumbarseg.predict(image, model=model, runtime=runtime, probabilities=True, postprocess=False)
    np.testing.assert_allclose(other.probabilities, reference.probabilities, atol=1e-4)


def test_graph_and_metadata_disagree(tmp_path: Path) -> None:
    """A graph with 4 output channels whose metadata names 3 classes (embedded without the checks)."""
    path = threshold_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    meta = json.loads(model.metadata_props[0].value)
    meta.update(classes=CLASSES[:3], colors=meta["colors"][:3], label_values=[0, 1, 2])
    meta["architecture"]["num_classes"] = 3
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(path))
    with pytest.raises(LumbarsegError, match="outputs 4 classes, metadata names 3"):
        Predictor(path)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_mask_is_the_argmax_of_the_probabilities(tmp_path: Path, batch_size: int) -> None:
    """Indices are reduced batch by batch (no whole-volume probability array): the same as the argmax of the
    probabilities resampled back, ties to the lower class, for every batch size and resampling factor."""
    model = threshold_model(tmp_path / "soft.onnx", tiny_metadata(spacing=(0.9, 1.3), label_values=LABELS),
                            sharpness=3.0)
    image, _ = in_orientation(phantom_rip((5, 24, 20)), (2.0, 0.5, 0.7), "RIP")
    predictor = Predictor(model, postprocess=False, batch_size=batch_size)
    full = predictor(image, probabilities=True)
    lean = predictor(image)
    assert lean.probabilities is None
    np.testing.assert_array_equal(lean.mask.array, full.mask.array)
    expected = np.argmax(full.probabilities, axis=0)
    np.testing.assert_array_equal(full.class_indices(), expected)
    assert len(np.unique(expected)) == 4


def test_metadata_from_the_session_is_the_files(tmp_path: Path) -> None:
    """onnxruntime's custom_metadata_map gives the metadata that onnx reads from the file."""
    from lumbarseg.model import metadata

    path = threshold_model(tmp_path / "m.onnx", tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS,
                                                              training_data={"flips": ["AugMirror"]}))
    assert Predictor(path).metadata == metadata.read(path)
    assert Predictor(path, tta=True).tta == ("ap",)
