"""ECVL's augmentation text syntax <-> a plain spec tree, checked against ECVL v1.0.3's names and parameters.

The text is what ECVL's ``AugmentationFactory`` reads: one augmentation per line, ``Name key=value ...``,
values ``[a,b]`` (a range sampled uniformly per image), ``(a,b,...)`` (a fixed vector), ``"text"`` or a
number; ``SequentialAugmentationContainer`` and ``OneOfAugmentationContainer p=...`` hold the following
lines up to ``end``. Indentation is free, ``#`` starts a comment line (ours; it is dropped on format).

The tree (:class:`AugSpec`) always carries every parameter, ECVL's defaults filled in, so that
``format_spec`` writes text that ECVL parses safely: ECVL 1.0.3 reads uninitialised memory when some
optional values are left out (``AugToFloat32`` without ``divisor``/``divisor_gt``, ``border_value`` of
``AugElasticTransform``/``AugGridDistortion``/``AugRandomCrop``, ``border_type`` of ``AugRandomCrop``).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from lumbarseg.errors import LumbarsegError


class Range(NamedTuple):
    """``[low,high]``: ECVL draws a value uniformly from [low, high) for every image."""

    low: float
    high: float


Value = Union[Range, Tuple[float, ...], float, str]

SEQUENTIAL = "SequentialAugmentationContainer"
ONE_OF = "OneOfAugmentationContainer"
CONTAINERS = (SEQUENTIAL, ONE_OF)


class Param(NamedTuple):
    """One parameter as ECVL's parser reads it: kind ('range', 'vector', 'number', 'string' or 'number|vector')."""

    kind: str
    required: bool = False
    default: Optional[Value] = None
    choices: Tuple[str, ...] = ()


_INTERP = ("linear", "nearest", "cubic", "area", "lanczos4")
# ECVL spells BORDER_REFLECT_101 two ways: 'reflect_101' in the distortions, 'reflect101' in AugRandomCrop.
_BORDER_DISTORT = ("reflect_101", "constant", "replicate", "reflect", "wrap", "transparent")
_BORDER_CROP = ("constant", "reflect", "reflect101", "replicate", "transparent", "wrap")


def _geometry(**extra: Param) -> Dict[str, Param]:
    return {**extra, "interp": Param("string", default="linear", choices=_INTERP),
            "gt_interp": Param("string", default="nearest", choices=_INTERP)}


def _distortion(**extra: Param) -> Dict[str, Param]:
    return {**extra, "interp": Param("string", default="linear", choices=_INTERP),
            "border_type": Param("string", default="reflect_101", choices=_BORDER_DISTORT),
            "border_value": Param("number", default=0.0)}


# Every augmentation lumbarseg implements portably, with ECVL 1.0.3's parameters (order = text order).
AUGMENTATIONS: Dict[str, Dict[str, Param]] = {
    SEQUENTIAL: {},
    ONE_OF: {"p": Param("number", required=True)},
    "AugResizeDim": _geometry(dims=Param("vector", required=True)),  # dims = (width, height), x first as ECVL
    "AugResizeScale": _geometry(scale=Param("vector", required=True)),  # scale = (x, y) factors
    "AugRotate": {"angle": Param("range", required=True), "center": Param("vector"),
                  "scale": Param("number", default=1.0), **_geometry()},
    "AugMirror": {"p": Param("number", default=0.5)},
    "AugFlip": {"p": Param("number", default=0.5)},
    "AugTranspose": {"p": Param("number", default=0.5)},
    "AugElasticTransform": _distortion(alpha=Param("range", required=True), sigma=Param("range", required=True)),
    "AugGridDistortion": _distortion(num_steps=Param("range", required=True),
                                     distort_limit=Param("range", required=True)),
    "AugCenterCrop": {"size": Param("vector")},
    "AugRandomCrop": {"size": Param("vector", required=True),
                      "border_type": Param("string", default="constant", choices=_BORDER_CROP),
                      "border_value": Param("number", default=0.0)},
    "AugGammaContrast": {"gamma": Param("range", required=True)},
    "AugBrightness": {"beta": Param("range", required=True)},
    "AugGaussianBlur": {"sigma": Param("range", required=True)},
    "AugAdditiveLaplaceNoise": {"std_dev": Param("range", required=True)},
    "AugAdditivePoissonNoise": {"lambda": Param("range", required=True)},
    "AugCoarseDropout": {"p": Param("range", required=True), "drop_size": Param("range", required=True),
                         "per_channel": Param("number", required=True)},
    "AugNormalize": {"mean": Param("number|vector", required=True), "std": Param("number|vector", required=True)},
    "AugToFloat32": {"divisor": Param("number", default=1.0), "divisor_gt": Param("number", default=1.0)},
    "AugScaleTo": {"new_min": Param("number", required=True), "new_max": Param("number", required=True)},
    "AugScaleFromTo": {"old_min": Param("number", required=True), "old_max": Param("number", required=True),
                       "new_min": Param("number", required=True), "new_max": Param("number", required=True)},
}

