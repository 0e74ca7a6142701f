"""Dataset builders: from-slices (synthetic and real SPIDER files) and from-volumes (oblique NIfTI)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from dataset_synth import make_slices, raw_mask, tree_snapshot
from nibabel import orientations

from lumbarseg.data.builders import from_slices, from_volumes, output_folder, pair_slices
from lumbarseg.data.deephealth_yaml import load_dataset
from lumbarseg.data.split import SplitSpec
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.intensity import normalize
from lumbarseg.io.slices import read_grey
from lumbarseg.io.volume import affine_from_spacing
from lumbarseg.labels import LabelMap

SPIDER_PNG = LabelMap.load("spider-png")


def build(tmp_path: Path, **kwargs):
    images, masks = make_slices(tmp_path / "in", {"1": 2, "2": 2, "10": 3})
    out = tmp_path / "out" / "ds.yml"
    return images, masks, out, from_slices(images, masks, out, SPIDER_PNG, progress=False, **kwargs)


def test_from_slices_writes_normalised_images_and_class_masks(tmp_path):
    images, masks, out, ds = build(tmp_path, spacing=(0.5, 0.6, 1.2))
    assert out.is_file() and output_folder(out).is_dir()
    loaded = load_dataset(out, strict=True)
    assert loaded.samples == ds.samples and loaded.split == ds.split
    assert [loaded.patient(i) for i in range(len(loaded.samples))] == ["1", "1", "2", "2", "10", "10", "10"]
    assert [loaded.slice_index(i) for i in range(3)] == [3, 4, 3]
    assert loaded.spacing == (0.5, 0.6) and loaded.meta["slice_spacing"] == 1.2
    assert loaded.classes == ["background", "vertebra", "disc", "canal"]
    assert loaded.meta["label_map"] == {"vertebra": [76], "disc": [29], "canal": [150]}
    # patient 10's three slices are normalised together (one volume)
    originals = [read_grey(images / f"10_t2_SPACE_slice{k}.png") for k in (3, 4, 5)]
    expected = np.round(normalize(np.stack(originals)) * 255).astype(np.uint8)
    for k, index in enumerate((4, 5, 6)):
        sample = loaded.samples[index]
        image_path, mask_path = loaded.root / sample.location[0], loaded.root / sample.label
        stored = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and stored.ndim == 2
        np.testing.assert_array_equal(stored, expected[k])
        raw = read_grey(masks / f"10_t2_SPACE_slice{k + 3}.png")
        np.testing.assert_array_equal(cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED), SPIDER_PNG.to_index(raw))
    # three patients: one per split, all slices of a patient in the same split
    splits = {name: {loaded.patient(i) for i in idx} for name, idx in loaded.split.items()}
    assert list(splits) == ["training", "validation", "test"]
    assert sorted(p for s in splits.values() for p in s) == ["1", "10", "2"]
    assert sum(len(v) for v in loaded.split.values()) == 7


def test_split_is_deterministic(tmp_path):
    images, masks = make_slices(tmp_path / "in", {str(p): 1 for p in range(1, 13)})
    splits = [from_slices(images, masks, tmp_path / f"o{i}.yml", SPIDER_PNG, split=SplitSpec(seed=5),
                          progress=False).split for i in range(2)]
    assert splits[0] == splits[1]
    other = from_slices(images, masks, tmp_path / "o3.yml", SPIDER_PNG, split=SplitSpec(seed=6), progress=False)
    assert other.split != splits[0]


def test_explicit_test_patients(tmp_path):
    _, _, _, ds = build(tmp_path, split=SplitSpec((0.5, 0.5, 0.0), fixed={"test": ("2",)}))
    assert {ds.patient(i) for i in ds.split["test"]} == {"2"}
    assert "test" in ds.split and len(ds.split) == 3


def test_sixteen_bit_rgba_inputs(tmp_path):
    images, masks = make_slices(tmp_path / "in", {"4": 2}, dtype=np.uint16, rgba=True)
    ds = from_slices(images, masks, tmp_path / "o.yml", SPIDER_PNG, progress=False)
    image = cv2.imread(str(ds.pairs("training")[0][0]), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.shape == (24, 20) and image.max() == 255


def test_custom_pattern_without_slice_group(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "msk"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for name in ("caseB-z", "caseA-y", "caseA-x"):
        cv2.imwrite(str(images / f"{name}.png"), rng.integers(0, 255, (8, 8)).astype(np.uint8))
        cv2.imwrite(str(masks / f"{name}.png"), raw_mask(rng, (8, 8)))
    pairs = pair_slices(images, masks, r"case(?P<patient>[A-Z])")
    assert [(p.patient, p.slice, p.name) for p in pairs] == [("A", 0, "caseA-x"), ("A", 1, "caseA-y"),
                                                             ("B", 0, "caseB-z")]


def _corrupt(images: Path, masks: Path, kind: str) -> str:
    name = "2_t2_SPACE_slice3.png"
    if kind == "missing mask":
        (masks / name).unlink()
        return rf"{name}: no mask with the same name"
    if kind == "missing image":
        (images / name).unlink()
        return rf"{name}: no image with the same name"
    if kind == "undecodable":
        (images / name).write_bytes(b"\x89PNG not really")
        return rf"{name}: cannot decode image"
    if kind == "size mismatch":
        cv2.imwrite(str(masks / name), np.zeros((10, 10), np.uint8))
        return rf"{name}: mask size 10x10 \(WxH\) differs from image"
    if kind == "unknown mask value":
        mask = read_grey(masks / name)
        mask[0, 0] = 77
        cv2.imwrite(str(masks / name), mask)
        return rf"{name}: mask values not in the label map: 77"
    if kind == "pattern":
        (images / name).rename(images / "foo.png")
        (masks / name).rename(masks / "foo.png")
        return r"foo\.png: file name does not match the pattern"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing mask", "missing image", "undecodable", "size mismatch",
                                  "unknown mask value", "pattern"])
def test_bad_slices_fail_cleanly_and_write_nothing(tmp_path, kind):
    images, masks = make_slices(tmp_path / "in", {"1": 2, "2": 2})
    problem = _corrupt(images, masks, kind)
    before = tree_snapshot(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(LumbarsegError, match=problem) as info:
        from_slices(images, masks, out_dir / "ds.yml", SPIDER_PNG, progress=False)
    assert "\n" not in str(info.value)
    assert list(out_dir.iterdir()) == []  # no YAML, no folder, no temporary leftovers
    assert tree_snapshot(tmp_path / "in") == before  # inputs untouched


def test_refuses_to_overwrite_and_to_write_into_inputs(tmp_path):
    images, masks, out, ds = build(tmp_path)
    stamp = out.stat().st_mtime_ns
    with pytest.raises(LumbarsegError, match="already exists .*--overwrite"):
        from_slices(images, masks, out, SPIDER_PNG, progress=False)
    assert out.stat().st_mtime_ns == stamp
    again = from_slices(images, masks, out, SPIDER_PNG, progress=False, overwrite=True)
    assert again.split == ds.split and sorted(p.name for p in out.parent.iterdir()) == ["ds", "ds.yml"]
    with pytest.raises(LumbarsegError, match="output is the input folder"):
        from_slices(images, masks, images.parent / "images.yml", SPIDER_PNG, progress=False, overwrite=True)
    with pytest.raises(LumbarsegError, match="output lies inside the input folder"):
        from_slices(images, masks, images / "x.yml", SPIDER_PNG, progress=False)
    with pytest.raises(LumbarsegError, match=r"\.yml or \.yaml"):
        from_slices(images, masks, tmp_path / "x.json", SPIDER_PNG, progress=False)


def test_real_spider_files(spider_dir, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    chosen = []
    for patient in ("11", "118", "5"):
        names = sorted(p.name for p in (spider_dir / "images").glob(f"{patient}_t2_SPACE_slice*.png"))[:2]
        assert len(names) == 2, patient
        for name in names:
            shutil.copy(spider_dir / "images" / name, images / name)
            shutil.copy(spider_dir / "masks" / name, masks / name)
            chosen.append(name)
    ds = from_slices(images, masks, tmp_path / "spider.yml", SPIDER_PNG, spacing=(0.47, 0.47, 0.9), progress=False)
    assert len(ds.samples) == 6 and {ds.patient(i) for i in range(6)} == {"11", "118", "5"}
    assert ds.spacing == (0.47, 0.47)
    for sample in ds.samples:
        image = cv2.imread(str(ds.root / sample.location[0]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(ds.root / sample.label), cv2.IMREAD_UNCHANGED)
        assert image.shape == mask.shape == (640, 512) and image.dtype == mask.dtype == np.uint8
        raw = read_grey(masks / sample.values[2])
        np.testing.assert_array_equal(mask, SPIDER_PNG.to_index(raw))
        assert set(np.unique(mask)) == {0, 1, 2, 3}


# --- from volumes -----------------------------------------------------------------------------------


def _rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[:3, :3] = [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]
    return rot


def _canonical_pair(rng: np.random.Generator, shape=(4, 12, 10)):
    image = rng.normal(100, 20, size=shape).astype(np.float32)
    image[0, 0, 0] = 5000  # an outlier the percentile normalisation clips
    label = np.zeros(shape, np.int16)
    label[:, :6, :5] = 3  # vertebra range of the original SPIDER map (1-25)
    label[:, 6:, :5] = 201  # disc
    label[1:3, :3, 6:] = 100  # canal
    return image, label


def _save_as(array: np.ndarray, canonical_affine: np.ndarray, codes: str, path: Path, tilt: float = 0.0) -> None:
    """Store a RIP array in another orientation (same physical image), optionally tilted."""
    transform = orientations.ornt_transform(orientations.axcodes2ornt(tuple("RIP")),
                                            orientations.axcodes2ornt(tuple(codes)))
    data = orientations.apply_orientation(array, transform)
    affine = _rotation(tilt) @ canonical_affine @ orientations.inv_ornt_aff(transform, array.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))


@pytest.mark.parametrize("codes, tilt", [("LPS", 0.0), ("PIR", 0.0), ("RAS", 12.0), ("ASL", -8.0)])
def test_from_volumes_reorients_to_rip(tmp_path, codes, tilt):
    rng = np.random.default_rng(1)
    spacing = (3.0, 0.5, 0.6)
    canonical = affine_from_spacing(spacing, "RIP")
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    arrays = {}
    for name in ("p1_t2", "p2_t2", "p3_t2"):
        image, label = _canonical_pair(rng)
        arrays[name] = (image, label)
        _save_as(image, canonical, codes, tmp_path / "img" / f"{name}.nii.gz", tilt)
        _save_as(label, canonical, codes, tmp_path / "lab" / f"{name}.nii.gz", tilt)
    spider = LabelMap.load("spider")
    ds = from_volumes(tmp_path / "img", tmp_path / "lab", tmp_path / "out" / "vol.yml", spider,
                      pattern=r"p(?P<patient>\d+)_", progress=False)
    assert len(ds.samples) == 12 and ds.meta["orientation"] == "RIP"
    assert ds.spacing == pytest.approx((0.5, 0.6)) and ds.meta["slice_spacing"] == pytest.approx(3.0)
    volumes = {v["name"]: v for v in ds.meta["volumes"]}
    for name, (image, label) in arrays.items():
        record = volumes[name]
        assert record["orientation"] == codes and record["canonical_shape"] == [4, 12, 10]
        original = nib.load(str(tmp_path / "img" / f"{name}.nii.gz"))
        np.testing.assert_allclose(record["affine"], original.affine, atol=1e-5)
        assert record["shape"] == list(original.shape)
        first, stop = record["samples"]
        expected_image = np.round(normalize(image) * 255).astype(np.uint8)
        expected_mask = spider.to_index(label)
        for k, index in enumerate(range(first, stop)):
            sample = ds.samples[index]
            assert sample.values == [name[1], k, name]
            np.testing.assert_array_equal(read_grey(ds.root / sample.location[0]), expected_image[k])
            np.testing.assert_array_equal(read_grey(ds.root / sample.label), expected_mask[k])
    assert load_dataset(tmp_path / "out" / "vol.yml", strict=True).split == ds.split


def test_from_volumes_metaimage(tmp_path):
    from lumbarseg.io.readers import write_volume
    from lumbarseg.io.volume import Volume

    rng = np.random.default_rng(2)
    image, label = _canonical_pair(rng)
    affine = affine_from_spacing((1.0, 0.5, 0.5), "RIP")
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    write_volume(Volume(image, affine), tmp_path / "img" / "7.mha")
    write_volume(Volume(label, affine), tmp_path / "lab" / "7.mhd")
    ds = from_volumes(tmp_path / "img", tmp_path / "lab", tmp_path / "m.yml", LabelMap.load("spider"),
                      progress=False)
    assert len(ds.samples) == 4 and ds.patient(0) == "7"
    np.testing.assert_array_equal(read_grey(ds.pairs("training")[1][1]), LabelMap.load("spider").to_index(label)[1])


@pytest.mark.parametrize("problem", ["shape", "affine", "float labels", "unpaired"])
def test_from_volumes_rejects_mismatched_grids(tmp_path, problem):
    rng = np.random.default_rng(3)
    image, label = _canonical_pair(rng)
    affine = affine_from_spacing((1.0, 0.5, 0.5), "RIP")
    label_affine = affine.copy()
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    expected = "label geometry"
    if problem == "shape":
        label = label[:, :-1]
        expected = r"label grid \(4, 11, 10\) differs from image .*a\.nii \(4, 12, 10\)"
    elif problem == "affine":
        label_affine[0, 3] += 0.5
        expected = r"label geometry \(affine\) differs from image .*a\.nii"
    elif problem == "float labels":
        label = label.astype(np.float32) + 0.25
        expected = "non-integer values"
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "img" / "a.nii"))
    nib.save(nib.Nifti1Image(label, label_affine), str(tmp_path / "lab" / "a.nii.gz"))
    if problem == "unpaired":
        nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "img" / "b.nii"))
        expected = r"b\.nii: no label volume with the same name"
    with pytest.raises(LumbarsegError, match=expected):
        from_volumes(tmp_path / "img", tmp_path / "lab", tmp_path / "out" / "v.yml", LabelMap.load("spider"),
                     progress=False)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
