"""The input side of the bad-input corpus: hostile and strange files for predict, evaluate, dataset and train.

Every bad case runs the real command in a fresh, address-space-limited process (``corpus.run_cli``)
and asserts: exit code 2, one line ``lumbarseg: error: FILE: PROBLEM`` naming the file and the
problem, and no file written or changed. The inputs are made here, tiny: NIfTI headers patched
byte by byte (nibabel "fixes" bad voxel sizes when it writes), a DICOM series with a slice missing,
a ``.nii.gz`` and a PNG whose headers claim huge grids, an ONNX model whose output is NaN.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from corpus import assert_one_line_error, assert_unchanged, run_cli, snapshot
from onnx_models import threshold_model

from lumbarseg.io.slices import write_png

SPIDER = {"vertebra": 76, "disc": 29, "canal": 150}


# --- tiny inputs ----------------------------------------------------------------------------------


def spine(shape: Sequence[int] = (6, 24, 20), values: Sequence[int] = (1, 2, 3)) -> np.ndarray:
    """A small RIP label volume: two vertebrae, a disc between them, a canal behind."""
    raw = np.zeros(tuple(shape), np.uint8)
    raw[1:5, 2:8, 3:10] = values[0]
    raw[1:5, 9:12, 3:10] = values[1]
    raw[1:5, 13:19, 3:10] = values[0]
    raw[2:4, 1:23, 12:15] = values[2]
    return raw


def image(shape: Sequence[int] = (6, 24, 20)) -> np.ndarray:
    return (spine(shape).astype(np.int16) * 300 + 100)


def nifti(path: Path, array: np.ndarray, zooms: Sequence[float] = (2.0, 0.8, 0.8),
          pixdim: Optional[Sequence[float]] = None, codes: Optional[Sequence[int]] = None,
          slope: Optional[float] = None, qfac: Optional[float] = None) -> Path:
    """Write with nibabel, then patch the header bytes as a hostile writer would (uncompressed .nii only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*zooms[:3], 1.0])), str(path))
    block = bytearray(path.read_bytes())
    if pixdim is not None:
        struct.pack_into("<3f", block, 80, *pixdim)  # pixdim[1:4]
    if qfac is not None:
        struct.pack_into("<f", block, 76, qfac)  # pixdim[0]
    if codes is not None:
        struct.pack_into("<2h", block, 252, *codes)  # qform_code, sform_code
    if slope is not None:
        struct.pack_into("<2f", block, 112, slope, 0.0)  # scl_slope, scl_inter
    path.write_bytes(bytes(block))
    return path