# Names the issue or other toolkits use that ECVL spells differently.
_ALIASES = {
    "AugScale": "ECVL has no AugScale: use AugResizeScale scale=(sx,sy) (geometry) or AugScaleTo new_min= new_max= "
                "(intensity)",
    "AugDivBy255": "it divides the ground truth by 255 too, which destroys class-index masks; "
                   "use AugToFloat32 divisor=255 divisor_gt=1",
}
# Ops that set the image's value range: when a spec has none, lumbarseg appends AugToFloat32 divisor=255.
RANGE_OPS = ("AugToFloat32", "AugNormalize", "AugScaleTo", "AugScaleFromTo")


@dataclass(frozen=True)
class AugSpec:
    """One node: an augmentation with all its parameters, or a container with its children."""

    name: str
    params: Dict[str, Value] = field(default_factory=dict)
    children: Tuple[AugSpec, ...] = ()

    def walk(self) -> List[AugSpec]:
        """This node and all nodes below it, depth first."""
        nodes = [self]
        for child in self.children:
            nodes.extend(child.walk())
        return nodes


def parse_spec(text: str, source: str = "augmentation") -> AugSpec:
    """Parse ECVL augmentation text into a checked spec.

    Args:
        text: ECVL's syntax, one augmentation per line, containers closed with `end`; a single augmentation or
            several lines become one Sequential container.
        source: what to name in errors.

    Returns:
        The spec (every parameter checked against ECVL 1.0.3's names and types).

    Raises:
        LumbarsegError: an unknown name or parameter, a wrong value type, or a missing `end`, naming the line.
    """
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise LumbarsegError(source, "empty augmentation spec")
    nodes: List[AugSpec] = []
    pos = 0
    while pos < len(lines):
        node, pos = _parse_node(lines, pos, source)
        nodes.append(node)
    if len(nodes) == 1:
        return nodes[0]
    return AugSpec(SEQUENTIAL, {}, tuple(nodes))


def format_spec(spec: AugSpec, indent: int = 0) -> str:
    """The ECVL text of a spec, every parameter written out (ECVL 1.0.3 needs some optional ones).

    Args:
        spec: a spec from `parse_spec`.
        indent: spaces before each line.

    Returns:
        Text that ECVL's `AugmentationFactory` and `parse_spec` both read.
    """
    pad = "    " * indent
    words = [spec.name] + [f"{key}={_format_value(value)}" for key, value in spec.params.items()]
    lines = [pad + " ".join(words)]
    if spec.name in CONTAINERS:
        lines.extend(format_spec(child, indent + 1) for child in spec.children)
        lines.append(pad + "end")
    return "\n".join(lines)


def make_spec(name: str, source: str = "augmentation", children: Tuple[AugSpec, ...] = (),
              **params: Value) -> AugSpec:
    """Build a checked node from Python values (lists become vectors, 2-tuples given to range params ranges)."""
    schema = _schema(name, source)
    converted: Dict[str, Value] = {}
    for key, value in params.items():
        kind = schema[key].kind if key in schema else ""
        if kind == "range" and isinstance(value, (list, tuple)) and not isinstance(value, Range):
            value = Range(*(float(v) for v in value))
        elif isinstance(value, list):
            value = tuple(float(v) for v in value)
        converted[key] = value
    return _checked(name, converted, tuple(children), source)


