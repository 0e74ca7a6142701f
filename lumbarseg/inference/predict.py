"""Predict: a volume in, a label volume out in the input's own grid and geometry.

One object (:class:`Predictor`) holds the loaded model; :func:`predict` is the one-call form that
both ``lumbarseg predict`` and ``lumbarseg.predict(...)`` use. The steps, each undone in reverse:

read -> reorient to the model's orientation (RIP: ``array[k]`` is a sagittal slice) -> normalise
intensities per volume -> resample each slice in-plane to the model's spacing -> (2.5D models: stack each
slice's neighbours at the model's ``slice_offsets`` as channels) -> pad to a multiple of ``2**depth`` ->
infer in batches (optionally with flips) -> crop -> resample the class probabilities back to the slice's
size (linear) -> argmax -> post-process (no labels where the image has no signal; components, the spinal
column, holes) -> label values -> undo the reorientation. Only permutations/flips touch the slice axis,
so no voxel moves.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.context import channel_batch, neighbours
from lumbarseg.inference.postprocess import ComponentRule, postprocess
from lumbarseg.inference.runtimes import load_model
from lumbarseg.io import limits
from lumbarseg.io.cases import Case
from lumbarseg.io.intensity import no_signal, normalize
from lumbarseg.io.readers import read_volume
from lumbarseg.io.volume import CANONICAL, Volume, affine_from_spacing, reorient
from lumbarseg.model.metadata import ModelMetadata
from lumbarseg.model.registry import resolve_model

PathLike = Union[str, Path]

# In-plane flips for test-time augmentation: "ap" mirrors anterior-posterior (image columns, ECVL's
# AugMirror), "si" flips superior-inferior (rows, AugFlip). A left-right flip is a no-op for a 2D
# sagittal model. ``tta=True`` means "ap" only: a mirrored sagittal slice is still a plausible spine
# facing the other way; an upside-down one is not, unless the model was trained with AugFlip.
FLIP_AXES = {"ap": 3, "si": 2}
FLIP_AUGMENTATIONS = {"ap": "AugMirror", "si": "AugFlip"}  # what training must have used for each flip
DEFAULT_TTA = ("ap",)


def default_model_path() -> Path:
    """The default shipped model (``accurate``): ``models/`` of the source tree, or ``lumbarseg/resources/``."""
    return resolve_model(None)


@dataclass
class Prediction:
    """A predicted label volume in the input's grid, with what produced it.

    Attributes:
        mask: the model's label values (`metadata.label_values`) in the input's grid, affine and header.
        metadata: the model's metadata (classes, colours, spacing, ...).
        image: the input volume.
        probabilities: float32 (C, *mask.shape) in the same grid, when asked for; else None.
        info: how it was made: model file, runtime, flips, post-processing, the input's orientation and spacing
            (mm).
    """

    mask: Volume
    metadata: ModelMetadata
    image: Volume
    probabilities: Optional[np.ndarray] = None
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> List[str]:
        return list(self.metadata.classes)

    def overlay(self, title: str = "") -> np.ndarray:
        """The overlay mosaic (RGB uint8) of the mask on its image (canonical orientation, physical aspect)."""
        from lumbarseg.io.overlay import overlay_picture

        orientation = self.metadata.orientation
        image, _ = reorient(self.image, orientation)
        mask, _ = reorient(self.mask.with_array(self.class_indices()), orientation)
        return overlay_picture(image.array, mask.array, self.metadata.label_map, image.spacing[1:], title=title)

    def class_indices(self) -> np.ndarray:
        """The mask as class indices (0 = background) instead of label values.

        Returns:
            uint8 array of the mask's shape.
        """
        lut = {value: index for index, value in enumerate(self.metadata.label_values)}
        out = np.zeros(self.mask.shape, dtype=np.uint8)
        for value, index in lut.items():
            out[self.mask.array == value] = index
        return out


def tta_axes(tta: Union[bool, Sequence[str], None]) -> Tuple[str, ...]:
    """Normalise the ``tta`` argument: False/None -> no flips, True -> the default, or a list of names."""
    if not tta:
        return ()
    axes = DEFAULT_TTA if tta is True else tuple(str(a) for a in tta)  # type: ignore[union-attr]
    unknown = [a for a in axes if a not in FLIP_AXES]
    if unknown:
        raise LumbarsegError("--tta", f"unknown flip axes {unknown} (choose from {', '.join(FLIP_AXES)})")
    return axes


def _flip_sets(axes: Sequence[str]) -> List[Tuple[int, ...]]:
    """Identity plus every combination of the chosen flips (as numpy axes of an N, C, H, W batch)."""
    sets: List[Tuple[int, ...]] = [()]
    for name in axes:
        sets += [s + (FLIP_AXES[name],) for s in sets]
    return sets


def _resize_stack(stack: np.ndarray, rows: int, cols: int, interpolation: int) -> np.ndarray:
    """Resize every 2D plane of ``stack`` (..., H, W) to (rows, cols)."""
    if stack.shape[-2:] == (rows, cols):
        return stack
    flat = stack.reshape(-1, *stack.shape[-2:])
    out = np.empty((flat.shape[0], rows, cols), dtype=stack.dtype)
    for i, plane in enumerate(flat):  # cv2 takes strided planes as they are (a cropped batch needs no copy)
        out[i] = cv2.resize(plane, (cols, rows), interpolation=interpolation)
    return out.reshape(*stack.shape[:-2], rows, cols)


def _argmax_classes(probs: np.ndarray) -> np.ndarray:
    """``argmax`` over the (few) classes of axis 0 as uint8; ties go to the lower index like numpy's."""
    best = probs[0].copy()
    indices = np.zeros(probs.shape[1:], dtype=np.uint8)
    for index in range(1, probs.shape[0]):
        higher = probs[index] > best
        indices[higher] = index
        np.maximum(best, probs[index], out=best)
    return indices


