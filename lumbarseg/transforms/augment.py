"""The portable implementation of ECVL's augmentations: OpenCV/numpy kernels on a 2D image and its mask.

Per TorchIO, randomness and work are split: :meth:`Augmenter.sample` draws every random value from a
numpy ``Generator`` into a list of steps (an op name and its fixed arguments), and :func:`apply_steps`
runs the deterministic ops in :data:`OPS`. The same draw therefore gives the same output, whatever thread runs it.

Semantics follow ECVL 1.0.3 (``modules/core/src/cpu_hal_imgproc.cpp``):
- Images come in as ECVL's DLDataset reads them, ``uint8`` (0..255), and stay ``uint8`` (each intensity op
  rounds and saturates, as ECVL's ``saturate_cast``) until ``AugToFloat32`` turns them to float32 / divisor.
  So ``AugBrightness beta``, ``AugAdditiveLaplaceNoise std_dev`` and ``AugNormalize`` are in 0..255 units
  before ``AugToFloat32`` and ``AugGammaContrast`` computes ``(v/255)**gamma*255``, exactly as ECVL.
- Geometry: ``dims``/``size`` are (width, height); ``AugRotate`` turns clockwise for positive angles about
  (width/2, height/2), filling with 0; ``AugMirror`` flips left-right, ``AugFlip`` up-down.
- Masks (class indices) get every geometric op with nearest interpolation and the same displacement, and
  no intensity op. (ECVL itself warps masks linearly in AugElasticTransform/AugGridDistortion; we do not.)
- ``AugAdditiveLaplaceNoise std_dev`` is the Laplace scale b (ECVL draws Exp(1/b) - Exp(1/b)).
- ``AugGridDistortion`` stretches the last cell to the image border (ECVL leaves its last ``size %
  num_steps`` columns/rows mapped to 0).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.transforms.ecvl_spec import ONE_OF, SEQUENTIAL, AugSpec, Range

Step = Tuple[str, Dict[str, Any]]
Pair = Tuple[np.ndarray, np.ndarray]

INTERPOLATION = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC,
                 "area": cv2.INTER_AREA, "lanczos4": cv2.INTER_LANCZOS4}
BORDER = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT,
          "wrap": cv2.BORDER_WRAP, "reflect_101": cv2.BORDER_REFLECT_101, "reflect101": cv2.BORDER_REFLECT_101,
          "transparent": cv2.BORDER_TRANSPARENT}
_SEED_MAX = 2**32 - 1


class Augmenter:
    """A spec made runnable on one slice: `augmenter(image, mask, rng) -> (image, mask)`.

    Geometric operations move the mask with the same parameters (nearest neighbour); intensity operations leave
    it alone. Inputs are not modified.

    Args:
        spec: a spec from `parse_spec`.
    """

    def __init__(self, spec: AugSpec) -> None:
        self.spec = spec

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        return apply_steps(image, mask, self.sample(rng))

    def sample(self, rng: np.random.Generator) -> List[Step]:
        """Draw every random value of one application (ECVL draws afresh per image)."""
        return _sample(self.spec, rng)


def apply_steps(image: np.ndarray, mask: np.ndarray, steps: List[Step]) -> Pair:
    """Run drawn steps on a 2D image (uint8 or float32) and its 2D uint8 class-index mask; inputs are not modified."""
    if image.ndim != 2 or mask.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f"expected 2D image and mask of one shape, got {image.shape} and {mask.shape}")
    for name, args in steps:
        image, mask = OPS[name](image, mask, **args)
    return image, mask


# --- sampling: spec node -> steps ------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, value: Range) -> float:
    return float(rng.uniform(value.low, value.high)) if value.high > value.low else float(value.low)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_MAX))


def _sample(node: AugSpec, rng: np.random.Generator) -> List[Step]:
    p = node.params
    name = node.name
    if name == SEQUENTIAL:
        return [step for child in node.children for step in _sample(child, rng)]
    if name == ONE_OF:
        index = int(rng.integers(len(node.children)))
        return _sample(node.children[index], rng) if rng.random() <= p["p"] else []
    if name in ("AugMirror", "AugFlip", "AugTranspose"):
        return [(name[3:].lower(), {})] if rng.random() <= p["p"] else []
    if name == "AugResizeDim":
        return [("resize", {"width": int(p["dims"][0]), "height": int(p["dims"][1]), "interp": p["interp"]})]
    if name == "AugResizeScale":
        return [("resize_scale", {"scale": tuple(p["scale"]), "interp": p["interp"]})]
    if name == "AugRotate":
        return [("rotate", {"angle": _uniform(rng, p["angle"]), "center": p.get("center"), "scale": p["scale"],
                            "interp": p["interp"]})]
    if name == "AugElasticTransform":
        return [("elastic", {"alpha": _uniform(rng, p["alpha"]), "sigma": _uniform(rng, p["sigma"]),
                             "seed": _seed(rng), **_border_args(p)})]
    if name == "AugGridDistortion":
        return [("grid_distortion", {"num_steps": int(_uniform(rng, p["num_steps"])),
                                     "distort_limit": tuple(p["distort_limit"]), "seed": _seed(rng),
                                     **_border_args(p)})]
    if name == "AugCenterCrop":
        return [("center_crop", {"size": p.get("size")})]
    if name == "AugRandomCrop":
        return [("random_crop", {"width": int(p["size"][0]), "height": int(p["size"][1]),
                                 "fx": float(rng.random()), "fy": float(rng.random()),
                                 "border_type": p["border_type"], "border_value": p["border_value"]})]
    if name == "AugGammaContrast":
        return [("gamma_contrast", {"gamma": _uniform(rng, p["gamma"])})]
    if name == "AugBrightness":
        return [("brightness", {"beta": _uniform(rng, p["beta"])})]
    if name == "AugGaussianBlur":
        return [("gaussian_blur", {"sigma": _uniform(rng, p["sigma"])})]
    if name == "AugAdditiveLaplaceNoise":
        return [("laplace_noise", {"scale": _uniform(rng, p["std_dev"]), "seed": _seed(rng)})]
    if name == "AugAdditivePoissonNoise":
        return [("poisson_noise", {"lam": _uniform(rng, p["lambda"]), "seed": _seed(rng)})]
    if name == "AugCoarseDropout":
        # single-channel images: per_channel changes nothing (ECVL divides p by the channel count, here 1)
        return [("coarse_dropout", {"p": _uniform(rng, p["p"]), "drop_size": _uniform(rng, p["drop_size"]),
                                    "seed": _seed(rng)})]
    if name == "AugNormalize":
        return [("normalize", {"mean": _single(p["mean"], name), "std": _single(p["std"], name)})]
    if name == "AugToFloat32":
        return [("to_float32", {"divisor": p["divisor"]})]
    if name == "AugScaleTo":
        return [("scale_to", {"new_min": p["new_min"], "new_max": p["new_max"]})]
    if name == "AugScaleFromTo":
        return [("scale_from_to", {key: p[key] for key in ("old_min", "old_max", "new_min", "new_max")})]
    raise LumbarsegError("augmentation", f"{name} has no portable implementation")


def _border_args(p: Dict[str, Any]) -> Dict[str, Any]:
    return {"interp": p["interp"], "border_type": p["border_type"], "border_value": p["border_value"]}


def _single(value: Any, name: str) -> float:
    if isinstance(value, tuple):
        if len(value) != 1:
            raise LumbarsegError("augmentation", f"{name}: images have 1 channel, got {len(value)} per-channel values")
        return float(value[0])
    return float(value)


# --- deterministic ops ------------------------------------------------------------------------------------------

def _saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """ECVL's saturate_cast: round and clip to the image's type; float images pass through."""
    if dtype == np.uint8:
        values = np.rint(values, out=values if values.dtype == np.float32 else None)
        return np.clip(values, 0, 255, out=values).astype(np.uint8)
    return values.astype(dtype, copy=False)


def resize(image: np.ndarray, mask: np.ndarray, width: int, height: int, interp: str = "linear") -> Pair:
    return (cv2.resize(image, (width, height), interpolation=INTERPOLATION[interp]),
            cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST))


def resize_scale(image: np.ndarray, mask: np.ndarray, scale: Tuple[float, float], interp: str = "linear") -> Pair:
    height, width = image.shape
    # C's lround: halves away from zero
    new_width, new_height = int(np.floor(width * scale[0] + 0.5)), int(np.floor(height * scale[1] + 0.5))
    return resize(image, mask, max(new_width, 1), max(new_height, 1), interp)


def rotate(image: np.ndarray, mask: np.ndarray, angle: float, center: Optional[Tuple[float, float]] = None,
           scale: float = 1.0, interp: str = "linear") -> Pair:
    height, width = image.shape
    pivot = (width / 2.0, height / 2.0) if center is None else (float(center[0]), float(center[1]))
    matrix = cv2.getRotationMatrix2D(pivot, -angle, scale)  # ECVL: positive angle = clockwise on screen
    return (cv2.warpAffine(image, matrix, (width, height), flags=INTERPOLATION[interp]),
            cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_NEAREST))


def mirror(image: np.ndarray, mask: np.ndarray) -> Pair:
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def flip(image: np.ndarray, mask: np.ndarray) -> Pair:
    return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(mask[::-1])


def transpose(image: np.ndarray, mask: np.ndarray) -> Pair:
    return np.ascontiguousarray(image.T), np.ascontiguousarray(mask.T)


def _remap(image: np.ndarray, mask: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interp: str,
           border_type: str, border_value: float) -> Pair:
    border = BORDER[border_type]
    return (cv2.remap(image, map_x, map_y, INTERPOLATION[interp], borderMode=border, borderValue=border_value),
            cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=border, borderValue=0))


def elastic(image: np.ndarray, mask: np.ndarray, alpha: float, sigma: float, seed: int, interp: str = "linear",
            border_type: str = "reflect_101", border_value: float = 0.0) -> Pair:
    """ECVL's ElasticTransform: U(-1,1) displacements, Gaussian-smoothed (17x17 kernel, sigma), times alpha pixels."""
    height, width = image.shape
    rng = np.random.default_rng(seed)
    shifts = rng.random((2, height, width), dtype=np.float32)
    shifts *= np.float32(2)
    shifts -= np.float32(1)
    if sigma > 0:
        for axis in range(2):
            shifts[axis] = cv2.GaussianBlur(shifts[axis], (17, 17), sigma, borderType=cv2.BORDER_REPLICATE)
    shifts *= np.float32(alpha)
    shifts[0] += np.arange(width, dtype=np.float32)[None, :]
    shifts[1] += np.arange(height, dtype=np.float32)[:, None]
    return _remap(image, mask, shifts[0], shifts[1], interp, border_type, border_value)


