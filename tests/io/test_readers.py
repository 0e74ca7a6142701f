"""Volume readers/writers: geometry survives every format, and bad input fails with the file named."""
from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from volume_synth import write_dicom_series

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.readers import png_stacks, read_png_stack, read_volume, write_png_stack, write_volume
from lumbarseg.io.volume import Volume, affine_from_spacing


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(17.0)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 0.47, 0.6])
    affine[:3, 3] = [-12.5, 30.0, 7.25]
    return affine


def _affine(orientation: str) -> np.ndarray:
    if orientation == "oblique":
        return _oblique_affine()
    affine = affine_from_spacing((0.9, 0.47, 0.6), orientation)
    affine[:3, 3] = [4.0, -8.0, 15.5]
    return affine


ORIENTATIONS = ["RAS", "LPS", "PIR", "oblique"]


def _volume(orientation: str, dtype=np.int16) -> Volume:
    rng = np.random.RandomState(0)
    return Volume(rng.randint(0, 1000, size=(5, 7, 6)).astype(dtype), _affine(orientation))


def _world(volume: Volume, index) -> np.ndarray:
    return (volume.affine @ np.r_[index, 1.0])[:3]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".mhd"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path: Path, orientation: str, suffix: str) -> None:
    volume = _volume(orientation)
    path = tmp_path / f"case{suffix}"
    write_volume(volume, path)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    assert back.orientation == volume.orientation
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_nifti_and_metaimage_written_by_itk_agree_in_world_coordinates(tmp_path: Path, orientation: str) -> None:
    """SimpleITK writes both files from one LPS image: our RAS affines must place each voxel identically."""
    volume = _volume(orientation)
    lps = np.diag([-1.0, -1.0, 1.0]) @ volume.affine[:3]
    spacing = np.sqrt((lps[:, :3] ** 2).sum(axis=0))
    image = sitk.GetImageFromArray(np.transpose(volume.array))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "a.mha"))
    from_nifti, from_mha = read_volume(tmp_path / "a.nii.gz"), read_volume(tmp_path / "a.mha")
    np.testing.assert_array_equal(from_nifti.array, from_mha.array)
    np.testing.assert_array_equal(from_mha.array, volume.array)
    for index in [(0, 0, 0), (4, 6, 5), (2, 3, 1)]:
        itk_point = np.array(image.TransformIndexToPhysicalPoint([int(i) for i in index]))
        expected_ras = itk_point * [-1, -1, 1]
        np.testing.assert_allclose(_world(from_mha, index), expected_ras, atol=1e-4)
        np.testing.assert_allclose(_world(from_nifti, index), expected_ras, atol=1e-4)


def test_nifti_write_keeps_input_header_but_takes_the_mask_dtype(tmp_path: Path) -> None:
    affine = _oblique_affine()
    image = nib.Nifti1Image(np.random.RandomState(1).rand(4, 5, 6).astype(np.float32), affine)
    image.header["descrip"] = b"scanner X"
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(tmp_path / "img.nii.gz"))
    volume = read_volume(tmp_path / "img.nii.gz")
    mask = volume.with_array((volume.array > 0.5).astype(np.uint8) * 76)
    write_volume(mask, tmp_path / "mask.nii.gz")
    written = nib.load(str(tmp_path / "mask.nii.gz"))
    assert written.header["descrip"].tobytes().startswith(b"scanner X")
    assert written.header.get_data_dtype() == np.uint8
    assert int(written.header["sform_code"]) == 1 and int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mask.array)


@pytest.mark.parametrize("orientation", ["RAS", "PIR", "oblique"])
def test_dicom_series_geometry(tmp_path: Path, orientation: str) -> None:
    volume = _volume(orientation)
    write_dicom_series(volume, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    assert back.header.format == "dicom"
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-3)


def _write_pngs(folder: Path, stack: np.ndarray, prefix: str = "42_t2_slice", start: int = 1) -> None:
    folder.mkdir(exist_ok=True)
    for k, plane in enumerate(stack):
        cv2.imwrite(str(folder / f"{prefix}{k + start}.png"), plane)


def test_png_folder_sorted_by_slice_number_with_given_spacing(tmp_path: Path) -> None:
    stack = np.stack([np.full((6, 8), value, np.uint8) for value in range(12)])
    _write_pngs(tmp_path / "pngs", stack)  # slice1..slice12: lexical order would put slice10 before slice2
    volume = read_volume(tmp_path / "pngs", spacing=(0.9, 0.47, 0.5))
    assert volume.shape == (12, 6, 8)
    assert [int(volume.array[k, 0, 0]) for k in range(12)] == list(range(12))
    assert volume.orientation == "RIP" and volume.header.geometry == "unknown"
    np.testing.assert_allclose(volume.spacing, (0.9, 0.47, 0.5))
    assert read_volume(tmp_path / "pngs").spacing == (1.0, 1.0, 1.0)