class Predictor:
    """A model loaded once and applied to many volumes (batch mode uses one).

    Args:
        model: a shipped model's name (`accurate`, the default, or `fast`) or an ONNX file.
        runtime: `onnxruntime`, `torch` or `eddl`.
        device: `cpu`, `cuda`, `cuda:N` or (with `runtime="eddl"`) `fpga`.
        tta: test-time flips: False, True (anterior-posterior mirror) or names from `("ap", "si")`.
        postprocess: True (per-class defaults), False (raw argmax) or `{class name: ComponentRule}`.
        batch_size: slices per inference batch (>= 1).
        threads: CPU threads of the runtime (None: its default).

    Raises:
        LumbarsegError: an unknown model or runtime, a device the runtime lacks, or flips the model was not
            trained with.
    """

    def __init__(self, model: Optional[PathLike] = None, runtime: str = "onnxruntime", device: str = "cpu",
                 tta: Union[bool, Sequence[str]] = False, postprocess: Union[bool, Mapping[str, ComponentRule]] = True,
                 batch_size: int = 2, threads: Optional[int] = None) -> None:
        self.model_path = resolve_model(model)
        self.metadata, self.runtime = load_model(runtime, self.model_path, device, threads)  # errors name the file
        self.runtime_name = runtime
        self.tta = tta_axes(tta)
        untrained = [FLIP_AUGMENTATIONS[a] for a in self.tta
                     if FLIP_AUGMENTATIONS[a] not in self.metadata.training_data.get("flips", [])]
        if untrained:
            raise LumbarsegError("--tta", f"{self.model_path.name} was not trained with {', '.join(untrained)}: its "
                                          "flipped slices would show anatomy it never saw (leave out --tta)")
        self.postprocess = postprocess
        if batch_size < 1:
            raise LumbarsegError("--batch-size", f"must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def read(self, source: Union[PathLike, Case], spacing: Optional[Sequence[Optional[float]]] = None) -> Volume:
        """Read an input volume the way the model needs it.

        Args:
            source: a path of any supported format, or a `Case`.
            spacing: (slice, row, col) voxel size in mm for inputs without one (PNG slices); without it PNG slices
                take the model's in-plane spacing, and a slice spacing of None the model's training `slice_spacing`
                (else 1 mm).

        Returns:
            The `Volume`, with its affine (mm).
        """
        slice_mm = float(self.metadata.training_data.get("slice_spacing", 1.0))
        if spacing is not None and spacing[0] is None:
            spacing = (slice_mm, *spacing[1:])
        volume = source.read(spacing) if isinstance(source, Case) else read_volume(source, spacing=spacing)
        if volume.header.geometry == "unknown" and spacing is None:
            affine = affine_from_spacing((slice_mm, *self.metadata.spacing), CANONICAL)  # type: ignore[arg-type]
            volume = Volume(volume.array, affine, volume.source, replace(volume.header, spacing_assumed=True))
        return volume

    def __call__(self, image: Union[Volume, Case, PathLike], probabilities: bool = False,
                 spacing: Optional[Sequence[float]] = None, progress: Optional[Any] = None) -> Prediction:
        """Segment one volume.

        Args:
            image: a `Volume`, or a path or `Case` to read first (see `read`).
            probabilities: also return the class probabilities, float32 (C, *mask.shape).
            spacing: (slice, row, col) mm for an image read from a path without geometry (see `read`).
            progress: an object with `update(n)` called after each batch of slices (e.g. a tqdm bar).

        Returns:
            The `Prediction` in the input's grid and geometry.
        """
        volume = image if isinstance(image, Volume) else self.read(image, spacing)
        meta = self.metadata
        canonical, undo = reorient(volume, meta.orientation)
        in_plane = canonical.spacing[1:]
        limits.check_volume((canonical.shape[0], *self._resampled_size(canonical.shape[1:], in_plane)),
                            volume.source or "input", f"slices of {in_plane[0]:g} x {in_plane[1]:g} mm pixels "
                            f"resampled to the model's {meta.spacing[0]:g} x {meta.spacing[1]:g} mm", slice_axes=(1, 2))
        data = normalize(canonical.array, meta.normalization)
        # class indices (S, rows, cols) and, when asked for, probabilities (C, S, rows, cols), canonical grid
        indices, probs = self._infer_volume(data, canonical.spacing, progress, probabilities)
        if self.postprocess:
            rules = self.postprocess if isinstance(self.postprocess, Mapping) else None
            indices[no_signal(canonical.array, canonical.spacing, indices > 0)] = 0
            indices = postprocess(indices, meta.classes, rules, canonical.spacing)
        values = np.asarray(meta.label_values)
        dtype = np.uint8 if values.max() <= 255 and values.min() >= 0 else np.int16
        mask = values.astype(dtype)[indices]
        mask_volume = Volume(np.ascontiguousarray(undo.undo(mask)), volume.affine, volume.source, volume.header)
        prob_out = None
        if probs is not None:
            prob_out = np.ascontiguousarray(np.moveaxis(undo.undo(np.moveaxis(probs, 0, -1)), -1, 0))
        info = {"model": str(self.model_path), "runtime": self.runtime_name, "tta": list(self.tta),
                "postprocess": bool(self.postprocess), "input_orientation": volume.orientation,
                "input_spacing": [round(s, 6) for s in volume.spacing],
                "geometry": volume.header.geometry}
        return Prediction(mask_volume, meta, volume, prob_out, info)

    def _infer_volume(self, data: np.ndarray, spacing: Sequence[float], progress: Optional[Any],
                      probabilities: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Class indices (S, H, W) uint8 for normalised canonical slices ``data`` (S, H, W) of ``spacing``
        (slice, row, col), and their probabilities (C, S, H, W) when ``probabilities``. Each batch is resampled back
        and reduced to indices at once, so without probabilities no (C, S, H, W) array is ever held. A 2.5D model's
        channels are each slice's neighbours at its ``slice_offsets`` (:mod:`~lumbarseg.inference.context`)."""
        meta = self.metadata
        slices, rows, cols = data.shape
        target_rows, target_cols = self._resampled_size((rows, cols), spacing[1:])
        resized = _resize_stack(data, target_rows, target_cols, cv2.INTER_LINEAR)
        table = neighbours(slices, spacing[0], meta.slice_offsets) if meta.spec.in_channels > 1 else None
        divisor = meta.spec.divisor
        pad_rows, pad_cols = (-target_rows) % divisor, (-target_cols) % divisor
        indices = np.empty((slices, rows, cols), dtype=np.uint8)
        out = np.empty((len(meta.classes), slices, rows, cols), dtype=np.float32) if probabilities else None
        for start in range(0, slices, self.batch_size):
            stop = min(start + self.batch_size, slices)
            batch = resized[start:stop, None] if table is None else channel_batch(resized, table, start, stop)
            batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_rows), (0, pad_cols)))  # float32 from normalize
            probs = self._infer_batch(batch)[:, :, :target_rows, :target_cols]  # (n, C, h, w)
            for i, slice_probs in enumerate(probs):
                full = _resize_stack(slice_probs, rows, cols, cv2.INTER_LINEAR)  # (C, rows, cols)
                indices[start + i] = _argmax_classes(full)
                if out is not None:
                    out[:, start + i] = full
            if progress is not None:
                progress.update(len(batch))
        return indices, out

    def _resampled_size(self, size: Sequence[int], spacing: Sequence[float]) -> Tuple[int, int]:
        """(rows, cols) of a slice of ``size`` pixels of ``spacing`` mm resampled to the model's spacing."""
        model = self.metadata.spacing
        return tuple(max(1, int(round(n * s / m))) for n, s, m in zip(size, spacing, model))  # type: ignore[return-value]

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        flips = _flip_sets(self.tta)
        total = None
        for axes in flips:
            x = np.flip(batch, axis=axes) if axes else batch
            probs = self.runtime(x)
            probs = np.flip(probs, axis=axes) if axes else probs
            total = probs if total is None else total + probs
        return total / len(flips) if len(flips) > 1 else total  # type: ignore[operator, return-value]