def nifti_bomb(path: Path, shape: Sequence[int] = (3, 8192, 8192)) -> Path:
    """A .nii.gz of zeros (about 200 KB) whose header says 3 x 8192 x 8192 uint8."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_zooms((1.0,) * len(shape))
    header["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytes(1 << 24)
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.binaryblock + b"\0" * 4)
        for _ in range(int(np.prod(shape)) >> 24):
            stream.write(chunk)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (8-bit grey) with a few rows of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def dicom_series(folder: Path, slices: int = 5, rows: int = 12, cols: int = 10, gap: float = 2.0) -> List[Path]:
    """A minimal sagittal MR series, one file per slice, with positions and orientation."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.9.7"
    files = []
    for k in range(slices):
        plane = sitk.GetImageFromArray((np.arange(rows * cols).reshape(rows, cols) % 97 * 10 + k).astype(np.int16))
        tags = {"0008|0060": "MR", "0020|000d": series + ".0", "0020|000e": series,
                "0020|0037": "0\\1\\0\\0\\0\\-1", "0020|0032": f"{k * gap:.3f}\\0\\0", "0020|0013": str(k + 1),
                "0008|0018": f"{series}.{k + 1}", "0018|0050": f"{gap}", "0028|0030": "0.8\\0.8"}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        files.append(folder / f"IM{k:04d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(plane)
    return files


def png_stack(folder: Path, count: int = 3, size=(24, 20), value: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        write_png(folder / f"1_t2_SPACE_slice{k + 1}.png", np.full(size, value + k, np.uint8))
    return folder


# --- the corpus ----------------------------------------------------------------------------------


@dataclass
class Bad:
    """How to make one bad input: ``make(tmp)`` writes it and returns the command's arguments."""

    make: Callable[[Path], List[str]]
    names: Sequence[str]  # what the error line must name
    problem: str  # regex the error line must match
    issue: str = "works"  # the issue-9 line it proves, or "works": already handled before the issue
    extra: Dict[str, str] = field(default_factory=dict)


def predict(input_path: Path, *flags: str) -> List[str]:
    return ["predict", "-i", str(input_path), "-o", str(input_path.parents[1] / "out" / "mask.nii.gz"),
            "--model", str(input_path.parents[1] / "model.onnx"), *flags]


def evaluate(tmp: Path, *flags: str) -> List[str]:
    return ["evaluate", "--pred", str(tmp / "in" / "pred"), "--gt", str(tmp / "in" / "gt"),
            "-o", str(tmp / "out" / "report"), *flags]


def _eval_pair(tmp: Path, pred: Dict[str, np.ndarray], gt: Dict[str, np.ndarray], *flags: str) -> List[str]:
    for folder, cases in (("pred", pred), ("gt", gt)):
        for name, array in cases.items():
            nifti(tmp / "in" / folder / f"{name}.nii", array)
    return evaluate(tmp, *flags)


def _dicom_missing(tmp: Path) -> List[str]:
    files = dicom_series(tmp / "in" / "series")
    files[2].unlink()
    return predict(tmp / "in" / "series")


def _dicom_corrupt(tmp: Path) -> List[str]:
    files = dicom_series(tmp / "in" / "series")
    files[2].write_bytes(files[2].read_bytes()[:200])  # cut inside the header
    return predict(tmp / "in" / "series")


def _mhd_without_raw(tmp: Path) -> List[str]:
    (tmp / "in").mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(image()), str(tmp / "in" / "scan.mhd"))
    (tmp / "in" / "scan.raw").unlink()
    return predict(tmp / "in" / "scan.mhd")


def _mha_header(tmp: Path, size: str, name: str = "scan.mha") -> List[str]:
    (tmp / "in").mkdir(parents=True)
    (tmp / "in" / name).write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {size}\nElementType = MET_SHORT\n"
                                   "ElementSpacing = 1 1 1\nElementDataFile = LOCAL\n")
    return predict(tmp / "in" / name)


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    (tmp / "in" / name).write_bytes(data)
    return tmp / "in" / name


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


def _nan_model(tmp: Path) -> List[str]:
    args = predict(nifti(tmp / "in" / "scan.nii", image()))
    threshold_model(tmp / "nan.onnx", sharpness=float("nan"))
    return [*args[:-2], "--model", str(tmp / "nan.onnx")]


