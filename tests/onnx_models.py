"""Tiny ONNX models for inference tests: one whose output is known exactly, one real U-Net.

The threshold model honours the whole ONNX contract (names, rank, dynamic N/H/W, softmax over
channels, embedded metadata) but computes a fixed function: each pixel goes to the class whose
centre intensity (of the normalised input) is nearest. A bright structure therefore lands in a
known class, and a test can check it lands in the right place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lumbarseg.model.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata, embed
from lumbarseg.networks.unet import UNetSpec

CLASSES = ["background", "vertebra", "disc", "canal"]
COLORS = [[0, 0, 0], [255, 196, 0], [0, 160, 255], [230, 40, 60]]
CENTRES = (0.0, 1 / 3, 2 / 3, 1.0)  # normalised intensity of each class's "ideal" voxel


def tiny_metadata(spacing: Sequence[float] = (1.0, 1.0), label_values: Optional[Sequence[int]] = None,
                  depth: int = 2, in_channels: int = 1, **extra) -> ModelMetadata:
    spec = UNetSpec(in_channels=in_channels, num_classes=len(CLASSES), depth=depth, base_filters=2)
    return ModelMetadata(classes=list(CLASSES), colors=[list(c) for c in COLORS], architecture=spec.to_dict(),
                         spacing=list(spacing), input_size=[16, 16], label_values=list(label_values or []), **extra)


def threshold_model(path: Path, metadata: Optional[ModelMetadata] = None, sharpness: float = 200.0,
                    channel: int = 0) -> Path:
    """probabilities = softmax_c(-sharpness * (image[channel] - centre_c)^2): nearest-centre classification of one
    input channel (a 2.5D ``metadata`` has several: the model then sees only that neighbour)."""
    metadata = metadata or tiny_metadata()
    centres = numpy_helper.from_array(np.array(CENTRES, np.float32).reshape(1, -1, 1, 1), "centres")
    scale = numpy_helper.from_array(np.array(-sharpness, np.float32), "scale")
    pick = numpy_helper.from_array(np.array([channel], np.int64), "pick")
    nodes = [
        helper.make_node("Gather", [INPUT_NAME, "pick"], ["picked"], axis=1),
        helper.make_node("Sub", ["picked", "centres"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("Mul", ["sq", "scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "threshold",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", metadata.spec.in_channels, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(CLASSES), "H", "W"])],
        initializer=[centres, scale, pick],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    embed(path, metadata)
    return path


def unet_model(path: Path, spec: UNetSpec, metadata: ModelMetadata) -> Path:
    """A freshly initialised U-Net exported by the real torch engine (needs torch)."""
    from lumbarseg.engines.base import get_engine

    get_engine("torch")(spec).export_onnx(path)
    embed(path, metadata)
    return path
