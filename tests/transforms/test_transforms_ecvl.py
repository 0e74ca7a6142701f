"""The same spec builds real pyecvl containers, and ECVL's deterministic ops agree with the portable ones."""
from __future__ import annotations

import numpy as np
import pytest

from lumbarseg.transforms import augment as A
from lumbarseg.transforms.ecvl_spec import (
    AUGMENTATIONS,
    ONE_OF,
    SEQUENTIAL,
    Range,
    format_spec,
    make_spec,
    parse_spec,
    with_model_range,
)

pytest.importorskip("pyeddl", reason="pyeddl/pyecvl not installed (the EDDL engine's optional dependency)")
ecvl = pytest.importorskip("pyecvl.ecvl", reason="pyecvl not installed (the EDDL engine's optional dependency)")

from lumbarseg.engines.ecvl_augment import build_dataset_augmentations, build_ecvl_augmentation  # noqa: E402

TRAINING = """SequentialAugmentationContainer
    AugResizeDim dims=(40,30) interp="linear"
    AugRotate angle=[-10,10]
    AugMirror p=0.5
    AugElasticTransform alpha=[20,40] sigma=[4,6]
    AugGammaContrast gamma=[0.7,1.5]
    OneOfAugmentationContainer p=0.5
        AugGaussianBlur sigma=[0.5,1.0]
        AugAdditiveLaplaceNoise std_dev=[1,5]
    end
end"""


def _to_ecvl(array: np.ndarray):
    """A 2D (rows, cols) array as a one-channel ECVL image (x first, Fortran order)."""
    return ecvl.Image.fromarray(np.asfortranarray(array.T[:, :, None]), "xyc", ecvl.ColorType.GRAY)


def _from_ecvl(image) -> np.ndarray:
    return np.array(image)[:, :, 0].T


def _pair():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 6:20] = 2
    mask[14:20, 3:9] = 3
    return image, mask


def test_training_spec_builds_and_applies_to_an_ecvl_image():
    augmentation = build_ecvl_augmentation(TRAINING)
    image, mask = _pair()
    ecvl_image, ecvl_mask = _to_ecvl(image), _to_ecvl(mask)
    augmentation.Apply(ecvl_image, ecvl_mask)
    # dims=(40,30) is (width, height) in ECVL, as in the portable implementation; the model range is applied
    assert (ecvl_image.Width(), ecvl_image.Height()) == (40, 30)
    out = _from_ecvl(ecvl_image)
    assert out.shape == (30, 40) and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    portable, _ = A.Augmenter(with_model_range(parse_spec(TRAINING)))(image, mask, np.random.default_rng(0))
    assert portable.shape == out.shape and portable.dtype == out.dtype


def test_every_supported_augmentation_is_accepted_by_ecvl_factory():
    samples = {"range": Range(0.5, 1.0), "vector": (8.0, 8.0), "number": 0.5, "number|vector": 1.0}
    for name, schema in AUGMENTATIONS.items():
        params = {k: samples[p.kind] for k, p in schema.items() if p.required}
        if name == "AugGridDistortion":
            params["num_steps"] = Range(2.0, 4.0)
        if name == "AugScaleFromTo":
            params = {"old_min": 0.0, "old_max": 255.0, "new_min": 0.0, "new_max": 1.0}
        children = (make_spec("AugMirror"),) if name in (SEQUENTIAL, ONE_OF) else ()
        spec = make_spec(name, children=children, **params)
        augmentation = build_ecvl_augmentation(spec, model_range=False)
        assert augmentation is not None, format_spec(spec)
        image, mask = _pair()
        augmentation.Apply(_to_ecvl(image), _to_ecvl(mask))


@pytest.mark.parametrize("text, op, args", [
    ("AugMirror p=1", A.mirror, {}),
    ("AugFlip p=1", A.flip, {}),
    ("AugRotate angle=[90,90] interp=\"nearest\"", A.rotate, {"angle": 90.0, "interp": "nearest"}),
    ("AugRotate angle=[25,25]", A.rotate, {"angle": 25.0}),
    ("AugResizeDim dims=(20,12)", A.resize, {"width": 20, "height": 12}),
    ("AugResizeScale scale=(0.5,1.5)", A.resize_scale, {"scale": (0.5, 1.5)}),
    ("AugCenterCrop size=(20,10)", A.center_crop, {"size": (20, 10)}),
])
def test_deterministic_geometry_matches_ecvl(text, op, args):
    image, mask = _pair()
    ecvl_image, ecvl_mask = _to_ecvl(image), _to_ecvl(mask)
    build_ecvl_augmentation(text, model_range=False).Apply(ecvl_image, ecvl_mask)
    ours_image, ours_mask = op(image, mask, **args)
    assert np.array_equal(_from_ecvl(ecvl_mask), ours_mask)
    difference = np.abs(_from_ecvl(ecvl_image).astype(int) - ours_image.astype(int))
    if "angle=[25,25]" in text:
        # ECVL warps uint8 with OpenCV's fixed-point bilinear weights (1/32 steps); ours interpolates in float.
        # On a noise image that is up to 255/32 grey levels apart per pixel, and well under 1 on average.
        assert difference.max() <= 8 and difference.mean() < 1
    else:
        assert difference.max() <= 1


@pytest.mark.parametrize("text, op, args", [
    ("AugGammaContrast gamma=[2,2]", A.gamma_contrast, {"gamma": 2.0}),
    ("AugBrightness beta=[30,30]", A.brightness, {"beta": 30.0}),
    ("AugGaussianBlur sigma=[1.5,1.5]", A.gaussian_blur, {"sigma": 1.5}),
    ("AugToFloat32 divisor=255", A.to_float32, {"divisor": 255.0}),
])
def test_deterministic_intensity_matches_ecvl(text, op, args):
    image, mask = _pair()
    ecvl_image, ecvl_mask = _to_ecvl(image), _to_ecvl(mask)
    build_ecvl_augmentation(text, model_range=False).Apply(ecvl_image, ecvl_mask)
    ours = op(image, **args)
    assert np.array_equal(_from_ecvl(ecvl_mask), mask)
    assert np.abs(_from_ecvl(ecvl_image).astype(np.float64) - ours.astype(np.float64)).max() <= 1.0


def test_dataset_augmentations_per_split():
    augmentations = build_dataset_augmentations(TRAINING, None, None)
    assert augmentations is not None