def _truncated(tmp: Path) -> List[str]:
    good = nifti(tmp / "in" / "full.nii", image())
    data = _gz(good.read_bytes())
    good.unlink()
    return predict(_write(tmp, "scan.nii.gz", data[: len(data) // 2]))


def _two_stacks_one_case(tmp: Path) -> List[str]:
    nifti(tmp / "in" / "pred" / "caseA.nii", spine())
    nifti(tmp / "in" / "gt" / "caseB.nii", spine())
    return evaluate(tmp)


def _colour_png(tmp: Path) -> List[str]:
    folder = png_stack(tmp / "in" / "stack")
    write_png(folder / "1_t2_SPACE_slice2.png", np.dstack([np.full((24, 20), v, np.uint8) for v in (10, 90, 200)]))
    return predict(folder)


def _dicom_too_big(tmp: Path) -> List[str]:
    dicom_series(tmp / "in" / "series")
    return predict(tmp / "in" / "series", "--max-voxels", "500")


def _train_no_spacing(tmp: Path) -> List[str]:
    dataset = _slices_dataset(tmp)
    config = tmp / "in" / "config.yml"
    config.write_text((Path(__file__).resolve().parents[2] / "configs" / "tiny.yml").read_text()
                      .replace("spacing: [1.0, 1.0]\n", ""))
    return ["train", "--dataset", str(dataset), "--config", str(config), "--out", str(tmp / "out" / "run"),
            "--epochs", "1", "--no-progress"]


def _slices_dataset(tmp: Path, spacing: Optional[str] = None) -> Path:
    """A from-slices dataset built without --spacing (through the API, as the CLI would)."""
    from lumbarseg.data.builders import from_slices
    from lumbarseg.data.split import SplitSpec
    from lumbarseg.labels import LabelMap

    images, masks = tmp / "in" / "images", tmp / "in" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for patient in (1, 2, 3):
        for k in range(1, 3):
            mask = spine((1, 32, 32))[0] if k == 1 else np.roll(spine((1, 32, 32))[0], 3, axis=0)
            write_png(masks / f"{patient}_t2_SPACE_slice{k}.png", mask)
            write_png(images / f"{patient}_t2_SPACE_slice{k}.png", (mask * 60 + 20).astype(np.uint8))
    from_slices(images, masks, tmp / "in" / "ds" / "ds.yml", LabelMap.load("lumbarseg"),
                split=SplitSpec(fractions=(0.67, 0.33, 0.0)), progress=False)
    return tmp / "in" / "ds" / "ds.yml"


CASES: Dict[str, Bad] = {
    # -- silent wrong results, now refused ------------------------------------------------------
    "nifti-zero-voxel-size": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image(), pixdim=(0, 0, 0),
                                                         codes=(0, 0))),
                                 ["scan.nii"], r"voxel size .*0, 0, 0.*--spacing", "zero voxel size"),
    "nifti-zero-voxel-size-qform": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image(), pixdim=(2, 0, 0.8),
                                                               codes=(1, 0))),
                                       ["scan.nii"], r"voxel size .*2, 0, 0\.8.*--spacing", "zero voxel size"),
    "nifti-negative-voxel-size": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image(), pixdim=(2, -0.8, 0.8),
                                                             codes=(1, 0))),
                                     ["scan.nii"], r"voxel size .*-0\.8.*--spacing", "zero voxel size"),
    "nifti-nan-voxel-size": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image(),
                                                        pixdim=(float("nan"), 0.8, 0.8), codes=(0, 0))),
                                ["scan.nii"], r"voxel size .*nan.*--spacing", "zero voxel size"),
    "nifti-scl-slope-overflow": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image(), slope=1e38)),
                                    ["scan.nii"], r"scl_slope=1e\+38.*float32", "scl_slope overflow"),
    "model-nan-output": Bad(_nan_model, ["nan.onnx"], r"model output holds \d+ NaN/Inf", "NaN model"),
    "dicom-missing-slice": Bad(_dicom_missing, ["series"], r"non-uniform sampling: slice spacing 4 mm between "
                               r"IM0001\.dcm and IM0003\.dcm where the series has 2 mm", "DICOM non-uniform"),
    "dicom-corrupt-slice": Bad(_dicom_corrupt, ["series"], r"non-uniform sampling.*not in the series, e\.g\. "
                               r"IM0002\.dcm", "DICOM non-uniform"),
    "evaluate-one-case-each-other-name": Bad(_two_stacks_one_case, ["pred", "caseB"],
                                             r"no prediction for 1 ground-truth case\(s\): caseB", "evaluate pairing"),
    "evaluate-pred-unknown-values": Bad(lambda t: _eval_pair(t, {"a": spine(values=(1, 2, 200))}, {"a": spine()}),
                                        ["pred/a.nii"],
                                        r"not in the label map: 200 \(tried class indices.* with --pred-label-map",
                                        "evaluate label maps"),
    "evaluate-gt-unknown-values": Bad(lambda t: _eval_pair(t, {"a": spine()}, {"a": spine(values=(1, 2, 9))}),
                                      ["gt/a.nii"],
                                      r"label map: 9 \(tried spider-png, class indices 0-3.* with --label-map",
                                      "evaluate label maps"),
    "metaimage-missing-raw": Bad(_mhd_without_raw, ["scan.mhd", "scan.raw"], r"data file .*scan\.raw",
                                 "one line: MetaImage raw"),
    "metaimage-zero-size": Bad(lambda t: _mha_header(t, "4 0 4"), ["scan.mha"], r"zero-size dimension",
                               "one line: zero-size"),
    "train-dataset-without-spacing": Bad(_train_no_spacing, ["ds.yml"], r"spacing unknown.*train --spacing ROW,COL",
                                         "train --spacing"),
    # -- sizes checked before allocating ---------------------------------------------------------
    "nifti-gz-bomb": Bad(lambda t: predict(nifti_bomb(t / "in" / "bomb.nii.gz")), ["bomb.nii.gz"],
                         r"3 x 8192 x 8192 = 201,326,592 voxels exceeds .*--max-voxels", "size: decompressed"),
    "resampled-200mm-voxels": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image((3, 85, 65)),
                                                          zooms=(200.0, 200.0, 200.0))),
                                  ["scan.nii"],
                                  r"resampled .* (17000 x 13000|13000 x 17000) = .*pixels per slice .*--max-slice-pix",
                                  "size: resampled grid"),
    "png-header-bomb": Bad(lambda t: predict(png_claiming(t / "in" / "stack" / "1_t2_SPACE_slice1.png", 60000,
                                                          60000).parent),
                           ["1_t2_SPACE_slice1.png"], r"60000 x 60000 = 3,600,000,000 pixels per slice .*--max-slice",
                           "size: PNG header"),
    "metaimage-header-bomb": Bad(lambda t: _mha_header(t, "8192 8192 3000"), ["scan.mha"],
                                 r"8192 x 8192 x 3000 = .*--max-voxels", "size: MetaImage header"),
    "dicom-over-limit": Bad(_dicom_too_big, ["series"], r"10 x 12 x 5 = 600 voxels exceeds the limit of 500",
                            "size: DICOM rows x cols x count"),
    # -- already handled before issue 9 (regressions) --------------------------------------------
    "nifti-truncated-gz": Bad(_truncated, ["scan.nii.gz"], r"not a readable NIfTI"),
    "nifti-not-nifti": Bad(lambda t: predict(_write(t, "scan.nii", b"hello, not an image\n" * 30)), ["scan.nii"],
                           r"not a readable NIfTI"),
    "nifti-empty-file": Bad(lambda t: predict(_write(t, "scan.nii.gz", b"")), ["scan.nii.gz"], r"not a readable NIfTI"),
    "wrong-extension": Bad(lambda t: predict(_write(t, "scan.txt", b"123")), ["scan.txt"],
                           r"unknown volume format|no volumes"),
    "empty-folder": Bad(lambda t: (t / "in" / "empty").mkdir(parents=True) or predict(t / "in" / "empty"), ["empty"],
                        r"no volumes found|neither"),
    "missing-input": Bad(lambda t: predict(t / "in" / "nothing.nii.gz"), ["nothing.nii.gz"], r"no such file"),
    "nifti-2d": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", image()[0])), ["scan.nii"], r"2D image"),
    "nifti-4d": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", np.stack([image()] * 2, -1))),
                    ["scan.nii"], r"4D image"),
    "nifti-nan-voxels": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", np.where(image() > 200, np.nan,
                                                                                    1.0).astype(np.float32))),
                            ["scan.nii"], r"NaN/Inf voxels"),
    "nifti-zero-size": Bad(lambda t: predict(nifti(t / "in" / "scan.nii", np.zeros((4, 0, 4), np.int16))),
                           ["scan.nii"], r"zero-size dimension"),
    "metaimage-garbage": Bad(lambda t: predict(_write(t, "scan.mha", b"\x00\x01garbage" * 20)), ["scan.mha"],
                             r"not a readable MetaImage"),
    "png-corrupt": Bad(lambda t: predict(png_stack(t / "in" / "stack").joinpath("1_t2_SPACE_slice2.png").write_bytes(
        b"\x89PNG\r\n\x1a\nbroken") and t / "in" / "stack"), ["1_t2_SPACE_slice2.png"], r"cannot decode"),
    "png-colour": Bad(_colour_png, ["1_t2_SPACE_slice2.png"], r"colour image"),
    "evaluate-unknown-value-explicit-map": Bad(
        lambda t: _eval_pair(t, {"a": spine(values=(76, 29, 7))}, {"a": spine(values=(76, 29, 150))},
                             "--label-map", "spider-png", "--pred-label-map", "spider-png"),
        ["pred/a.nii"], r"not in the label map: 7 \(tried --pred-label-map spider-png"),
    "evaluate-grid-mismatch": Bad(lambda t: _eval_pair(t, {"a": spine()[:, :, :10]}, {"a": spine()}), ["pred/a.nii"],
                                  r"grid .* differs from the ground truth"),
    "evaluate-missing-prediction": Bad(lambda t: _eval_pair(t, {"a": spine()}, {"a": spine(), "b": spine()}), ["pred"],
                                       r"no prediction for 1 ground-truth case\(s\): b"),
}


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    threshold_model(tmp_path / "model.onnx")
    return tmp_path


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, tmp: Path) -> None:
    case = CASES[name]
    args = case.make(tmp)
    before = snapshot(tmp)
    result = run_cli(args)
    assert_one_line_error(result, case.names, case.problem)
    assert_unchanged(before, tmp)
    assert not (tmp / "out").exists() or not any((tmp / "out").rglob("*")), "an output was left behind"