def predict(input: Union[PathLike, Volume, Case], model: Optional[PathLike] = None, runtime: str = "onnxruntime",
            device: str = "cpu", tta: Union[bool, Sequence[str]] = False,
            postprocess: Union[bool, Mapping[str, ComponentRule]] = True, batch_size: int = 2,
            probabilities: bool = False, spacing: Optional[Sequence[float]] = None,
            threads: Optional[int] = None) -> Prediction:
    """Segment one volume: the mask in the input's own grid and geometry.

    The one-call form of `Predictor`, which `lumbarseg predict` and `lumbarseg.predict(...)` both use. Many
    cases at once, with their outputs written: `lumbarseg.inference.batch.predict_folder`.

    Args:
        input: a volume file (NIfTI, MetaImage), a DICOM series or PNG slice folder, a `Case`, or a `Volume`.
        model: a shipped model's name (`accurate`, the default, or `fast`) or an ONNX file.
        runtime: `onnxruntime`, `torch` or `eddl`.
        device: `cpu`, `cuda`, `cuda:N` or (with `runtime="eddl"`) `fpga`.
        tta: test-time flips: False, True (anterior-posterior mirror) or names from `("ap", "si")`; refused for
            a model not trained with the same flips.
        postprocess: True (the per-class defaults of `lumbarseg.inference.postprocess`), False (raw argmax),
            or `{class name: ComponentRule}`.
        batch_size: slices per inference batch.
        probabilities: also return the class probabilities.
        spacing: (slice, row, col) voxel size in mm, for inputs without one: PNG folders, and NIfTI files whose
            voxel sizes are zero, negative or NaN (refused without it).
        threads: CPU threads of the runtime (None: its default).

    Returns:
        The `Prediction`: the mask (label values, the input's affine and header), the model's metadata, the
            input volume, and the probabilities when asked for.

    Raises:
        LumbarsegError: a bad input or model, in one line naming the file; sizes over `lumbarseg.io.limits`
            are refused before anything is allocated.
    """
    predictor = Predictor(model, runtime, device, tta, postprocess, batch_size, threads)
    return predictor(input, probabilities=probabilities, spacing=spacing)

