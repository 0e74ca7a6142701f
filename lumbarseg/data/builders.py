"""Build a DeepHealth Dataset from PNG slices or from image/label volumes.

Output: ``OUT.yml`` plus a folder ``OUT/`` beside it holding ``images/`` (8-bit grey PNG,
``round(255 * normalize(volume))`` with the percentiles taken over each patient's or volume's
slices together) and ``masks/`` (8-bit class-index PNG: 0 background, then the label map's
classes). Both appear whole or not at all (built under temporary names, then renamed). Inputs
are never modified, and an existing output is replaced only with ``overwrite``.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from lumbarseg import __version__
from lumbarseg.data.deephealth_yaml import (
    FEATURE_PATIENT,
    FEATURE_SLICE,
    FEATURE_SOURCE,
    META_VERSION,
    DeepHealthDataset,
    Sample,
    dump_dataset,
)
from lumbarseg.data.patterns import DEFAULT_SLICE_PATTERN, DEFAULT_VOLUME_PATTERN
from lumbarseg.data.split import SplitSpec, natural_key, split_patients
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_dir, atomic_path
from lumbarseg.io.intensity import DEFAULT_NORMALIZATION, normalize
from lumbarseg.io.paths import check_not_input
from lumbarseg.io.readers import read_volume, volume_stem
from lumbarseg.io.slices import read_grey, write_png
from lumbarseg.io.volume import CANONICAL, Volume, reorient
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]

SLICE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".pgm")
FEATURES = [FEATURE_PATIENT, FEATURE_SLICE, FEATURE_SOURCE]
IMAGE_DIVISOR = 255  # stored 8-bit images = round(255 * normalised intensity)
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class SlicePair:
    """An image slice and its mask, with the patient id and slice number read from the name."""

    patient: str
    slice: int
    name: str
    image: Path
    mask: Path


# --- shared output handling -------------------------------------------------------------------------


def output_folder(yml: PathLike) -> Path:
    """The folder written beside ``OUT.yml``: ``OUT/`` with ``images/`` and ``masks/``."""
    yml = Path(yml)
    return yml.parent / yml.stem


def _check_output(yml: Path, inputs: Sequence[Path], overwrite: bool) -> Path:
    if yml.suffix.lower() not in (".yml", ".yaml"):
        raise LumbarsegError(yml, "output must be a .yml or .yaml file")
    folder = output_folder(yml)
    if not overwrite:
        for existing in (yml, folder):
            if existing.exists():
                raise LumbarsegError(existing, "already exists (use --overwrite to replace it)")
    for output in (yml, folder):
        check_not_input(output, [("", source) for source in inputs])
    return folder


@contextmanager
def _staged_output(yml: Path, folder: Path, overwrite: bool) -> Iterator[Tuple[Path, Path]]:
    """Yield (temporary data folder, temporary YAML path); both get their final names on success."""
    with atomic_path(yml, overwrite) as tmp_yml, atomic_dir(folder, overwrite=overwrite) as tmp_dir:
        (tmp_dir / "images").mkdir()
        (tmp_dir / "masks").mkdir()
        yield tmp_dir, tmp_yml
    # the folder is renamed first, the YAML (what users open) last


def _to_uint8(normalised: np.ndarray) -> np.ndarray:
    return np.round(normalised * IMAGE_DIVISOR).astype(np.uint8)


def _compile_pattern(pattern: str) -> re.Pattern:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise LumbarsegError("--pattern", f"invalid regular expression {pattern!r} ({exc})") from None
    if "patient" not in compiled.groupindex:
        raise LumbarsegError("--pattern", f"{pattern!r} needs a named group (?P<patient>...)")
    return compiled


def _base_meta(label_map: LabelMap, normalization: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "version": META_VERSION,
        "lumbarseg_version": __version__,
        "classes": list(label_map.classes),
        "colors": {name: list(rgb) for name, rgb in zip(label_map.classes, label_map.colors)},
        "label_map": label_map.to_mapping(),
        "orientation": CANONICAL,
        "normalization": dict(normalization),
        "image_divisor": IMAGE_DIVISOR,
    }


def _split_indices(samples_patients: List[str], spec: SplitSpec,
                   by_split: Dict[str, List[str]]) -> Tuple[Dict[str, List[int]], Dict[str, Any]]:
    where = {p: name for name, members in by_split.items() for p in members}
    split = {name: [i for i, p in enumerate(samples_patients) if where.get(p) == name] for name in by_split}
    record = {"fractions": [round(f, 6) for f in spec.fractions], "seed": spec.seed,
              "fixed": {k: list(v) for k, v in spec.fixed.items()}, "patients": by_split}
    return split, record


def _finish(yml: Path, tmp_yml: Path, samples: List[Sample], patients: List[str], split_spec: SplitSpec,
            by_split: Dict[str, List[str]], meta: Dict[str, Any], name: Optional[str],
            description: str) -> DeepHealthDataset:
    split, record = _split_indices(patients, split_spec, by_split)
    meta["split"] = record
    dataset = DeepHealthDataset(
        name=name or yml.stem, description=description, root=yml.parent.resolve(), samples=samples,
        split=split, features=list(FEATURES), meta=meta, source=yml,
    )
    tmp_yml.write_text(dump_dataset(dataset), encoding="utf-8")
    return dataset


# --- from slices ------------------------------------------------------------------------------------


def _slice_files(folder: Path, what: str) -> Dict[str, Path]:
    if not folder.is_dir():
        raise LumbarsegError(folder, f"no such {what} folder")
    files = {p.stem: p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")}
    if not files:
        raise LumbarsegError(folder, f"no {what} slices ({', '.join(SLICE_SUFFIXES)})")
    return files


def pair_slices(images_dir: PathLike, masks_dir: PathLike, pattern: str = DEFAULT_SLICE_PATTERN) -> List[SlicePair]:
    """Image and mask slices paired by file name, with patient id and slice number from ``pattern``."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    regex = _compile_pattern(pattern)
    images = _slice_files(images_dir, "image")
    masks = _slice_files(masks_dir, "mask")
    for stem, path in sorted(images.items()):
        if stem not in masks:
            raise LumbarsegError(path, f"no mask with the same name in {masks_dir}")
    for stem, path in sorted(masks.items()):
        if stem not in images:
            raise LumbarsegError(path, f"no image with the same name in {images_dir}")
    found: List[Tuple[str, Optional[int], str]] = []
    for stem in sorted(images, key=natural_key):
        match = regex.search(stem)
        if not match or not match.group("patient"):
            raise LumbarsegError(images[stem], f"file name does not match the pattern {pattern!r}")
        number = match.groupdict().get("slice")
        found.append((match.group("patient"), int(number) if number is not None else None, stem))
    pairs: List[SlicePair] = []
    seen: Dict[Tuple[str, int], str] = {}
    for patient in sorted({p for p, _, _ in found}, key=natural_key):
        members = [(s, stem) for p, s, stem in found if p == patient]
        if any(s is None for s, _ in members):
            members = [(k, stem) for k, (_, stem) in enumerate(members)]  # no slice group: name order
        for number, stem in sorted(members, key=lambda m: (m[0], natural_key(m[1]))):
            if (patient, number) in seen:
                raise LumbarsegError(images[stem], f"same patient {patient} and slice {number} as "
                                                   f"{seen[patient, number]}")
            seen[patient, number] = images[stem].name
            pairs.append(SlicePair(patient, int(number), stem, images[stem], masks[stem]))  # type: ignore[arg-type]
    return pairs