# --- strange but valid: visible assumptions and defaults ---------------------------------------------


def _only_summary(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_zero_voxel_size_with_explicit_spacing(tmp: Path) -> None:
    """--spacing gives the voxel size the file lacks (ROW,COL,SLICE): the mask carries it."""
    args = predict(nifti(tmp / "in" / "scan.nii", image(), pixdim=(0, 0, 0), codes=(0, 0)), "--spacing",
                   "0.5,0.7,3")
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    assert _only_summary(result.stderr) == [f"1 of 1 case(s) segmented -> {tmp / 'out' / 'mask.nii.gz'}"]
    mask = nib.load(str(tmp / "out" / "mask.nii.gz"))
    assert sorted(np.round(mask.header.get_zooms()[:3], 3)) == [0.5, 0.7, 3.0]
    assert mask.shape == image().shape


def test_library_warnings_do_not_reach_the_user(tmp: Path) -> None:
    """A header nibabel logs about (negative pixdim, unused: the sform places the voxels): only the summary."""
    args = predict(nifti(tmp / "in" / "scan.nii", image(), pixdim=(2, -0.8, 0.8), qfac=0.0, codes=(0, 1)))
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    assert _only_summary(result.stderr) == [f"1 of 1 case(s) segmented -> {tmp / 'out' / 'mask.nii.gz'}"]


def test_evaluate_class_indices_without_label_maps(tmp: Path) -> None:
    """A lumbarseg mask (0..3) against a class-index truth (0..3), no flags; and against SPIDER values."""
    for truth, folder in ((spine(), "gt"), (spine(values=tuple(SPIDER.values())), "gt_spider")):
        nifti(tmp / "in" / folder / "a.nii", truth)
    nifti(tmp / "in" / "pred" / "a.nii", spine())
    for folder in ("gt", "gt_spider"):
        result = run_cli(["evaluate", "--pred", tmp / "in" / "pred", "--gt", tmp / "in" / folder,
                          "-o", tmp / "out" / folder])
        assert result.returncode == 0, result.stderr
        assert '"dice": 1.0' in result.stdout, result.stdout


def test_evaluate_pairs_two_named_files(tmp: Path) -> None:
    """Two files named on the command line pair whatever their names (folders always pair by name)."""
    pred = nifti(tmp / "in" / "sub01_seg.nii", spine())
    truth = nifti(tmp / "in" / "sub01.nii", spine())
    result = run_cli(["evaluate", "--pred", pred, "--gt", truth, "-o", tmp / "out"])
    assert result.returncode == 0, result.stderr


def test_from_slices_without_spacing_warns_then_train_takes_spacing(tmp: Path) -> None:
    """The build warns on stderr naming --spacing; train --spacing ROW,COL then trains and records it."""
    args = _train_no_spacing(tmp)
    images, masks = tmp / "in" / "images", tmp / "in" / "masks"
    result = run_cli(["dataset", "from-slices", images, masks, "--label-map", "lumbarseg", "--split", "0.67,0.33,0",
                      "-o", tmp / "built" / "ds.yml"])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--spacing" in warnings[0], result.stderr
    result = run_cli([*args, "--spacing", "0.5,0.25"], timeout=300)
    assert result.returncode == 0, result.stderr
    from lumbarseg.model import metadata

    assert metadata.read(tmp / "out" / "run" / "best.onnx").spacing == [0.5, 0.25]  # 32 px slices at input 32


def test_a_limit_flag_raises_the_limit(tmp: Path) -> None:
    """The series refused at --max-voxels 500 (600 voxels) is segmented at --max-voxels 600."""
    dicom_series(tmp / "in" / "series")
    result = run_cli(predict(tmp / "in" / "series", "--max-voxels", "600"))
    assert result.returncode == 0, result.stderr
    assert nib.load(str(tmp / "out" / "mask.nii.gz")).shape == (10, 12, 5)
