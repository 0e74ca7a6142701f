"""normalize: the histogram path for integer volumes gives np.percentile's result, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from lumbarseg.io.intensity import DEFAULT_NORMALIZATION, normalize


def float_path(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """The reference: np.percentile over the float32 volume."""
    data = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(data, [low, high])
    if hi <= lo:
        return np.zeros_like(data)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_integer_volumes_match_np_percentile_exactly(dtype) -> None:
    rng = np.random.default_rng(int(np.dtype(dtype).itemsize) * 10 + int(np.dtype(dtype).kind == "u"))
    info = np.iinfo(dtype)
    for trial in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 30, 3))
        if trial % 3 == 0:  # MRI-like: skewed, a narrow range somewhere in the type's range
            centre = int(rng.integers(info.min, info.max))
            values = centre + rng.gamma(2.0, rng.uniform(0.5, 300), shape) * rng.choice([-1, 1])
        elif trial % 3 == 1:  # the whole range of the type
            values = rng.integers(info.min, int(info.max) + 1, shape)
        else:  # few levels: ties everywhere
            values = rng.integers(0, 4, shape) * int(rng.integers(1, 40)) + info.min // 2
        array = np.clip(values, info.min, info.max).astype(dtype)
        low, high = float(rng.choice([0.0, 0.5, 1.0, 2.5, 33.3])), float(rng.choice([50.0, 97.0, 99.5, 100.0]))
        spec = {"method": "percentile", "low": low, "high": high}
        out = normalize(array, spec)
        assert out.dtype == np.float32 and out.shape == array.shape
        np.testing.assert_array_equal(out, float_path(array, low, high))


def test_constant_and_other_types_take_the_float_path() -> None:
    assert not normalize(np.full((2, 3, 4), 7, np.int16)).any()
    assert normalize(np.full((2, 3, 4), 7, np.int16)).dtype == np.float32
    rng = np.random.default_rng(1)
    for array in (rng.normal(100, 30, (4, 9, 9)).astype(np.float32), rng.integers(-10**6, 10**6, (3, 8, 8))):
        np.testing.assert_array_equal(normalize(array, DEFAULT_NORMALIZATION), float_path(array))
