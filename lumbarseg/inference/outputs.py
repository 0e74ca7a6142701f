"""What a prediction leaves on disk: the mask in the input's format, probabilities, overlay, measurements.

Every file is written atomically. The mask keeps the input's grid and geometry: NIfTI keeps the
input's header and affine, MetaImage its geometry, a DICOM series becomes NIfTI with the series'
geometry, a PNG stack becomes a folder of label PNGs named like the input slices.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from lumbarseg.inference.predict import Prediction
from lumbarseg.io.atomic import Staging, atomic_path, write_text
from lumbarseg.io.readers import write_png_stack, write_volume
from lumbarseg.io.slices import write_png
from lumbarseg.io.volume import reorient

PathLike = Union[str, Path]
MASK_SUFFIXES = (".nii", ".nii.gz", ".mha", ".dcm")  # an output path ending so is a mask file, else a folder
MEASUREMENT_FIELDS = ["case", "class", "label", "voxels", "volume_ml", "slices", "slice_coverage",
                      "first_slice", "last_slice"]


def mask_suffix(input_format: str, input_path: PathLike, dicom: bool = False) -> str:
    """The mask's file suffix for an input format ('' = a folder of PNG slices); ``.dcm`` for DICOM outputs."""
    if dicom:
        return ".dcm"
    if input_format == "png":
        return ""
    if input_format == "metaimage":
        return ".mha"
    return ".nii" if str(input_path).lower().endswith(".nii") else ".nii.gz"


def write_mask(prediction: Prediction, path: PathLike, overwrite: bool = False) -> None:
    """Write the mask volume; a path without a volume suffix becomes a PNG slice folder."""
    path = Path(path)
    mask = prediction.mask
    if prediction.image.header.format == "png" and not path.name.lower().endswith(MASK_SUFFIXES):
        names = prediction.image.header.files
        write_png_stack(mask, path, names=names, overwrite=overwrite)
        return
    if mask.header.format != "nifti":  # DICOM/MetaImage/PNG header extras do not belong in a NIfTI
        mask = type(mask)(mask.array, mask.affine, mask.source)
    write_volume(mask, path)


def write_probabilities(prediction: Prediction, path: PathLike) -> None:
    """Probabilities as a 4D float32 NIfTI (x, y, z, class) on the input's affine."""
    import nibabel as nib

    if prediction.probabilities is None:
        raise ValueError("the prediction was made without probabilities")
    data = np.moveaxis(prediction.probabilities, 0, -1).astype(np.float32)
    image = nib.Nifti1Image(data, prediction.mask.affine)
    image.header["descrip"] = ("lumbarseg p: " + ",".join(prediction.classes)).encode()[:79]
    image.header.set_intent("vector", (), name="classes")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def measure(prediction: Prediction, case: str = "") -> List[Dict[str, Any]]:
    """Per foreground class: voxels, volume in mL, and sagittal slice coverage (canonical slice indices)."""
    canonical, _ = reorient(prediction.mask, prediction.metadata.orientation)
    voxel_ml = float(np.prod(prediction.mask.spacing)) / 1000.0
    slices_total = canonical.shape[0]
    rows = []
    for index, (name, value) in enumerate(zip(prediction.classes, prediction.metadata.label_values)):
        if index == 0:
            continue
        binary = canonical.array == value
        voxels = int(binary.sum())
        present = np.flatnonzero(binary.reshape(slices_total, -1).any(axis=1))
        rows.append({
            "case": case, "class": name, "label": int(value), "voxels": voxels,
            "volume_ml": round(voxels * voxel_ml, 4), "slices": int(present.size),
            "slice_coverage": round(present.size / slices_total, 4),
            "first_slice": int(present[0]) if present.size else None,
            "last_slice": int(present[-1]) if present.size else None,
        })
    return rows


def case_outputs(mask_path: PathLike, stem: PathLike, probabilities: bool = False,
                 overlay: bool = False, dicom: bool = False, measure: bool = False) -> Dict[str, Path]:
    """The files one case's prediction writes: mask, and ``STEM_probabilities.nii.gz``/``STEM_overlay.png``.
    DICOM outputs (``dicom``): the SEG at the mask's path (``.dcm``), ``STEM_sr.dcm``, and the figures as
    Secondary Captures ``STEM_overlay.dcm`` (``overlay``) and ``STEM_spine.dcm`` (``measure``)."""
    stem = Path(stem)
    extra = (lambda suffix: stem.with_name(stem.name + suffix))  # noqa: E731
    if dicom:
        paths = {"seg": Path(mask_path), "sr": extra("_sr.dcm")}
        if overlay:
            paths["overlay"] = extra("_overlay.dcm")
        if measure:
            paths["spine"] = extra("_spine.dcm")
    else:
        paths = {"mask": Path(mask_path)}
        if overlay:
            paths["overlay"] = extra("_overlay.png")
    if probabilities:
        paths["probabilities"] = extra("_probabilities.nii.gz")
    return paths


def measurement_paths(stem: PathLike) -> List[Path]:
    """``STEM.json`` and ``STEM.csv``."""
    stem = Path(stem)
    return [stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".csv")]


def write_case(prediction: Prediction, paths: Dict[str, Path], staging: Staging, title: str = "",
               objects: Any = None) -> None:
    """Write a case's outputs (:func:`case_outputs`) through ``staging``: they appear together or not at all.
    ``objects`` are the case's DICOM objects (:func:`lumbarseg.inference.dicom.build_case`) for DICOM outputs."""
    if objects is not None:
        from lumbarseg.inference.dicom import write_case as write_dicom

        write_dicom(objects, {kind: staging.path(paths[kind]) for kind, _ in objects.ordered()})
    else:
        write_mask(prediction, staging.path(paths["mask"]), overwrite=True)
        if "overlay" in paths:
            write_overlay(prediction, staging.path(paths["overlay"]), title=title)
    if "probabilities" in paths:
        write_probabilities(prediction, staging.path(paths["probabilities"]))


def write_measurements(rows: Sequence[Dict[str, Any]], stem: PathLike, info: Optional[Dict[str, Any]] = None,
                       staging: Optional[Staging] = None) -> None:
    """``STEM.json`` ({case: {class: measures}} plus run info) and ``STEM.csv`` (one row per case and class);
    through ``staging`` when given (committed with the other outputs), else each atomically."""
    json_path, csv_path = measurement_paths(stem)
    if staging is not None:
        json_path, csv_path = staging.path(json_path), staging.path(csv_path)
    by_case: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["class"]] = {k: v for k, v in row.items() if k not in ("case", "class")}
    document = {"units": {"volume_ml": "mL", "slice_coverage": "fraction of sagittal slices"},
                "cases": by_case, **({"info": info} if info else {})}
    write_text(json_path, json.dumps(document, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MEASUREMENT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in MEASUREMENT_FIELDS})
    write_text(csv_path, buffer.getvalue())


def write_overlay(prediction: Prediction, path: PathLike, title: str = "") -> None:
    """The overlay mosaic (:meth:`Prediction.overlay`) as a PNG."""
    write_png(path, prediction.overlay(title))