def with_model_range(spec: Optional[AugSpec]) -> AugSpec:
    """The spec lumbarseg runs: appends ``AugToFloat32 divisor=255 divisor_gt=1`` unless the spec sets the range.

    Images enter the pipeline as ECVL's DLDataset gives them (8-bit values, 0..255), so the ECVL parameters
    (gamma on v/255, brightness beta, noise std_dev) mean the same in both engines; the model wants [0, 1].
    A spec with AugToFloat32, AugNormalize, AugScaleTo or AugScaleFromTo is taken as the user's own choice.
    """
    to_float = AugSpec("AugToFloat32", {"divisor": 255.0, "divisor_gt": 1.0})
    if spec is None:
        return AugSpec(SEQUENTIAL, {}, (to_float,))
    if any(node.name in RANGE_OPS for node in spec.walk()):
        return spec
    if spec.name == SEQUENTIAL:
        return AugSpec(SEQUENTIAL, {}, spec.children + (to_float,))
    return AugSpec(SEQUENTIAL, {}, (spec, to_float))


def coerce_spec(value: Union[AugSpec, str, None], source: str = "augmentation") -> Optional[AugSpec]:
    """Accept a spec, its text, or None."""
    if value is None or isinstance(value, AugSpec):
        return value
    if isinstance(value, str):
        return parse_spec(value, source)
    raise LumbarsegError(source, f"expected ECVL augmentation text, got {type(value).__name__}")


# --- parsing helpers -------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\[[^\]]*\]|\([^)]*\)|"[^"]*"|[^\s\[\]()"]+)')


def _parse_node(lines: List[Tuple[int, str]], pos: int, source: str) -> Tuple[AugSpec, int]:
    number, line = lines[pos]
    where = f"{source}, line {number}"
    name, _, rest = line.partition(" ")
    if name == "end":
        raise LumbarsegError(where, "'end' without an open container")
    params = _parse_params(rest, where)
    pos += 1
    children: List[AugSpec] = []
    if name in CONTAINERS:
        while True:
            if pos >= len(lines):
                raise LumbarsegError(where, f"{name} is missing its 'end' line")
            if lines[pos][1] == "end":
                pos += 1
                break
            child, pos = _parse_node(lines, pos, source)
            children.append(child)
        if not children:
            raise LumbarsegError(where, f"{name} holds no augmentation")
    return _checked(name, params, tuple(children), where), pos


def _parse_params(text: str, where: str) -> Dict[str, Value]:
    params: Dict[str, Value] = {}
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise LumbarsegError(where, f"cannot read parameters at {text[pos:].strip()!r} (expected key=value)")
        key, raw = match.groups()
        if key in params:
            raise LumbarsegError(where, f"parameter {key!r} given twice")
        params[key] = _parse_value(raw, key, where)
        pos = match.end()
    return params


def _parse_value(raw: str, key: str, where: str) -> Value:
    try:
        if raw.startswith("["):
            values = [float(v) for v in raw[1:-1].split(",")]
            if len(values) != 2:
                raise LumbarsegError(where, f"{key}: a range needs exactly two values [min,max], got {raw}")
            return Range(*values)
        if raw.startswith("("):
            return tuple(float(v) for v in raw[1:-1].split(","))
        if raw.startswith('"'):
            return raw[1:-1]
        return float(raw)
    except ValueError:
        raise LumbarsegError(where, f"{key}: cannot read value {raw}") from None