def _grid_coords(size: int, num_steps: int, steps: np.ndarray) -> np.ndarray:
    """ECVL's FillCoordsVector: each of num_steps cells stretched by its factor, linearly interpolated."""
    step = size // num_steps
    coords = np.zeros(size, dtype=np.float32)
    prev = 0
    for index in range(num_steps):
        start = index * step
        last = index == num_steps - 1
        end = size if last else start + step
        cur = float(size - 1) if last else prev + step * float(steps[index])
        count = end - start
        coords[start:end] = prev + (cur - prev) / max(count - 1, 1) * np.arange(count, dtype=np.float32)
        prev = int(cur)
    return coords


def grid_distortion(image: np.ndarray, mask: np.ndarray, num_steps: int, distort_limit: Tuple[float, float],
                    seed: int, interp: str = "linear", border_type: str = "reflect_101",
                    border_value: float = 0.0) -> Pair:
    height, width = image.shape
    num_steps = max(1, min(num_steps, width, height))
    rng = np.random.default_rng(seed)
    factors = 1 + rng.uniform(distort_limit[0], distort_limit[1], size=(2, num_steps + 1))
    xx, yy = _grid_coords(width, num_steps, factors[0]), _grid_coords(height, num_steps, factors[1])
    map_x = np.broadcast_to(xx[None, :], (height, width)).copy()
    map_y = np.broadcast_to(yy[:, None], (height, width)).copy()
    return _remap(image, mask, map_x, map_y, interp, border_type, border_value)


