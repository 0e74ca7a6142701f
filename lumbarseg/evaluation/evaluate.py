"""Evaluate predicted masks against ground truth: folders of cases matched by name, or a dataset split.

Both forms score 3D volumes per case (a dataset's slices are grouped back into one volume per
patient), so distances are in mm in 3D, and write the report of :mod:`lumbarseg.evaluation.report`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from lumbarseg.analysis.level_evaluation import LevelEvaluation, has_spider_instances
from lumbarseg.errors import LumbarsegError
from lumbarseg.evaluation.metrics import SegmentationMetrics
from lumbarseg.evaluation.report import write_report
from lumbarseg.io.atomic import atomic_dir
from lumbarseg.io.cases import Case, find_cases
from lumbarseg.io.overlay import comparison_png
from lumbarseg.io.paths import check_not_input, folders_of
from lumbarseg.io.readers import read_png_stack
from lumbarseg.io.volume import CANONICAL, Volume, reorient
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]


def _check_same_grid(pred: Volume, gt: Volume, pred_source: str, gt_source: str) -> None:
    if pred.shape != gt.shape:
        raise LumbarsegError(pred_source, f"grid {pred.shape} differs from the ground truth {gt_source} {gt.shape}")
    known = "unknown" not in (pred.header.geometry, gt.header.geometry)
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
    explicit = [len(cases) == 1 and cases[0].path == path for cases, path in ((pred_cases, pred), (gt_cases, gt))]
    if all(explicit):  # two volumes named on the command line: pair them whatever their names
        return [(pred_cases[0], gt_cases[0])]
    by_name = {c.name: c for c in pred_cases}
    missing = [c.name for c in gt_cases if c.name not in by_name]
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise LumbarsegError(pred, f"no prediction for {len(missing)} ground-truth case(s): {shown}")
    return [(by_name[c.name], c) for c in gt_cases]


Candidates = List[Tuple[str, LabelMap]]


def _to_index(raw: np.ndarray, candidates: Candidates, source: str, flag: str) -> Tuple[np.ndarray, LabelMap]:
    """Class indices by the first label map that knows every value; else one error naming the flag to add."""
    error: Optional[LumbarsegError] = None
    for _, label_map in candidates:
        try:
            return label_map.to_index(raw, source), label_map
        except LumbarsegError as exc:
            error = exc
    tried = ", ".join(name for name, _ in candidates)
    raise LumbarsegError(source, f"{error.problem if error else 'no label map'} (tried {tried}; "
                                 f"pass the masks' label map with {flag} NAME|FILE.yml)")


def _label_maps(label_map: Union[str, LabelMap, None], pred_label_map: Union[str, LabelMap, None],
                model: Optional[PathLike]) -> Tuple[Candidates, Optional[Candidates]]:
    """Label maps to try for the ground truth and for the predictions (None: class indices, then the truth's map).

    Defaults: the ground truth is ``spider-png`` or class indices; the predictions follow ``model``'s
    metadata when given, else class indices (what ``lumbarseg predict`` writes), else the truth's map.
    """
    def load(value: Union[str, LabelMap]) -> LabelMap:
        return value if isinstance(value, LabelMap) else LabelMap.load(value)

    if label_map is None:
        spider = LabelMap.load("spider-png")
        gt = [("spider-png", spider), ("class indices 0-3", LabelMap.from_classes(spider.classes))]
    else:
        gt = [(f"--label-map {label_map}" if isinstance(label_map, str) else "--label-map", load(label_map))]
    if pred_label_map is not None:
        shown = f"--pred-label-map {pred_label_map}" if isinstance(pred_label_map, str) else "--pred-label-map"
        return gt, [(shown, load(pred_label_map))]
    if model is not None:
        from lumbarseg.model import metadata
        from lumbarseg.model.registry import resolve_model

        return gt, [(f"the label values of {model}", metadata.read(resolve_model(model)).label_map)]
    return gt, None


def _canonical(volume: Volume, array: np.ndarray) -> np.ndarray:
    return reorient(volume.with_array(array), CANONICAL)[0].array


def evaluate_folders(pred: PathLike, gt: PathLike, out_dir: PathLike, label_map: Union[str, LabelMap, None] = None,
                     pred_label_map: Union[str, LabelMap, None] = None, images: Optional[PathLike] = None,
                     spacing: Optional[Sequence[float]] = None, overwrite: bool = False,
                     progress: bool = True, model: Optional[PathLike] = None) -> Dict[str, Any]:
    """Score predicted masks against ground truth and write the report: `lumbarseg evaluate --pred --gt`.

    Per case and class: Dice, IoU, HD95 and ASSD (mm), volumes (mL); per level when both sides split into
    levels. Two files are paired whatever their names; folders by case name.

    Args:
        pred: a predicted mask file, or a folder of them.
        gt: the ground-truth mask file, or a folder of them (every case needs a prediction).
        out_dir: the report folder (`metrics.csv`, `summary.json`, `report.md`, pictures).
        label_map: the ground truth's raw values -> classes (default: `spider-png` or class indices, whichever
            fits).
        pred_label_map: the predictions' (default: `model`'s label values when given, else class indices, else
            the ground truth's map).
        images: the MRI volumes (matched by name) to draw the comparisons on.
        spacing: (slice, row, col) voxel size in mm for PNG stacks, which carry none.
        overwrite: replace an existing report folder.
        progress: show a progress bar on stderr.
        model: the ONNX model that made the predictions (its label values).

    Returns:
        Per class, per metric (`dice`, `iou`, `hd95`, `assd`, volumes): `mean`, `median`, `std`, `min`, `max`,
            `n`, `n_nan`, `n_inf` over the cases (what `summary.json` holds under `summary`).
    """
    from tqdm import tqdm

    check_not_input(out_dir, [("--pred", pred), ("--gt", gt), ("--images", images)])
    gt_maps, pred_maps = _label_maps(label_map, pred_label_map, model)
    gt_map = gt_maps[0][1]
    pairs = _pair_cases(Path(pred), Path(gt))
    image_cases = {c.name: c for c in find_cases(images)} if images is not None else {}
    metrics = SegmentationMetrics(gt_map.classes)
    levels = LevelEvaluation(gt_map.classes, has_spider_instances(gt_map))
    pictures: Dict[str, str] = {}
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for pred_case, gt_case in tqdm(pairs, desc="evaluate", unit="case", disable=not progress or None,
                                           file=sys.stderr):
                p_vol, g_vol = pred_case.read(spacing), gt_case.read(spacing)
                _check_same_grid(p_vol, g_vol, pred_case.source, gt_case.source)
                g_idx, case_map = _to_index(g_vol.array, gt_maps, gt_case.source, "--label-map")
                tried = pred_maps or [("class indices", LabelMap.from_classes(case_map.classes)),
                                      ("the ground truth's label map", case_map)]
                p_idx, pred_map = _to_index(p_vol.array, tried, pred_case.source, "--pred-label-map")
                p_idx = _remap(p_idx, pred_map.classes, gt_map.classes, pred_case.source)
                metrics(p_idx, g_idx, g_vol.spacing, gt_case.name)
                levels.add(gt_case.name, g_vol.with_array(p_idx), g_vol.with_array(g_idx), g_vol.array)
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
            levels.write(tmp)
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
    """Predict every patient of a dataset split and score it: `lumbarseg evaluate --dataset --split`.

    Each patient's slices are stacked back into one volume (with the dataset's spacing) before predicting.

    Args:
        dataset_path: a DeepHealth Dataset YAML built by `lumbarseg dataset`.
        split: the split to score (`training`, `validation`, `test`, ...).
        out_dir: the report folder.
        model: a shipped model's name or an ONNX file (default: `accurate`).
        runtime: `onnxruntime`, `torch` or `eddl`.
        device: `cpu`, `cuda`, `cuda:N` or `fpga`.
        tta: test-time flips, as for `predict`.
        postprocess: post-process the predictions.
        overwrite: replace an existing report folder.
        progress: show a progress bar on stderr.

    Returns:
        The per-class summary, as `evaluate_folders` returns it.
    """
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
    levels = LevelEvaluation(classes)
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
                levels.add(patient, image.with_array(p_idx), image.with_array(g_idx))
                picture = f"cases/{patient}.png"
                comparison_png(tmp / picture, image.array, g_idx, p_idx, dataset.label_map, spacing[1:], title=patient)
                pictures[patient] = picture
            notes = [f"dataset: {dataset_path} (split {split})", f"model: {predictor.model_path}",
                     f"spacing (slice, row, col): {spacing} mm"]
            summary = write_report(tmp, metrics.rows, classes[1:], metrics.case_scores(), pictures, notes=notes)
            levels.write(tmp)
    except FileExistsError:
        raise LumbarsegError(out_dir, "report folder exists (use --overwrite)") from None
    return summary