def _parse_spacing(spacing: Optional[Sequence[float]]) -> Tuple[Optional[List[float]], Optional[float]]:
    if spacing is None:
        return None, None
    values = [float(s) for s in spacing]
    if len(values) not in (2, 3) or min(values) <= 0:
        raise LumbarsegError("--spacing", f"need ROW,COL[,SLICE] positive millimetres, got {spacing}")
    return values[:2], (values[2] if len(values) == 3 else None)


def from_slices(images_dir: PathLike, masks_dir: PathLike, output: PathLike, label_map: LabelMap,
                pattern: str = DEFAULT_SLICE_PATTERN, split: SplitSpec = SplitSpec(),
                spacing: Optional[Sequence[float]] = None,
                normalization: Dict[str, Any] = DEFAULT_NORMALIZATION, name: Optional[str] = None,
                overwrite: bool = False, progress: bool = True) -> DeepHealthDataset:
    """Build a DeepHealth Dataset YAML from folders of image and mask slices (PNG) paired by file name.

    Images of one patient are normalised together (as one volume); masks are mapped to class indices with
    `label_map`. The dataset is written beside `output` (`OUT.yml` and the folder `OUT/`), all or nothing.

    Args:
        images_dir: the image slices (8- or 16-bit PNG, grey or RGB with R = G = B).
        masks_dir: the mask slices, with the same file names.
        output: the dataset YAML to write.
        label_map: the masks' raw values -> classes.
        pattern: a regular expression with the group `(?P<patient>...)` and optionally `(?P<slice>...)`
            (default: SPIDER's file names).
        split: the patient split (fractions, seed, fixed patients).
        spacing: (row, col[, between slices]) in mm, if known (PNG slices carry no geometry).
        normalization: the intensity normalisation (default: 0.5th-99.5th percentile per patient).
        name: the dataset's name (default: the YAML's stem).
        overwrite: replace an existing dataset.
        progress: show a progress bar on stderr.

    Returns:
        The dataset as written.
    """
    images_dir, masks_dir, yml = Path(images_dir), Path(masks_dir), Path(output)
    folder = _check_output(yml, [images_dir, masks_dir], overwrite)
    in_plane, between = _parse_spacing(spacing)
    pairs = pair_slices(images_dir, masks_dir, pattern)
    by_split = split_patients([p.patient for p in pairs], split)  # bad split options fail before any work
    meta = _base_meta(label_map, normalization)
    meta.update({"spacing": in_plane, "slice_spacing": between,
                 "source": {"builder": "from-slices", "images": str(images_dir.resolve()),
                            "masks": str(masks_dir.resolve()), "pattern": pattern}})
    samples: List[Sample] = []
    patients: List[str] = []
    with _staged_output(yml, folder, overwrite) as (tmp_dir, tmp_yml), \
            tqdm(total=len(pairs), unit="slice", desc="from-slices", disable=None if progress else True) as bar:
        for patient in sorted({p.patient for p in pairs}, key=natural_key):
            group = [p for p in pairs if p.patient == patient]
            images = [read_grey(p.image) for p in group]
            flat = normalize(np.concatenate([im.ravel() for im in images]), normalization)
            offsets = np.cumsum([0] + [im.size for im in images])
            for k, (pair, image) in enumerate(zip(group, images)):
                raw = read_grey(pair.mask)
                if raw.shape != image.shape:
                    raise LumbarsegError(pair.mask, f"mask size {raw.shape[1]}x{raw.shape[0]} (WxH) differs from "
                                                    f"image {pair.image.name} {image.shape[1]}x{image.shape[0]}")
                mask = label_map.to_index(raw, pair.mask)
                rel_image = f"images/{pair.name}.png"
                rel_mask = f"masks/{pair.name}.png"
                write_png(tmp_dir / rel_image, _to_uint8(flat[offsets[k]:offsets[k + 1]].reshape(image.shape)))
                write_png(tmp_dir / rel_mask, mask)
                samples.append(Sample([f"{folder.name}/{rel_image}"], f"{folder.name}/{rel_mask}",
                                      [patient, pair.slice, pair.image.name]))
                patients.append(patient)
                bar.update(1)
        description = (f"Sagittal MRI slices with class-index masks ({', '.join(label_map.foreground)}), "
                       f"built by lumbarseg {__version__} from {images_dir.name}/ and {masks_dir.name}/.")
        return _finish(yml, tmp_yml, samples, patients, split, by_split, meta, name, description)


