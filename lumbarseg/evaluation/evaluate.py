"""Evaluate predicted masks against ground truth: folders of cases matched by name, or a dataset split.

Both forms score 3D volumes per case (a dataset's slices are grouped back into one volume per
patient), so distances are in mm in 3D, and write the report of :mod:`lumbarseg.evaluation.report`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.evaluation.metrics import SegmentationMetrics
from lumbarseg.evaluation.report import write_report
from lumbarseg.inference.cases import Case, find_cases
from lumbarseg.inference.overlay import comparison_png
from lumbarseg.io.atomic import atomic_dir
from lumbarseg.io.paths import check_not_input, folders_of
from lumbarseg.io.readers import read_png_stack
from lumbarseg.io.volume import CANONICAL, Volume, reorient
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]


def _check_same_grid(pred: Volume, gt: Volume, pred_source: str, gt_source: str) -> None:
    if pred.shape != gt.shape:
        raise LumbarsegError(pred_source, f"grid {pred.shape} differs from the ground truth {gt_source} {gt.shape}")
    known = "unknown" not in (pred.header.get("geometry"), gt.header.get("geometry"))
    if known and not np.allclose(pred.affine, gt.affine, atol=1e-3):
        raise LumbarsegError(pred_source, f"geometry (affine) differs from the ground truth {gt_source}")


def _remap(indices: np.ndarray, from_classes: Sequence[str], to_classes: Sequence[str], source: str) -> np.ndarray:
    """Class indices of one class list expressed in another, matched by class name."""
    if list(from_classes) == list(to_classes):
        return indices
    missing = [c for c in to_classes if c not in from_classes]
    if missing:
        raise LumbarsegError(source, f"classes {missing} of the ground truth are not predicted")
    lut = np.array([list(to_classes).index(c) if c in to_classes else 0 for c in from_classes], dtype=np.uint8)
    return lut[indices]


def _pair_cases(pred: Path, gt: Path) -> List[Tuple[Case, Case]]:
    pred_cases, gt_cases = find_cases(pred), find_cases(gt)
    if len(pred_cases) == 1 and len(gt_cases) == 1:  # one case each: pair them whatever their names
        return [(pred_cases[0], gt_cases[0])]
    by_name = {c.name: c for c in pred_cases}
    missing = [c.name for c in gt_cases if c.name not in by_name]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise LumbarsegError(pred, f"no prediction for {len(missing)} ground-truth case(s): {shown}")
    return [(by_name[c.name], c) for c in gt_cases]


def _canonical(volume: Volume, array: np.ndarray) -> np.ndarray:
    return reorient(volume.with_array(array), CANONICAL)[0].array


def evaluate_folders(pred: PathLike, gt: PathLike, out_dir: PathLike, label_map: Union[str, LabelMap] = "spider-png",
                     pred_label_map: Union[str, LabelMap, None] = None, images: Optional[PathLike] = None,
                     spacing: Optional[Sequence[float]] = None, overwrite: bool = False,
                     progress: bool = True) -> Dict[str, Any]:
    """Score predicted masks against ground truth (files, or folders matched by case name); writes the report.

    ``label_map`` maps the ground truth's raw values to classes, ``pred_label_map`` the prediction's
    (default: the same). ``images`` (matched by name) puts the overlays on the images.
    ``spacing`` (slice, row, col mm) is for PNG stacks, which carry no geometry.
    """
    from tqdm import tqdm

    check_not_input(out_dir, [("--pred", pred), ("--gt", gt), ("--images", images)])
    gt_map = label_map if isinstance(label_map, LabelMap) else LabelMap.load(label_map)
    pred_map = gt_map if pred_label_map is None else (
        pred_label_map if isinstance(pred_label_map, LabelMap) else LabelMap.load(pred_label_map))
    pairs = _pair_cases(Path(pred), Path(gt))
    image_cases = {c.name: c for c in find_cases(images)} if images is not None else {}
    metrics = SegmentationMetrics(gt_map.classes)
    pictures: Dict[str, str] = {}
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for pred_case, gt_case in tqdm(pairs, desc="evaluate", unit="case", disable=not progress or None,
                                           file=sys.stderr):
                p_vol, g_vol = pred_case.read(spacing), gt_case.read(spacing)
                _check_same_grid(p_vol, g_vol, pred_case.source, gt_case.source)
                p_idx = _remap(pred_map.to_index(p_vol.array, pred_case.source), pred_map.classes, gt_map.classes,
                               pred_case.source)
                g_idx = gt_map.to_index(g_vol.array, gt_case.source)
                metrics(p_idx, g_idx, g_vol.spacing, gt_case.name)
                image = None
                if gt_case.name in image_cases:
                    image_vol = image_cases[gt_case.name].read(spacing)
                    _check_same_grid(image_vol, g_vol, image_cases[gt_case.name].source, gt_case.source)
                    image = _canonical(g_vol, image_vol.array)
                picture = f"cases/{gt_case.name}.png"
                truth = reorient(g_vol.with_array(g_idx), CANONICAL)[0]
                comparison_png(tmp / picture, image, truth.array, _canonical(g_vol, p_idx), gt_map,
                               truth.spacing[1:], title=gt_case.name)
                pictures[gt_case.name] = picture
            summary = write_report(tmp, metrics.rows, gt_map.foreground, metrics.case_scores(), pictures,
                                   notes=[f"predictions: {pred}", f"ground truth: {gt}"])
    except FileExistsError:
        raise LumbarsegError(out_dir, "report folder exists (use --overwrite)") from None
    return summary


def _patient_stacks(dataset: Any, split: str) -> Dict[str, List[Tuple[int, Path, Path]]]:
    """``{patient: [(slice order, image, mask), ...]}`` in slice order."""
    stacks: Dict[str, List[Tuple[int, Path, Path]]] = {}
    for index, (image, mask) in zip(dataset.split_indices(split), dataset.pairs(split)):
        order = dataset.slice_index(index)
        stacks.setdefault(dataset.patient(index), []).append((order if order is not None else index, image, mask))
    return {p: sorted(items, key=lambda t: t[0]) for p, items in sorted(stacks.items())}


def evaluate_dataset(dataset_path: PathLike, split: str, out_dir: PathLike, model: Optional[PathLike] = None,
                     runtime: str = "onnxruntime", device: str = "cpu", tta: Union[bool, Sequence[str]] = False,
                     postprocess: bool = True, overwrite: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Predict every patient of a dataset split (slices grouped into one volume each) and score it."""
    from tqdm import tqdm

    from lumbarseg.data.deephealth_yaml import load_dataset
    from lumbarseg.inference.predict import Predictor

    dataset = load_dataset(dataset_path)
    classes = dataset.classes
    predictor = Predictor(model, runtime, device, tta, postprocess)
    files = [p for i in range(len(dataset.samples)) for p in (*dataset.image_paths(i), dataset.label_path(i))]
    check_not_input(out_dir, [("--dataset", dataset_path), ("--model", predictor.model_path)]
                    + [("dataset", folder) for folder in folders_of(files)])
    in_plane = dataset.spacing or tuple(predictor.metadata.spacing)
    spacing = (float(dataset.meta.get("slice_spacing") or 1.0), *in_plane)
    stacks = _patient_stacks(dataset, split)
    if not stacks:
        raise LumbarsegError(dataset_path, f"split {split!r} is empty")
    metrics = SegmentationMetrics(classes)
    pictures: Dict[str, str] = {}
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for patient, items in tqdm(stacks.items(), desc=f"evaluate {split}", unit="patient",
                                       disable=not progress or None, file=sys.stderr):
                image = read_png_stack([i for _, i, _ in items], spacing=spacing, source=f"{dataset_path}:{patient}")
                truth = read_png_stack([m for _, _, m in items], spacing=spacing, source=f"{dataset_path}:{patient}")
                g_idx = dataset.label_map.to_index(truth.array, f"{dataset_path}: patient {patient} masks")
                prediction = predictor(image)
                p_idx = _remap(prediction.class_indices(), prediction.classes, classes, str(predictor.model_path))
                metrics(p_idx, g_idx, image.spacing, patient)
                picture = f"cases/{patient}.png"
                comparison_png(tmp / picture, image.array, g_idx, p_idx, dataset.label_map, spacing[1:], title=patient)
                pictures[patient] = picture
            notes = [f"dataset: {dataset_path} (split {split})", f"model: {predictor.model_path}",
                     f"spacing (slice, row, col): {spacing} mm"]
            summary = write_report(tmp, metrics.rows, classes[1:], metrics.case_scores(), pictures, notes=notes)
    except FileExistsError:
        raise LumbarsegError(out_dir, "report folder exists (use --overwrite)") from None
    return summary
