"""From a semantic mask to a spine report: levels, instance masks and measurements (the Python API).

:func:`analyse` takes a class-index volume in any orientation, brings it to the canonical RIP
orientation, splits it into named levels (:mod:`.instances`, :mod:`.levels`), measures each
level on its own mid-sagittal slice (:mod:`.measurements`) and returns a :class:`SpineReport`
whose ``levels_volume`` is back in the input's grid and geometry. :func:`measure_mask` does the
same from a raw mask and its label map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from lumbarseg.analysis import measurements as ms
from lumbarseg.analysis.column import keep_column, trace
from lumbarseg.analysis.discs import DiscFrame
from lumbarseg.analysis.instances import Instances, split_instances
from lumbarseg.analysis.levels import CANAL_VALUE, DISC_OFFSET, Level, disc_name, order_key, vertebra_name
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.volume import CANONICAL, Header, Volume, reorient
from lumbarseg.labels import LabelMap

MARGIN_MM = 15.0
MIN_SPINE_COS = 0.7  # the disc centres must line up within ~45 degrees of head-foot


@dataclass
class View:
    """What the figure needs: the canonical slice shown (classes, level values, image) and the spacing."""

    classes: np.ndarray
    levels: np.ndarray
    image: Optional[np.ndarray]
    spacing: Tuple[float, float, float]
    slice: int
    class_names: Tuple[str, ...]


@dataclass
class SpineReport:
    """Levels top to bottom with their measurements, the alignment, and the levels mask in the input's grid.

    Attributes:
        case: the case's name.
        levels: `Level`s top to bottom: `name` (e.g. `L4`, `L4-L5`), `kind`, `partial`, `measurements`
            (unit-suffixed keys: `_mm`, `_deg`, `_pct`), `flags`.
        alignment: `lordosis_deg` and `lordosis_l1_s1_deg` (degrees; None where not measurable).
        levels_volume: instance labels in the input's grid and geometry (SPIDER's numbering).
        thresholds: the thresholds used.
        spacing: the mask's voxel size in mm (slice, row, col, canonical order).
        view: the canonical slice the picture shows (classes, level values, image) and its spacing.
        notes: what the reader should know (screening aid, naming assumption).
    """

    case: str
    levels: List[Level]
    alignment: Dict[str, Optional[float]]
    levels_volume: Volume
    thresholds: ms.Thresholds
    spacing: Tuple[float, float, float]
    view: View
    notes: List[str] = field(default_factory=list)
    levels_confidence: str = "high"  # "uncertain" when the count of the levels met conflicting evidence
    confidence_notes: List[str] = field(default_factory=list)  # why it is uncertain

    def level(self, name: str) -> Optional[Level]:
        """The level of that name (e.g. `"L4-L5"`), or None."""
        return next((lv for lv in self.levels if lv.name == name), None)

    @property
    def names(self) -> List[str]:
        return [lv.name for lv in self.levels]


def _class_index(classes: Sequence[str], name: str) -> Optional[int]:
    return list(classes).index(name) if name in classes else None


def _check(canonical: np.ndarray, classes: Sequence[str], source: str) -> Tuple[int, int, Optional[int]]:
    vertebra, disc = _class_index(classes, "vertebra"), _class_index(classes, "disc")
    missing = [n for n, i in (("vertebra", vertebra), ("disc", disc)) if i is None]
    if missing:
        raise LumbarsegError(source, f"label map has no {' or '.join(missing)} class: levels need vertebrae and discs "
                                     f"(classes: {', '.join(classes[1:]) or 'none'})")
    if min(canonical.shape) < 2:
        raise LumbarsegError(source, f"a single slice {canonical.shape}: levels and measurements need a 3D mask")
    present = np.bincount(canonical.ravel(), minlength=len(classes))
    if present[vertebra] == 0 and present[disc] == 0:
        raise LumbarsegError(source, "mask is empty: no vertebra or disc voxels")
    if present[disc] == 0:
        raise LumbarsegError(source, "mask has no disc: levels are counted from the discs")
    if present[vertebra] == 0:
        raise LumbarsegError(source, "mask has no vertebra: levels are counted between the discs")
    return vertebra, disc, _class_index(classes, "canal")


def _check_direction(frames: Dict[int, DiscFrame], source: str) -> None:
    centres = np.array([f.centre for f in frames.values()])
    if len(centres) < 2:
        return
    values, vectors = np.linalg.eigh(np.cov((centres - centres.mean(axis=0)).T))
    axis = vectors[:, int(np.argmax(values))]
    if abs(axis[1]) < MIN_SPINE_COS:
        runs = "left-right" if abs(axis[0]) >= abs(axis[2]) else "front-back"
        raise LumbarsegError(source, f"the spine runs {runs} in this mask's geometry, not head-foot (an axial or "
                                     "coronal stack read as sagittal?): check its orientation")


def _crop(array: np.ndarray, spacing: Sequence[float]) -> Tuple[slice, ...]:
    """The labelled region plus a margin in-plane (all slices that hold labels)."""
    box = []
    for axis in range(3):
        present = np.flatnonzero(array.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    margin = [int(np.ceil(MARGIN_MM / s)) if axis else 0 for axis, s in enumerate(spacing)]
    return tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, array.shape))


def _edge(box: Tuple[slice, ...], shape: Sequence[int], crop: Tuple[slice, ...], full: Sequence[int]) -> bool:
    """Does a structure's box touch the field of view in the head-foot or front-back direction?"""
    for axis in (1, 2):
        if (box[axis].start == 0 and crop[axis].start == 0) or (
                box[axis].stop == shape[axis] and crop[axis].stop == full[axis]):
            return True
    return False


