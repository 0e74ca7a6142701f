"""Label maps: class names, the raw mask values that belong to each class, and display colours.

A label map is data. In YAML it is a mapping ``class name -> raw values``, where a raw value is
an integer or an inclusive range string ``"lo-hi"``; class order is background (index 0), then
the mapping's order. ``background`` may be listed explicitly; otherwise raw 0 is background.

    {vertebra: [76], disc: [29], canal: [150]}                          # SPIDER PNG export
    {vertebra: ['1-25', '101-125'], canal: [100], disc: ['201-225']}    # SPIDER original
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from lumbarseg.errors import LumbarsegError

Range = Tuple[int, int]
RawSpec = Union[int, str]

BACKGROUND = "background"
_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*$")

# Colours by class name (RGB), used in overlays and written into every model's metadata.
DEFAULT_COLORS: Dict[str, Tuple[int, int, int]] = {
    BACKGROUND: (0, 0, 0),
    "vertebra": (255, 196, 0),
    "disc": (0, 160, 255),
    "canal": (230, 40, 60),
}
_FALLBACK_PALETTE = [(44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34)]

# Built-in label maps, addressable by name wherever a label-map file is accepted.
BUILTIN_LABEL_MAPS: Dict[str, Dict[str, List[RawSpec]]] = {
    "spider-png": {"vertebra": [76], "disc": [29], "canal": [150]},
    "spider": {"vertebra": ["1-25", "101-125"], "disc": ["201-225"], "canal": [100]},
    # The class indices that lumbarseg's shipped model writes into its masks.
    "lumbarseg": {"vertebra": [1], "disc": [2], "canal": [3]},
}


def _parse_raw(value: RawSpec, where: str) -> Range:
    if isinstance(value, bool):
        raise LumbarsegError(where, f"raw value {value!r} is not an integer or 'lo-hi' range")
    if isinstance(value, int):
        return (value, value)
    match = _RANGE.match(str(value))
    if not match:
        raise LumbarsegError(where, f"raw value {value!r} is not an integer or 'lo-hi' range")
    lo_i = int(match.group(1))
    hi_i = int(match.group(2)) if match.group(2) is not None else lo_i
    if lo_i > hi_i:
        raise LumbarsegError(where, f"range {value!r} is empty (low > high)")
    return (lo_i, hi_i)


@dataclass(frozen=True)
class LabelMap:
    """Classes (background first), the raw mask values of each, and their colours.

    Attributes:
        classes: class names; the index of each is its class index.
        ranges: per class, inclusive (low, high) ranges of raw values.
        colors: per class, RGB.
    """

    classes: Tuple[str, ...]
    ranges: Tuple[Tuple[Range, ...], ...]
    colors: Tuple[Tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def foreground(self) -> Tuple[str, ...]:
        return self.classes[1:]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[RawSpec]], source: str = "label map") -> LabelMap:
        """Build from ``{class: [raw values or 'lo-hi' ranges]}``; checks that ranges do not overlap."""
        if not isinstance(mapping, Mapping) or not mapping:
            raise LumbarsegError(source, "label map must be a non-empty mapping of class name -> raw values")
        names = [BACKGROUND]
        ranges: List[Tuple[Range, ...]] = [((0, 0),)]
        for name, values in mapping.items():
            name = str(name)
            if isinstance(values, (int, str)):
                values = [values]
            if not isinstance(values, Sequence) or not values:
                raise LumbarsegError(source, f"class {name!r} needs a list of raw values")
            parsed = tuple(_parse_raw(v, f"{source}: class {name!r}") for v in values)
            if name == BACKGROUND:
                ranges[0] = parsed
            elif name in names:
                raise LumbarsegError(source, f"class {name!r} is listed twice")
            else:
                names.append(name)
                ranges.append(parsed)
        flat = sorted((lo, hi, names[i]) for i, rs in enumerate(ranges) for lo, hi in rs)
        for (lo1, hi1, n1), (lo2, hi2, n2) in zip(flat, flat[1:]):
            if lo2 <= hi1:
                raise LumbarsegError(source, f"raw values of {n1!r} and {n2!r} overlap ({lo1}-{hi1} and {lo2}-{hi2})")
        palette = iter(_FALLBACK_PALETTE * 4)
        colors = tuple(DEFAULT_COLORS.get(n) or next(palette) for n in names)
        return cls(tuple(names), tuple(ranges), colors)

    @classmethod
    def load(cls, name_or_path: Union[str, Path]) -> LabelMap:
        """A built-in label map by name, or one from a YAML file.

        Args:
            name_or_path: `spider-png`, `spider` or `lumbarseg`, or a YAML mapping class names to raw values or
                ranges (`{vertebra: ['1-25'], canal: [100]}`).

        Returns:
            The label map (background first, then the classes in the file's order).
        """
        key = str(name_or_path)
        if key in BUILTIN_LABEL_MAPS:
            return cls.from_mapping(BUILTIN_LABEL_MAPS[key], source=key)
        path = Path(name_or_path)
        if not path.is_file():
            known = ", ".join(sorted(BUILTIN_LABEL_MAPS))
            raise LumbarsegError(path, f"no such label-map file (built-in names: {known})")
        import yaml  # here, not at the top: model metadata (every predict) need labels, not YAML

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise LumbarsegError(path, f"malformed YAML: {str(exc).splitlines()[0]}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_classes(cls, classes: Sequence[str]) -> LabelMap:
        """A label map whose raw values are the class indices (masks already in class-index form).

        Args:
            classes: class names, `background` first.
        """
        if not classes or classes[0] != BACKGROUND:
            raise LumbarsegError("classes", f"class list must start with {BACKGROUND!r}, got {list(classes)}")
        return cls.from_mapping({name: [i] for i, name in enumerate(classes)}, source="classes")

    def to_mapping(self) -> Dict[str, List[RawSpec]]:
        """The YAML form (``from_mapping`` inverse); background is written only when not raw 0."""
        out: Dict[str, List[RawSpec]] = {}
        for name, rs in zip(self.classes, self.ranges):
            if name == BACKGROUND and rs == ((0, 0),):
                continue
            out[name] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in rs]
        return out

    def to_index(self, raw: np.ndarray, source: Union[str, Path] = "mask") -> np.ndarray:
        """Map raw mask values to class indices.

        Args:
            raw: a mask of raw values.
            source: what to name in the error.

        Returns:
            uint8 class indices of the same shape.

        Raises:
            LumbarsegError: values the map does not know, naming `source`.
        """
        raw = np.asarray(raw)
        values = np.unique(raw)
        lut_values = np.full(values.shape, -1, dtype=np.int64)
        for index, rs in enumerate(self.ranges):
            for lo, hi in rs:
                lut_values[(values >= lo) & (values <= hi)] = index
        unknown = values[lut_values < 0]
        if unknown.size:
            shown = ", ".join(str(v) for v in unknown[:8].tolist())
            raise LumbarsegError(source, f"mask values not in the label map: {shown}")
        return lut_values[np.searchsorted(values, raw)].astype(np.uint8)

    def colorize(self, index_mask: np.ndarray) -> np.ndarray:
        """RGB image (H, W, 3) of a class-index mask."""
        palette = np.array(self.colors, dtype=np.uint8)
        return palette[np.clip(index_mask, 0, len(palette) - 1)]