def _schema(name: str, where: str) -> Dict[str, Param]:
    if name in AUGMENTATIONS:
        return AUGMENTATIONS[name]
    if name in _ALIASES:
        raise LumbarsegError(where, f"unsupported augmentation {name!r}: {_ALIASES[name]}")
    close = difflib.get_close_matches(name, list(AUGMENTATIONS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise LumbarsegError(where, f"unknown augmentation {name!r}{hint}; supported: {', '.join(AUGMENTATIONS)}")


def _checked(name: str, params: Dict[str, Value], children: Tuple[AugSpec, ...], where: str) -> AugSpec:
    """Validate params against the schema and fill in defaults (in schema order)."""
    schema = _schema(name, where)
    for key in params:
        if key not in schema:
            known = ", ".join(schema) or "none"
            raise LumbarsegError(where, f"{name}: unknown parameter {key!r} (parameters: {known})")
    if children and name not in CONTAINERS:
        raise LumbarsegError(where, f"{name} is not a container")
    full: Dict[str, Value] = {}
    for key, param in schema.items():
        if key in params:
            full[key] = _checked_value(name, key, param, params[key], where)
        elif param.required:
            raise LumbarsegError(where, f"{name}: missing required parameter {key!r} ({param.kind})")
        elif param.default is not None:
            full[key] = param.default
    _check_semantics(name, full, where)
    return AugSpec(name, full, children)


def _kind_of(value: Value) -> str:
    if isinstance(value, Range):
        return "range"
    if isinstance(value, tuple):
        return "vector"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def _checked_value(name: str, key: str, param: Param, value: Value, where: str) -> Value:
    kind = _kind_of(value)
    if kind not in param.kind.split("|"):
        shapes = {"range": "a range [min,max]", "vector": "a vector (a,b)", "number": "a number",
                  "string": 'a quoted string "..."', "number|vector": "a number or a vector (a,b)"}
        raise LumbarsegError(where, f"{name}: {key} must be {shapes[param.kind]}, got {_format_value(value)}")
    if kind == "number":
        value = float(value)  # type: ignore[arg-type]
    if kind == "range" and value.low > value.high:  # type: ignore[union-attr]
        raise LumbarsegError(where, f"{name}: {key} range {_format_value(value)} has min > max")
    if param.choices and value not in param.choices:
        raise LumbarsegError(where, f"{name}: {key}={value!r} is not one of {', '.join(param.choices)}")
    return value


def _check_semantics(name: str, p: Dict[str, Value], where: str) -> None:
    """The checks ECVL makes late (or never) made at parse time, so a bad spec fails before training starts."""

    def fail(problem: str) -> None:
        raise LumbarsegError(where, f"{name}: {problem}")

    probability = p.get("p")
    if isinstance(probability, float) and not 0.0 <= probability <= 1.0:
        fail(f"p must be a probability in [0, 1], got {probability:g}")
    if name in ("AugResizeDim", "AugCenterCrop", "AugRandomCrop"):
        size = p.get("dims", p.get("size"))
        if size is not None and (len(size) != 2 or any(v < 1 or v != int(v) for v in size)):  # type: ignore[union-attr]
            fail(f"size must be two positive integers (width,height), got {_format_value(size)}")  # type: ignore[arg-type]
    if name == "AugResizeScale" and (len(p["scale"]) != 2 or min(p["scale"]) <= 0):  # type: ignore[arg-type]
        fail(f"scale must be two positive factors (x,y), got {_format_value(p['scale'])}")
    if p.get("gt_interp", "nearest") != "nearest":
        fail("gt_interp must be \"nearest\": masks are class indices, any other interpolation invents labels")
    if name == "AugRotate" and "center" in p and len(p["center"]) != 2:  # type: ignore[arg-type]
        fail(f"center must be (x,y), got {_format_value(p['center'])}")
    if name == "AugGridDistortion" and p["num_steps"].low < 1:  # type: ignore[union-attr]
        fail("num_steps must be >= 1")
    positive = {"AugGaussianBlur": "sigma", "AugAdditiveLaplaceNoise": "std_dev", "AugAdditivePoissonNoise": "lambda",
                "AugElasticTransform": "sigma", "AugGammaContrast": "gamma"}
    if name in positive and p[positive[name]].low < 0:  # type: ignore[union-attr]
        fail(f"{positive[name]} must be >= 0")
    if name == "AugCoarseDropout":
        if not (p["p"].low >= 0 and p["p"].high <= 1):  # type: ignore[union-attr]
            fail("p must lie in [0, 1]")
        if not (p["drop_size"].low >= 0 and p["drop_size"].high <= 1):  # type: ignore[union-attr]
            fail("drop_size is a fraction of the image and must lie in [0, 1]")
    if name == "AugNormalize":
        std = p["std"]
        if _kind_of(std) != _kind_of(p["mean"]):
            fail("mean and std must both be numbers or both be vectors")
        if any(s == 0 for s in (std if isinstance(std, tuple) else (std,))):
            fail("std cannot be zero")
    if name == "AugToFloat32" and p["divisor"] == 0:
        fail("divisor cannot be zero")
    if name == "AugToFloat32" and p["divisor_gt"] != 1:
        fail("divisor_gt must be 1: lumbarseg masks are class indices, dividing them destroys the labels")
    if name == "AugScaleFromTo" and p["old_min"] == p["old_max"]:
        fail("old_min and old_max must differ")


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _format_value(value: Value) -> str:
    if isinstance(value, Range):
        return f"[{_format_number(value.low)},{_format_number(value.high)}]"
    if isinstance(value, tuple):
        return "(" + ",".join(_format_number(v) for v in value) + ")"
    if isinstance(value, str):
        return f'"{value}"'
    return _format_number(value)
