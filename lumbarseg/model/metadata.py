"""The ONNX contract: every lumbarseg model file carries what is needed to use it correctly.

Graph: input ``image`` float32 (N, C_in, H, W), output ``probabilities`` float32 (N, C, H, W),
softmax over axis 1, N/H/W dynamic. Metadata: one ``metadata_props`` entry, key ``lumbarseg``,
whose value is the JSON of ``ModelMetadata``.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

from lumbarseg import __version__
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_path
from lumbarseg.io.intensity import DEFAULT_NORMALIZATION
from lumbarseg.io.volume import CANONICAL
from lumbarseg.labels import LabelMap
from lumbarseg.networks.unet import UNetSpec

METADATA_KEY = "lumbarseg"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


@dataclass
class ModelMetadata:
    """What a model expects and produces: the JSON under its `metadata_props["lumbarseg"]`.

    `spacing` and `input_size` are in-plane (row, col). `slice_offsets` (mm, one per input channel, 0 once)
    place each channel's slice along the slice axis relative to the slice being segmented: `[0.0]` for a 2D
    model, e.g. `[-1.8, 0.0, 1.8]` for 2.5D. Every field: the manual's ONNX contract page.
    """

    classes: List[str]  # class names, background first; index = output channel
    colors: List[List[int]]  # RGB per class, for overlays and viewers
    architecture: Dict[str, Any]  # the U-Net spec (in_channels, num_classes, depth, base_filters, norm, dropout)
    spacing: List[float]  # in-plane (row, col) mm per pixel the model expects
    input_size: List[int]  # (rows, cols) it was trained at; any multiple of 2**depth runs
    orientation: str = CANONICAL  # axis codes of its input: RIP (sagittal slices, head at the top, anterior left)
    normalization: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))  # intensity scaling
    label_values: List[int] = field(default_factory=list)  # value written for each class index
    training_data: Dict[str, Any] = field(default_factory=dict)  # data, epochs, best Dice, worlds (how trained)
    engine: str = ""  # the engine that trained it: torch | eddl
    version: str = __version__  # the lumbarseg version that wrote it
    slice_offsets: List[float] = field(default_factory=lambda: [0.0])  # mm from the segmented slice, per channel

    def __post_init__(self) -> None:
        if not self.label_values:
            self.label_values = list(range(len(self.classes)))
        self.validate()

    def validate(self, source: str = "model metadata") -> None:
        """Raise if the fields contradict each other or the architecture."""
        n = len(self.classes)
        spec = UNetSpec.from_dict(self.architecture)
        problems = []
        if n < 2 or self.classes[0] != "background":
            problems.append(f"classes must start with 'background' and have >= 2 entries, got {self.classes}")
        if spec.num_classes != n:
            problems.append(f"architecture has {spec.num_classes} outputs but {n} classes are named")
        if len(self.colors) != n or any(len(c) != 3 for c in self.colors):
            problems.append("colors must hold one RGB triple per class")
        if len(self.label_values) != n:
            problems.append("label_values must hold one value per class")
        if len(self.spacing) != 2 or min(self.spacing) <= 0:
            problems.append(f"spacing must be two positive in-plane values (mm), got {self.spacing}")
        if len(self.input_size) != 2:
            problems.append(f"input_size must be (rows, cols), got {self.input_size}")
        else:
            try:
                spec.check_input_size(self.input_size)
            except LumbarsegError as exc:
                problems.append(exc.problem)
        if len(self.slice_offsets) != spec.in_channels or [float(o) for o in self.slice_offsets].count(0.0) != 1:
            problems.append(f"slice_offsets must hold one offset (mm) per input channel ({spec.in_channels}) and 0 "
                            f"once, got {self.slice_offsets}")
        if len(self.orientation) != 3:
            problems.append(f"orientation must be three axis codes, got {self.orientation!r}")
        if problems:
            raise LumbarsegError(source, "; ".join(problems))

    @property
    def spec(self) -> UNetSpec:
        return UNetSpec.from_dict(self.architecture)

    @property
    def label_map(self) -> LabelMap:
        mapping = {name: [value] for name, value in zip(self.classes[1:], self.label_values[1:])}
        lm = LabelMap.from_mapping(mapping, source="model metadata")
        return LabelMap(lm.classes, lm.ranges, tuple(tuple(c) for c in self.colors))  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model metadata") -> ModelMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LumbarsegError(source, f"metadata is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise LumbarsegError(source, "metadata must be a JSON object")
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise LumbarsegError(source, f"metadata lacks required fields: {', '.join(missing)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (LumbarsegError, TypeError, ValueError) as exc:
            raise LumbarsegError(source, f"invalid metadata: {exc}") from None


def _load_onnx(path: Path):
    import onnx

    if not path.is_file():
        raise LumbarsegError(path, "no such model file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, RuntimeError, ... for corrupt files
        raise LumbarsegError(path, f"not a readable ONNX model ({type(exc).__name__})") from None


def embed(path: Union[str, Path], metadata: ModelMetadata) -> None:
    """Check the ONNX graph against the contract and write ``metadata`` into it (atomically)."""
    import onnx

    path = Path(path)
    model = _load_onnx(path)
    check_graph(model, metadata, source=str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    model.producer_name = "lumbarseg"
    model.producer_version = __version__
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def read(path: Union[str, Path]) -> ModelMetadata:
    """The metadata of a lumbarseg ONNX file (`metadata_props["lumbarseg"]`).

    Args:
        path: the ONNX file.

    Returns:
        The `ModelMetadata`.

    Raises:
        LumbarsegError: no such file, not ONNX, or metadata missing or contradicting the graph.
    """
    path = Path(path)
    model = _load_onnx(path)
    return from_properties({entry.key: entry.value for entry in model.metadata_props}, path)


def from_properties(properties: Mapping[str, str], path: Union[str, Path]) -> ModelMetadata:
    """The metadata from a model's ``metadata_props`` (key -> value), as :func:`read` takes them from the file
    and onnxruntime gives them (``session.get_modelmeta().custom_metadata_map``) without importing ``onnx``."""
    if METADATA_KEY not in properties:
        raise LumbarsegError(path, f"ONNX file has no '{METADATA_KEY}' metadata (not exported by lumbarseg?)")
    return ModelMetadata.from_json(properties[METADATA_KEY], source=str(path))


def check_graph(model, metadata: ModelMetadata, source: str) -> None:
    """``onnx.checker`` plus the contract: input/output names, rank 4, dynamic N/H/W, C matches."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise LumbarsegError(source, f"ONNX checker failed: {str(exc).splitlines()[0]}") from None
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise LumbarsegError(
            source, f"graph must map '{INPUT_NAME}' -> '{OUTPUT_NAME}', has {[i.name for i in inputs]} -> "
            f"{[o.name for o in graph.output]}"
        )
    spec = metadata.spec
    for value, channels in ((inputs[0], spec.in_channels), (graph.output[0], spec.num_classes)):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise LumbarsegError(source, f"'{value.name}' must be rank 4 (N, C, H, W), has rank {len(dims)}")
        if dims[1].HasField("dim_value") and dims[1].dim_value != channels:
            raise LumbarsegError(source, f"'{value.name}' has {dims[1].dim_value} channels, expected {channels}")
        fixed = [axis for axis in (0, 2, 3) if dims[axis].HasField("dim_value")]
        if fixed:
            raise LumbarsegError(source, f"'{value.name}' axes {fixed} are fixed; N, H and W must be dynamic")