def test_png_stack_write_round_trip_and_grouping(tmp_path: Path) -> None:
    stack = np.random.RandomState(3).randint(0, 255, (3, 5, 4)).astype(np.uint8)
    _write_pngs(tmp_path / "in", stack, prefix="7_t2_slice")
    _write_pngs(tmp_path / "in", stack[:2], prefix="8_t2_slice")
    groups = png_stacks(tmp_path / "in")
    assert {k: len(v) for k, v in groups.items()} == {"7_t2_slice": 3, "8_t2_slice": 2}
    with pytest.raises(LumbarsegError, match="2 slice stacks"):
        read_volume(tmp_path / "in")
    volume = read_png_stack(groups["7_t2_slice"])
    write_png_stack(volume, tmp_path / "out", names=[p.name for p in groups["7_t2_slice"]])
    np.testing.assert_array_equal(read_volume(tmp_path / "out").array, stack)
    with pytest.raises(LumbarsegError, match="exists"):
        write_png_stack(volume, tmp_path / "out")


def test_four_d_with_one_frame_is_accepted(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.int16), np.eye(4)), str(tmp_path / "a.nii.gz"))
    assert read_volume(tmp_path / "a.nii.gz").shape == (3, 4, 5)


def _bad_nifti(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "garbage":
        path.write_bytes(b"this is not a nifti file at all" * 20)
    elif kind == "truncated":
        nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), str(path))
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "truncated-raw":
        nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), str(tmp_path / "r.nii"))
        raw = (tmp_path / "r.nii").read_bytes()[:1000]
        path.write_bytes(gzip.compress(raw))
    elif kind == "2d":
        nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), str(path))
    elif kind == "4d":
        nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 2), np.float32), np.eye(4)), str(path))
    elif kind in ("nan", "inf"):
        data = np.ones((4, 5, 6), np.float32)
        data[1, 2, 3] = np.nan if kind == "nan" else np.inf
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    elif kind == "zero-size":
        nib.save(nib.Nifti1Image(np.ones((4, 0, 6), np.float32), np.eye(4)), str(path))
    return path


@pytest.mark.parametrize(
    "kind, message",
    [("garbage", "not a readable NIfTI"), ("truncated", "not a readable NIfTI"),
     ("truncated-raw", "not a readable NIfTI"), ("2d", "2D image"), ("4d", "expected a 3D volume"),
     ("nan", "NaN/Inf"), ("inf", "NaN/Inf"), ("zero-size", "zero-size")],
)
def test_bad_nifti_names_the_file(tmp_path: Path, kind: str, message: str) -> None:
    path = _bad_nifti(tmp_path, kind)
    with pytest.raises(LumbarsegError, match=message) as info:
        read_volume(path)
    assert info.value.source == str(path)


def test_bad_metaimage(tmp_path: Path) -> None:
    garbage = tmp_path / "g.mha"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(LumbarsegError, match="not a readable MetaImage"):
        read_volume(garbage)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5), np.float32)), str(tmp_path / "flat.mha"))
    with pytest.raises(LumbarsegError, match="2D image"):
        read_volume(tmp_path / "flat.mha")
    four = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((3, 4, 5), np.float32))] * 2)
    sitk.WriteImage(four, str(tmp_path / "four.mha"))
    with pytest.raises(LumbarsegError, match="expected a 3D volume"):
        read_volume(tmp_path / "four.mha")
    one = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((3, 4, 5), np.float32))])
    sitk.WriteImage(one, str(tmp_path / "one.mha"))
    assert read_volume(tmp_path / "one.mha").shape == (5, 4, 3)
    data = np.ones((3, 4, 5), np.float32)
    data[0, 0, 0] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / "inf.mha"))
    with pytest.raises(LumbarsegError, match="NaN/Inf"):
        read_volume(tmp_path / "inf.mha")
    vector = sitk.GetImageFromArray(np.ones((3, 4, 5, 3), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "rgb.mha"))
    with pytest.raises(LumbarsegError, match="components"):
        read_volume(tmp_path / "rgb.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20, 20), np.float32)), str(tmp_path / "t.mha"))
    (tmp_path / "trunc.mha").write_bytes((tmp_path / "t.mha").read_bytes()[:-4000])
    with pytest.raises(LumbarsegError, match="trunc.mha"):
        read_volume(tmp_path / "trunc.mha")


def test_unknown_and_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(LumbarsegError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(LumbarsegError, match="unknown volume format"):
        read_volume(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LumbarsegError, match="neither a DICOM series nor PNG"):
        read_volume(tmp_path / "empty")
    with pytest.raises(LumbarsegError, match="cannot write"):
        write_volume(_volume("RAS"), tmp_path / "out.png")


def test_png_slices_of_different_sizes(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    cv2.imwrite(str(tmp_path / "p" / "s1.png"), np.zeros((4, 5), np.uint8))
    cv2.imwrite(str(tmp_path / "p" / "s2.png"), np.zeros((4, 6), np.uint8))
    with pytest.raises(LumbarsegError, match="differs"):
        read_volume(tmp_path / "p")