def _mid_slice(sub: np.ndarray, box: Tuple[slice, ...]) -> int:
    """The structure's left-right centre (canonical slice index) from its mask inside its box: the slice holding
    it nearest to its centre of mass (a disc of two pieces may have a gap there)."""
    weights = sub.sum(axis=(1, 2)).astype(float)
    centre = int(round(float(weights @ np.arange(len(weights)) / weights.sum())))
    held = np.flatnonzero(weights)
    return int(held[np.argmin(np.abs(held - centre))]) + box[0].start


def _in_slice(sub: np.ndarray, box: Tuple[slice, ...], index: int, shape: Sequence[int]) -> np.ndarray:
    """A structure's 2D mask on slice ``index`` of the crop, from its mask inside its box."""
    plane = np.zeros(tuple(shape[1:]), bool)
    plane[box[1:]] = sub[index - box[0].start]
    return plane


def _component(mask: np.ndarray, seed: Optional[np.ndarray] = None) -> np.ndarray:
    """The largest 2D piece of a mask, or the piece that holds most of ``seed``."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    weights = np.bincount(labels[seed & mask] if seed is not None else labels.ravel(), minlength=count + 1)
    weights[0] = 0
    if weights.max() == 0:
        weights = np.bincount(labels.ravel(), minlength=count + 1)
        weights[0] = 0
    return labels == int(np.argmax(weights))


def _make_levels(inst: Instances, crop: Tuple[slice, ...], full: Sequence[int],
                 spacing: Sequence[float]) -> Tuple[List[Level], Dict[Tuple[str, int], ms.Shape2D]]:
    sp2 = spacing[1:]
    levels: List[Level] = []
    shapes: Dict[Tuple[str, int], ms.Shape2D] = {}
    shape = inst.discs.shape
    for k, box in enumerate(ndimage.find_objects(inst.discs), start=1):
        if box is None:
            continue
        sub = inst.discs[box] == k
        index = _mid_slice(sub, box)
        level = Level(disc_name(k), "disc", k, _edge(box, shape, crop, full), index + crop[0].start,
                      tuple(float(c) for c in inst.frames[k].centre))  # type: ignore[arg-type]
        shapes[("disc", k)] = ms.shape_2d(_component(_in_slice(sub, box, index, shape)), sp2)
        levels.append(level)
    disc_slices = {lv.position: lv.slice - crop[0].start for lv in levels}
    for value, box in enumerate(ndimage.find_objects(inst.bodies), start=1):
        if box is None:
            continue
        position = value - 1
        seed = inst.bodies[box] == value
        index = _mid_slice(seed, box)
        ups = np.sum([inst.frames[k].normal for k in (position, position + 1) if k in inst.frames], axis=0)
        discs = [shapes[("disc", k)] for k in (position, position + 1) if ("disc", k) in shapes]

        def body_on(index: int, box: Tuple[slice, ...] = box, seed: np.ndarray = seed, value: int = value,
                    ups: np.ndarray = ups, discs: List[ms.Shape2D] = discs) -> Optional[ms.Shape2D]:
            if not box[0].start <= index < box[0].stop:
                return None
            body = _component(inst.vertebrae[index] == value, _in_slice(seed, box, index, shape))
            return ms.shape_2d(ms.body_column(body, sp2, ups, discs), sp2, ups) if body.any() else None

        centre = [float(np.mean(i) + b.start) * s for i, b, s in zip(np.nonzero(seed), box, spacing)]
        level = Level(vertebra_name(position), "sacrum" if position == 0 else "vertebra", position,
                      _edge(box, shape, crop, full), index + crop[0].start, tuple(centre))  # type: ignore[arg-type]
        shapes[("body", position)] = body_on(index)
        # both vertebrae of a motion segment are compared on the slice of the disc between them
        for key, disc in (("over", position), ("under", position + 1)):
            if disc in disc_slices:
                shapes[(key, position)] = body_on(disc_slices[disc])
        levels.append(level)
    return levels, shapes


def _measure(levels: List[Level], shapes: Dict[Tuple[str, int], ms.Shape2D], canal: Optional[np.ndarray],
             spacing: Sequence[float], thresholds: ms.Thresholds) -> Dict[str, Optional[float]]:
    sp2 = spacing[1:]
    bodies = {lv.position: lv for lv in levels if lv.kind != "disc"}
    for level in levels:
        shape = shapes[("disc" if level.kind == "disc" else "body", level.position)]
        if level.kind == "sacrum" or level.partial:
            ms.endplates(shape, sp2)
        else:
            ms.heights(level, shape, sp2)
        if level.kind == "vertebra" and not level.partial:
            ms.vertebral_ratios(level)
        if canal is not None and not level.partial and level.kind != "sacrum":
            ms.canal_ap(level, canal, shape.frame.centre, shape.frame, spacing, thresholds)
    for level in levels:
        if level.kind == "vertebra" and not level.partial:
            neighbours = [bodies[p] for p in (level.position - 1, level.position + 1)
                          if p in bodies and bodies[p].kind == "vertebra" and not bodies[p].partial]
            ms.genant(level, neighbours)
            below = bodies.get(level.position - 1)
            if below is not None and (not below.partial or below.kind == "sacrum"):
                upper, lower = shapes.get(("over", level.position)), shapes.get(("under", below.position))
                if upper is not None and lower is not None:
                    ms.endplates(upper, sp2)
                    ms.endplates(lower, sp2)
                    ms.listhesis(level, upper, below, lower, sp2, thresholds)
        elif level.kind == "disc" and not level.partial:
            ms.disc_height_index(level, [bodies[p] for p in (level.position, level.position - 1)
                                         if p in bodies and bodies[p].kind == "vertebra"])
    return _alignment(bodies, shapes)


def _alignment(bodies: Dict[int, Level], shapes: Dict[Tuple[str, int], ms.Shape2D]) -> Dict[str, Optional[float]]:
    def endplate(position: int, side: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        level = bodies.get(position)
        if level is None or (level.partial and level.kind != "sacrum"):
            return None
        shape = shapes[("body", position)]
        line = shape.superior if side == "superior" else shape.inferior
        if line is not None:
            level.lines[f"{side}_endplate"] = ms.endplate_segment(line, shape)
        return line

    l1, l5, s1 = endplate(5, "superior"), endplate(1, "inferior"), endplate(0, "superior")
    return {"lordosis_deg": ms.lordosis(l1, l5), "lordosis_l1_s1_deg": ms.lordosis(l1, s1)}


def _levels_array(inst: Instances, classes: np.ndarray, canal_class: Optional[int],
                  levels: List[Level]) -> np.ndarray:
    out = np.zeros(classes.shape, np.uint8)
    if canal_class is not None:
        out[classes == canal_class] = CANAL_VALUE
    lut = np.zeros(max(int(inst.vertebrae.max()), 0) + 1, np.uint8)
    for level in levels:
        if level.kind == "disc":
            out[inst.discs == level.position] = DISC_OFFSET + level.position
        else:
            lut[level.position + 1] = level.value
    out[inst.vertebrae > 0] = lut[inst.vertebrae[inst.vertebrae > 0]]
    return out


def _to_full(levels: List[Level], offset: Sequence[float]) -> None:
    """Move level centres and lines from the crop's frame to the whole canonical volume's (mm)."""
    shift = np.asarray(offset[1:])
    for level in levels:
        level.centre_mm = tuple(float(c + o) for c, o in zip(level.centre_mm, offset))  # type: ignore[assignment]
        level.lines = {k: (tuple(float(x) for x in np.add(a, shift)), tuple(float(x) for x in np.add(b, shift)))
                       for k, (a, b) in level.lines.items()}  # type: ignore[misc]


def analyse(index: Volume, classes: Sequence[str], case: str = "", image: Optional[Volume] = None,
            thresholds: Optional[ms.Thresholds] = None) -> SpineReport:
    """Split a class-index volume (``classes`` names its indices) into levels and measure them."""
    thresholds = thresholds or ms.Thresholds()
    source = index.source or case or "mask"
    canonical, undo = reorient(index, CANONICAL)
    spacing = canonical.spacing
    vertebra, disc, canal_class = _check(canonical.array, classes, source)
    crop = _crop(canonical.array, spacing)
    column = trace(canonical.array[crop] == canal_class, spacing) if canal_class is not None else None
    classes_crop = keep_column(canonical.array[crop], spacing, vertebra, disc, column)
    notes = [ms.SCREENING_NOTE]
    off = int(np.count_nonzero(classes_crop != canonical.array[crop]))
    if off:
        notes.append(f"{off * float(np.prod(spacing)) / 1000:.1f} mL of vertebra/disc off the spinal column ignored")
    inst = split_instances(classes_crop, spacing, vertebra, disc, lambda frames: _check_direction(frames, source),
                           column)
    if not inst.bodies.any():
        raise LumbarsegError(source, "no vertebral body found between or next to the discs")
    levels, shapes = _make_levels(inst, crop, canonical.shape, spacing)
    canal = (classes_crop == canal_class).astype(np.float32) if canal_class is not None else None
    alignment = _measure(levels, shapes, canal, spacing, thresholds)
    levels.sort(key=order_key)
    values = np.zeros(canonical.shape, np.uint8)
    values[crop] = _levels_array(inst, classes_crop, canal_class, levels)
    header = index.header if index.header.format == "nifti" else Header()
    levels_volume = Volume(undo.undo(values), index.affine, index.source, header)
    _to_full(levels, [b.start * s for b, s in zip(crop, spacing)])
    shown = int(np.median([lv.slice for lv in levels if lv.kind != "disc"] or [lv.slice for lv in levels]))
    picture = reorient(image, CANONICAL)[0].array[shown] if image is not None else None
    view = View(canonical.array[shown], values[shown], picture, spacing, shown, tuple(classes))
    for level in levels:
        level.uncertain = inst.count.uncertain(level.position)
    return SpineReport(case, levels, alignment, levels_volume, thresholds, spacing, view, notes + inst.count.notes,
                       inst.count.confidence, list(inst.count.reasons))


def measure_mask(volume: Volume, label_map: Union[str, LabelMap] = "lumbarseg", case: str = "",
                 image: Optional[Volume] = None, thresholds: Optional[ms.Thresholds] = None) -> SpineReport:
    """Name the levels of a 3-class mask and measure them: the spine report.

    Args:
        volume: the mask with its affine (any orientation; lengths come out in mm from its spacing).
        label_map: how the mask's raw values map to classes: a built-in name (`lumbarseg`, `spider-png`,
            `spider`), a YAML file, or a `LabelMap`; it needs vertebra and disc classes.
        case: the case's name in the report.
        image: the MRI volume on the same grid, for the picture.
        thresholds: stenosis and listhesis thresholds (mm; default 12 / 10 mm canal, 3 mm slip).

    Returns:
        The `SpineReport`.

    Raises:
        LumbarsegError: an empty mask, no disc, a single slice, a spine not running head to feet in the mask's
            geometry, or a label map without vertebra and disc classes.
    """
    label_map = label_map if isinstance(label_map, LabelMap) else LabelMap.load(label_map)
    index = volume.with_array(label_map.to_index(volume.array, volume.source or case or "mask"))
    if image is not None and image.shape != volume.shape:
        raise LumbarsegError(image.source or "image", f"grid {image.shape} differs from the mask's {volume.shape}")
    return analyse(index, label_map.classes, case, image, thresholds)
