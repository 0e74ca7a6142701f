"""A 2D model as the start of a 2.5D one: more input channels, the same function at the start.

The first convolution's weights go to the centre channel (the slice being segmented) and the neighbour
channels' weights start at zero, so the inflated model's output equals the 2D model's until training
teaches it to use the neighbours (the "inflation" of 2D networks to more input planes, as I3D does for
video). Engine-neutral: both engines import the result with their usual ``from_onnx``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.model import metadata as model_metadata

PathLike = Union[str, Path]


def inflate_input(source: PathLike, out: PathLike, slice_offsets: Sequence[float]) -> model_metadata.ModelMetadata:
    """Write ``source`` (a one-channel lumbarseg model) to ``out`` with one input channel per slice offset (mm);
    returns the new metadata."""
    import onnx
    from onnx import numpy_helper

    source = Path(source)
    meta = model_metadata.read(source)
    offsets = [float(o) for o in slice_offsets]
    if meta.spec.in_channels != 1:
        raise LumbarsegError(source, f"has {meta.spec.in_channels} input channels; only a one-channel model inflates")
    if offsets.count(0.0) != 1:
        raise LumbarsegError(source, f"slice offsets {offsets} must hold 0 once (the slice being segmented)")
    model = onnx.load(str(source))
    graph = model.graph
    first = [node for node in graph.node if model_metadata.INPUT_NAME in node.input]
    weights = {init.name: init for init in graph.initializer}
    if len(first) != 1 or first[0].op_type != "Conv" or first[0].input[1] not in weights:
        raise LumbarsegError(source, "its input does not feed one convolution with stored weights")
    old = numpy_helper.to_array(weights[first[0].input[1]])
    new = np.zeros((old.shape[0], len(offsets), *old.shape[2:]), dtype=old.dtype)
    new[:, offsets.index(0.0)] = old[:, 0]
    weights[first[0].input[1]].CopyFrom(numpy_helper.from_array(new, first[0].input[1]))
    graph.input[0].type.tensor_type.shape.dim[1].dim_value = len(offsets)
    architecture = dict(meta.architecture, in_channels=len(offsets))
    inflated = replace(meta, architecture=architecture, slice_offsets=offsets)
    onnx.save(model, str(out))
    model_metadata.embed(out, inflated)
    return inflated