def center_crop(image: np.ndarray, mask: np.ndarray, size: Optional[Tuple[float, float]] = None) -> Pair:
    height, width = image.shape
    new_width, new_height = (min(width, height),) * 2 if size is None else (int(size[0]), int(size[1]))
    if new_width > width or new_height > height:
        raise LumbarsegError("AugCenterCrop", f"crop {new_width}x{new_height} exceeds the image {width}x{height}")
    x0, y0 = (width - new_width) // 2, (height - new_height) // 2
    return image[y0:y0 + new_height, x0:x0 + new_width].copy(), mask[y0:y0 + new_height, x0:x0 + new_width].copy()


def random_crop(image: np.ndarray, mask: np.ndarray, width: int, height: int, fx: float, fy: float,
                border_type: str = "constant", border_value: float = 0.0) -> Pair:
    """ECVL pads a too-small image by the shortfall on both sides, then crops at a uniform offset."""
    pad_x, pad_y = max(width - image.shape[1], 0), max(height - image.shape[0], 0)
    if pad_x or pad_y:
        border = BORDER[border_type]
        image = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, border, value=border_value)
        mask = cv2.copyMakeBorder(mask, pad_y, pad_y, pad_x, pad_x, border, value=0)
    x0 = int(fx * (image.shape[1] - width + 1))
    y0 = int(fy * (image.shape[0] - height + 1))
    return image[y0:y0 + height, x0:x0 + width].copy(), mask[y0:y0 + height, x0:x0 + width].copy()