# --- from volumes -----------------------------------------------------------------------------------


def _volume_name(path: Path) -> Optional[str]:
    if path.name.startswith("."):
        return None
    if path.is_dir():
        return path.name
    return volume_stem(path.name)  # None e.g. for the .raw beside a .mhd


def _volume_files(folder: Path, what: str) -> Dict[str, Path]:
    if not folder.is_dir():
        raise LumbarsegError(folder, f"no such {what} folder")
    found: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = _volume_name(path)
        if name is None:
            continue
        if name in found:
            raise LumbarsegError(path, f"two {what} volumes named {name!r} ({found[name].name})")
        found[name] = path
    if not found:
        raise LumbarsegError(folder, f"no {what} volumes (.nii, .nii.gz, .mha, .mhd or DICOM series folders)")
    return found


def pair_volumes(images_dir: PathLike, labels_dir: PathLike) -> List[Tuple[str, Path, Path]]:
    """``(name, image, label)`` for volumes with the same name (suffix aside) in both folders."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    images = _volume_files(images_dir, "image")
    labels = _volume_files(labels_dir, "label")
    for name, path in images.items():
        if name not in labels:
            raise LumbarsegError(path, f"no label volume with the same name in {labels_dir}")
    for name, path in labels.items():
        if name not in images:
            raise LumbarsegError(path, f"no image volume with the same name in {images_dir}")
    return [(name, images[name], labels[name]) for name in sorted(images, key=natural_key)]


def _integer_labels(array: np.ndarray, source: Path) -> np.ndarray:
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise LumbarsegError(source, "label volume has non-integer values")
        return array.astype(np.int64)
    return array


def _check_same_grid(image: Volume, label: Volume) -> None:
    if image.shape != label.shape:
        raise LumbarsegError(label.source, f"label grid {label.shape} differs from image {image.source} {image.shape}")
    if not np.allclose(image.affine, label.affine, rtol=1e-5, atol=AFFINE_TOLERANCE_MM):
        raise LumbarsegError(label.source, f"label geometry (affine) differs from image {image.source}")


def _round_list(values: Any, digits: int = 6) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def from_volumes(images_dir: PathLike, labels_dir: PathLike, output: PathLike, label_map: LabelMap,
                 pattern: str = DEFAULT_VOLUME_PATTERN, split: SplitSpec = SplitSpec(),
                 normalization: Dict[str, Any] = DEFAULT_NORMALIZATION, name: Optional[str] = None,
                 overwrite: bool = False, progress: bool = True) -> DeepHealthDataset:
    """Build a DeepHealth Dataset YAML from image and label volumes paired by name, cut into sagittal slices.

    Each volume is reoriented to RIP (axis 0 = sagittal slices, no resampling), normalised as a whole, and its
    original geometry (affine, shape, orientation) recorded so predictions can be put back.

    Args:
        images_dir: the image volumes (NIfTI, MetaImage or DICOM series folders).
        labels_dir: the label volumes, with the same names and voxel grids.
        output: the dataset YAML to write.
        label_map: the labels' raw values -> classes.
        pattern: a regular expression whose group `(?P<patient>...)` groups volumes into patients (default:
            each volume its own patient).
        split: the patient split (fractions, seed, fixed patients).
        normalization: the intensity normalisation (default: 0.5th-99.5th percentile per volume).
        name: the dataset's name (default: the YAML's stem).
        overwrite: replace an existing dataset.
        progress: show a progress bar on stderr.

    Returns:
        The dataset as written; its `spacing` is the median in-plane spacing (mm) of the volumes.
    """
    images_dir, labels_dir, yml = Path(images_dir), Path(labels_dir), Path(output)
    folder = _check_output(yml, [images_dir, labels_dir], overwrite)
    regex = _compile_pattern(pattern)
    pairs = pair_volumes(images_dir, labels_dir)
    volume_patients = []
    for vol_name, image_path, _ in pairs:
        match = regex.search(vol_name)
        if not match or not match.group("patient"):
            raise LumbarsegError(image_path, f"volume name does not match the pattern {pattern!r}")
        volume_patients.append(match.group("patient"))
    by_split = split_patients(volume_patients, split)
    meta = _base_meta(label_map, normalization)
    meta["source"] = {"builder": "from-volumes", "images": str(images_dir.resolve()),
                      "labels": str(labels_dir.resolve()), "pattern": pattern}
    samples: List[Sample] = []
    patients: List[str] = []
    volumes: List[Dict[str, Any]] = []
    with _staged_output(yml, folder, overwrite) as (tmp_dir, tmp_yml):
        for (vol_name, image_path, label_path), patient in tqdm(
                list(zip(pairs, volume_patients)), unit="volume", desc="from-volumes",
                disable=None if progress else True):
            image = read_volume(image_path)
            label = read_volume(label_path)
            _check_same_grid(image, label)
            canon_image, _ = reorient(image, CANONICAL)
            canon_label, _ = reorient(label.with_array(_integer_labels(label.array, label_path)), CANONICAL)
            pixels = _to_uint8(normalize(canon_image.array, normalization))
            mask = label_map.to_index(canon_label.array, label_path)
            first = len(samples)
            for k in range(pixels.shape[0]):
                stem = f"{vol_name}_slice{k:03d}"
                write_png(tmp_dir / "images" / f"{stem}.png", pixels[k])
                write_png(tmp_dir / "masks" / f"{stem}.png", mask[k])
                samples.append(Sample([f"{folder.name}/images/{stem}.png"], f"{folder.name}/masks/{stem}.png",
                                      [patient, k, vol_name]))
                patients.append(patient)
            spacing = canon_image.spacing
            volumes.append({
                "name": vol_name, "patient": patient, "image": str(image_path.resolve()),
                "label": str(label_path.resolve()), "samples": [first, len(samples)],
                "shape": list(image.shape), "affine": _round_list(image.affine), "orientation": image.orientation,
                "canonical_shape": list(canon_image.shape), "canonical_affine": _round_list(canon_image.affine),
                "spacing": _round_list(spacing),
            })
        in_plane = np.median(np.array([v["spacing"][1:] for v in volumes]), axis=0)
        meta["spacing"] = _round_list(in_plane)  # typical (median) in-plane spacing, row, col
        meta["slice_spacing"] = float(np.round(np.median([v["spacing"][0] for v in volumes]), 6))
        meta["volumes"] = volumes
        description = (f"Sagittal slices (RIP) of MRI volumes with class-index masks "
                       f"({', '.join(label_map.foreground)}), built by lumbarseg {__version__} "
                       f"from {images_dir.name}/ and {labels_dir.name}/.")
        return _finish(yml, tmp_yml, samples, patients, split, by_split, meta, name, description)
