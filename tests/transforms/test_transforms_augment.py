"""The portable augmentations do what ECVL's do: geometry shared by image and mask, intensities on the image only."""
from __future__ import annotations

import numpy as np
import pytest

from lumbarseg.transforms import augment as A
from lumbarseg.transforms.augment import Augmenter, apply_steps
from lumbarseg.transforms.ecvl_spec import parse_spec, with_model_range

LABELS = {0, 1, 2, 3}


def _pair(height: int = 48, width: int = 64):
    """A textured 8-bit image and a 4-class mask of blocks (one mask value per block)."""
    rng = np.random.default_rng(7)
    image = rng.integers(20, 230, (height, width), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[5:20, 5:30] = 1
    mask[25:40, 10:50] = 2
    mask[8:18, 40:60] = 3
    return image, mask


GEOMETRIC = {
    "AugResizeDim dims=(40,30)": (30, 40),
    "AugResizeScale scale=(0.5,1.5)": (72, 32),
    "AugRotate angle=[-30,30]": (48, 64),
    "AugRotate angle=[-30,30] interp=\"cubic\" center=(10,10) scale=1.2": (48, 64),
    "AugMirror p=1": (48, 64),
    "AugFlip p=1": (48, 64),
    "AugTranspose p=1": (64, 48),
    "AugElasticTransform alpha=[20,40] sigma=[3,5]": (48, 64),
    "AugElasticTransform alpha=[20,40] sigma=[3,5] border_type=\"constant\" border_value=7": (48, 64),
    "AugGridDistortion num_steps=[3,6] distort_limit=[-0.3,0.3]": (48, 64),
    "AugCenterCrop size=(32,20)": (20, 32),
    "AugCenterCrop": (48, 48),
    "AugRandomCrop size=(32,20)": (20, 32),
    "AugRandomCrop size=(80,50)": (50, 80),
}


@pytest.mark.parametrize("text", list(GEOMETRIC))
def test_geometric_ops_keep_labels_and_move_image_and_mask_together(text):
    image, mask = _pair()
    out_image, out_mask = Augmenter(parse_spec(text))(image, mask, np.random.default_rng(3))
    assert out_image.shape == out_mask.shape == GEOMETRIC[text]
    assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= LABELS
    # image and mask share the geometry: warping a copy of the mask as the image gives the mask itself
    steps = Augmenter(parse_spec(text)).sample(np.random.default_rng(3))
    as_image, _ = apply_steps(mask * 60, mask, [(n, {**a, "interp": "nearest"} if "interp" in a else a)
                                                for n, a in steps])
    assert np.array_equal(as_image // 60, out_mask)


def test_mirror_and_flip_twice_are_identity_and_differ_once():
    image, mask = _pair()
    for op in (A.mirror, A.flip, A.transpose):
        once = op(image, mask)
        assert not np.array_equal(once[0], image)
        twice = op(*once)
        assert np.array_equal(twice[0], image) and np.array_equal(twice[1], mask)
    assert np.array_equal(A.mirror(image, mask)[0][:, 0], image[:, -1])  # Mirror = left-right
    assert np.array_equal(A.flip(image, mask)[0][0], image[-1])  # Flip = up-down


def test_rotation_by_90_degrees_is_clockwise_about_the_centre():
    image = np.zeros((41, 41), np.uint8)
    mask = np.zeros((41, 41), np.uint8)
    image[10, 30] = mask[10, 30] = 1  # above-right of the centre (20.5, 20.5)
    out_image, out_mask = A.rotate(image, mask, 90.0, interp="nearest")
    # ECVL: positive angle = clockwise on screen; (x=30, y=10) goes to (x=31, y=30) about (20.5, 20.5)
    assert np.argwhere(out_mask == 1).tolist() == [[30, 31]]
    assert np.argwhere(out_image == 1).tolist() == [[30, 31]]


def test_resize_dims_are_width_then_height():
    image, mask = _pair(48, 64)
    out_image, out_mask = A.resize(image, mask, 32, 16)
    assert out_image.shape == (16, 32) and out_mask.shape == (16, 32)


@pytest.mark.parametrize("text", [
    "AugGammaContrast gamma=[0.5,2]", "AugBrightness beta=[10,40]", "AugGaussianBlur sigma=[1,2]",
    "AugAdditiveLaplaceNoise std_dev=[5,10]", "AugAdditivePoissonNoise lambda=[2,5]",
    "AugCoarseDropout p=[0.3,0.5] drop_size=[0.1,0.2] per_channel=0", "AugNormalize mean=100 std=2",
    "AugToFloat32 divisor=255", "AugScaleTo new_min=0 new_max=100",
    "AugScaleFromTo old_min=50 old_max=200 new_min=0 new_max=255",
])
def test_intensity_ops_change_the_image_and_never_the_mask(text):
    image, mask = _pair()
    before = image.copy(), mask.copy()
    out_image, out_mask = Augmenter(parse_spec(text))(image, mask, np.random.default_rng(0))
    assert out_mask is mask and np.array_equal(out_mask, before[1])
    assert np.array_equal(image, before[0])  # input untouched
    assert out_image.shape == image.shape and not np.array_equal(out_image.astype(np.float32), image)


def test_intensity_semantics_follow_ecvl():
    image = np.array([[0, 64, 128, 255]], np.uint8)
    assert A.gamma_contrast(image, 2.0).tolist() == [[0, 16, 64, 255]]  # (v/255)^2*255 rounded
    assert A.brightness(image, 10.0).tolist() == [[10, 74, 138, 255]]  # saturates in uint8
    assert A.to_float32(image, 255.0).dtype == np.float32
    assert A.to_float32(image, 255.0).max() == pytest.approx(1.0)
    assert A.normalize(A.to_float32(image), 128.0, 64.0).tolist() == [[-2.0, -1.0, 0.0, 127 / 64]]
    assert A.scale_to(image, 0, 100).tolist() == [[0, 25, 50, 100]]
    flat = np.full((200, 200), 100.0, np.float32)
    noise = A.laplace_noise(flat, 4.0, seed=1) - 100
    assert abs(np.mean(np.abs(noise)) - 4.0) < 0.2  # Laplace scale b: E|x| = b
    dropped = A.coarse_dropout(np.full((100, 100), 9, np.uint8), p=1.0, drop_size=0.1, seed=0)
    assert dropped.max() == 0
    kept = A.coarse_dropout(np.full((100, 100), 9, np.uint8), p=0.5, drop_size=0.1, seed=0)
    zero_fraction = np.mean(kept == 0)
    assert 0.2 < zero_fraction < 0.8 and zero_fraction * 100 == pytest.approx(round(zero_fraction * 100))


def test_gaussian_blur_keeps_mean_and_smooths():
    image, _ = _pair()
    blurred = A.gaussian_blur(image, 2.0)
    assert blurred.std() < image.std() * 0.5
    assert abs(float(blurred.mean()) - float(image.mean())) < 2


def test_same_seed_same_output_and_different_seed_different_output():
    spec = parse_spec("""SequentialAugmentationContainer
        AugRotate angle=[-20,20]
        AugMirror p=0.5
        AugElasticTransform alpha=[20,40] sigma=[3,5]
        OneOfAugmentationContainer p=1
            AugAdditiveLaplaceNoise std_dev=[2,5]
            AugGammaContrast gamma=[0.5,2]
        end
    end""")
    image, mask = _pair()
    first = Augmenter(spec)(image, mask, np.random.default_rng(11))
    again = Augmenter(spec)(image, mask, np.random.default_rng(11))
    other = Augmenter(spec)(image, mask, np.random.default_rng(12))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_probabilities_and_one_of_choose_as_specified():
    augmenter = Augmenter(parse_spec("OneOfAugmentationContainer p=0.5\n AugMirror p=1\n AugFlip p=1\nend"))
    draws = [augmenter.sample(np.random.default_rng(seed)) for seed in range(400)]
    names = [steps[0][0] if steps else "none" for steps in draws]
    for name in ("mirror", "flip"):
        assert 60 < names.count(name) < 140
    assert 160 < names.count("none") < 240
    never = Augmenter(parse_spec("AugMirror p=0"))
    assert all(never.sample(np.random.default_rng(s)) == [] for s in range(50))


def test_model_range_pipeline_gives_unit_floats():
    image, mask = _pair()
    out, _ = Augmenter(with_model_range(parse_spec("AugBrightness beta=[300,400]")))(image, mask,
                                                                                      np.random.default_rng(0))
    assert out.dtype == np.float32 and out.min() == 1.0  # saturated at 255 in uint8, then / 255


def test_grid_coordinates_cover_the_image():
    coords = A._grid_coords(50, 4, np.ones(5))
    # ECVL's cells: factor 1 everywhere stretches each cell by step/(step-1), the last one ends on the border
    assert coords[0] == 0 and coords[-1] == 49 and np.all(np.diff(coords) >= 0)
    stretched = A._grid_coords(50, 4, np.full(5, 1.2))
    assert stretched[11] == pytest.approx(12 * 1.2) and stretched[-1] == 49