def gamma_contrast(image: np.ndarray, gamma: float) -> np.ndarray:
    if image.dtype == np.uint8:
        table = _saturate(255.0 * (np.arange(256) / 255.0) ** gamma, np.dtype(np.uint8))
        return cv2.LUT(image, table)
    return (255.0 * np.power(np.maximum(image, 0) / 255.0, gamma)).astype(image.dtype)


def brightness(image: np.ndarray, beta: float) -> np.ndarray:
    return _saturate(image.astype(np.float32) + np.float32(beta), image.dtype)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """ECVL's kernel size for sigma (odd, >= 3) and replicated borders."""
    size = int(((sigma - 0.8) / 0.3 + 1) / 0.5 + 1)
    size = max(size + 1 if size % 2 == 0 else size, 3)
    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REPLICATE)


def laplace_noise(image: np.ndarray, scale: float, seed: int) -> np.ndarray:
    if scale <= 0:
        return image.copy()
    # Laplace(0, scale) by inverse CDF from one float32 uniform, in place: numpy's laplace() is 10x slower
    noise = np.random.default_rng(seed).random(image.shape, dtype=np.float32)
    noise -= np.float32(0.5)
    sign = np.signbit(noise)
    np.abs(noise, out=noise)
    noise *= np.float32(-2)
    noise += np.float32(1)
    np.maximum(noise, np.float32(1e-7), out=noise)
    np.log(noise, out=noise)  # <= 0: minus the magnitude
    noise *= np.float32(scale)
    np.negative(noise, out=noise, where=~sign)
    noise += image
    return _saturate(noise, image.dtype)


def poisson_noise(image: np.ndarray, lam: float, seed: int) -> np.ndarray:
    if lam <= 0:
        return image.copy()
    noise = np.random.default_rng(seed).poisson(lam, size=image.shape).astype(np.float32)
    return _saturate(image.astype(np.float32) + noise, image.dtype)


def coarse_dropout(image: np.ndarray, p: float, drop_size: float, seed: int) -> np.ndarray:
    """Zero each cell of a grid of (drop_size * width) x (drop_size * height) rectangles with probability p."""
    height, width = image.shape
    cell_x, cell_y = max(int(width * drop_size), 1), max(int(height * drop_size), 1)
    rows, cols = -(-height // cell_y), -(-width // cell_x)
    dropped = np.random.default_rng(seed).random((rows, cols)) < p
    full = np.repeat(np.repeat(dropped, cell_y, axis=0), cell_x, axis=1)[:height, :width]
    out = image.copy()
    out[full] = 0
    return out


def normalize(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    return _saturate((image.astype(np.float32) - np.float32(mean)) / np.float32(std), image.dtype)


def to_float32(image: np.ndarray, divisor: float = 1.0) -> np.ndarray:
    return image.astype(np.float32) / np.float32(divisor)


def scale_to(image: np.ndarray, new_min: float, new_max: float) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    if high == low:
        return _saturate(np.full(image.shape, new_min, dtype=np.float32), image.dtype)
    factor = (new_max - new_min) / (high - low)
    return _saturate(image.astype(np.float32) * np.float32(factor) + np.float32(new_max - factor * high), image.dtype)


def scale_from_to(image: np.ndarray, old_min: float, old_max: float, new_min: float, new_max: float) -> np.ndarray:
    factor = (new_max - new_min) / (old_max - old_min)
    clipped = np.clip(image.astype(np.float32), old_min, old_max)
    return _saturate(clipped * np.float32(factor) + np.float32(new_max - factor * old_max), image.dtype)


def _image_only(function: Callable[..., np.ndarray]) -> Callable[..., Pair]:
    """Intensity ops never touch the mask."""

    def op(image: np.ndarray, mask: np.ndarray, **args: Any) -> Pair:
        return function(image, **args), mask

    op.__name__ = function.__name__
    op.__doc__ = function.__doc__
    return op


OPS: Dict[str, Callable[..., Pair]] = {
    "resize": resize, "resize_scale": resize_scale, "rotate": rotate, "mirror": mirror, "flip": flip,
    "transpose": transpose, "elastic": elastic, "grid_distortion": grid_distortion, "center_crop": center_crop,
    "random_crop": random_crop,
    **{f.__name__: _image_only(f) for f in (gamma_contrast, brightness, gaussian_blur, laplace_noise, poisson_noise,
                                            coarse_dropout, normalize, to_float32, scale_to, scale_from_to)},
}
