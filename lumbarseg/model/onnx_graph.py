"""The ONNX graph of a U-Net, for every engine: its weights read by structure, and the clean-ups that
make each engine's export meet the contract (:mod:`lumbarseg.model.metadata`) and EDDL's importer.

Weights are matched by structure, not by name (EDDL names tensors its own way): the graph's Conv and
BatchNormalization nodes, in topological order, are the network's convs and BNs in the forward order of
:meth:`lumbarseg.networks.unet.Architecture.layers`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.model.metadata import INPUT_NAME, OUTPUT_NAME
from lumbarseg.networks.unet import UNetSpec

ONNX_OPSET = 13  # Softmax over one axis (the channels); opset 11's flattens C*H*W
# Resize's unused roi as EDDL itself writes it (the whole input): EDDL's importer deletes empty ("")
# inputs and would then read the scales as input 2, and an omitted roi crashes it in protobuf.
RESIZE_ROI = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)


def read_unet_weights(path: Path, spec: UNetSpec) -> List[List[np.ndarray]]:
    """The conv/BN weights of any ONNX U-Net of ``spec``, per layer of ``spec.architecture().layers()``:
    conv [weight(, bias)] (a bias only where the architecture has one), BN [scale, shift, mean, var].

    A conv bias in front of a BN (EDDL may write zeros) is folded into the BN's mean.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise LumbarsegError(path, "no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise LumbarsegError(path, f"not a readable ONNX model ({type(exc).__name__})") from None
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def const(name: str, what: str) -> np.ndarray:
        if name not in constants:
            raise LumbarsegError(path, f"{what} {name!r} is not a constant in the graph")
        return np.asarray(constants[name], dtype=np.float32)

    found: List[Tuple[str, List[np.ndarray]]] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            found.append(("conv", [const(n, "Conv weight") for n in node.input[1:] if n]))
        elif node.op_type == "BatchNormalization":
            found.append(("bn", [const(n, "BatchNormalization parameter") for n in node.input[1:5]]))
    architecture = spec.architecture()
    expected = architecture.layers()
    kinds = [kind for kind, _ in found]
    if kinds != [kind for kind, _ in expected]:
        raise LumbarsegError(path, f"graph has {kinds.count('conv')} Conv and {kinds.count('bn')} "
                                   f"BatchNormalization layers in an order that is not the U-Net of {spec}")
    weights: List[List[np.ndarray]] = []
    pending_bias: Optional[np.ndarray] = None
    for n, ((kind, arrays), (_, shape)) in enumerate(zip(found, expected)):
        if any(tuple(a.shape) != (shape if i == 0 else shape[:1]) for i, a in enumerate(arrays)):
            raise LumbarsegError(path, f"{kind} layer {n} has shape {tuple(arrays[0].shape)}, the U-Net of "
                                       f"{spec} needs {shape}")
        if kind == "conv":
            bias = arrays[1] if len(arrays) > 1 else None
            if architecture.has_bias(n):
                weights.append([arrays[0], bias if bias is not None else np.zeros(shape[0], np.float32)])
                pending_bias = None
            else:
                weights.append([arrays[0]])
                pending_bias = bias
        else:
            scale, shift, mean, var = arrays
            if pending_bias is not None:
                mean = mean - pending_bias
            weights.append([scale, shift, mean, var])
            pending_bias = None
    return weights


def plain_graph(data: bytes) -> bytes:
    """PyTorch's export made plain: Constant nodes (the Resize scales) become initializers, where every
    importer looks; the Identity left by an inference-mode Dropout is dropped; Resize gets a real roi."""
    import onnx

    model = onnx.load_from_string(data)
    graph = model.graph
    _give_resize_roi(graph)
    outputs = {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Identity" and n.output[0] not in outputs]:
        _bypass(graph, node)
    constants = [n for n in graph.node if n.op_type == "Constant" and len(n.attribute) == 1
                 and n.attribute[0].name == "value"]
    for node in constants:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
    return model.SerializeToString()


def contract_graph(data: bytes, spec: UNetSpec) -> bytes:
    """EDDL's exported graph -> the contract: input ``image``, output ``probabilities`` = Softmax(axis=1)
    at opset 13 (EDDL declares opset 11, where a Softmax flattens C*H*W), N/H/W dynamic, no Dropout (its
    inference scale, EDDL's, moves into the next conv)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    old_input, old_output = graph.input[0].name, graph.output[0].name
    producer = next(n for n in graph.node if old_output in n.output)
    if producer.op_type != "Softmax":
        raise LumbarsegError("eddl export", f"expected the graph to end in Softmax, found {producer.op_type}")
    logits = producer.input[0]
    graph.node.remove(producer)
    initializers = {init.name: init for init in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "Dropout"]:
        for reader in _bypass(graph, node):
            if reader.op_type == "Conv":
                weight = initializers[reader.input[1]]
                weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * (1 - spec.dropout),
                                                        weight.name))
    for node in graph.node:
        node.input[:] = [INPUT_NAME if name == old_input else name for name in node.input]
    graph.node.append(helper.make_node("Softmax", [logits], [OUTPUT_NAME], axis=1, name="probabilities_softmax"))
    graph.input[0].name = INPUT_NAME
    del graph.value_info[:]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                                      ["N", spec.num_classes, "H", "W"]))
    dims = graph.input[0].type.tensor_type.shape.dim
    for index, name in ((0, "N"), (2, "H"), (3, "W")):
        dims[index].Clear()
        dims[index].dim_param = name
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = ONNX_OPSET
    model.ir_version = max(model.ir_version, 7)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _give_resize_roi(graph: Any) -> None:
    """Every Resize whose roi input is omitted ('') reads :data:`RESIZE_ROI` instead."""
    from onnx import numpy_helper

    for number, node in enumerate(n for n in graph.node if n.op_type == "Resize"):
        if len(node.input) > 1 and not node.input[1]:
            roi = numpy_helper.from_array(RESIZE_ROI, f"resize_roi_{number}")
            graph.initializer.append(roi)
            node.input[1] = roi.name


def _bypass(graph: Any, node: Any) -> List[Any]:
    """Remove a one-input pass-through node, its readers reading its input instead; returns the readers."""
    source, target = node.input[0], node.output[0]
    graph.node.remove(node)
    readers: Dict[int, Any] = {}
    for other in graph.node:
        if target in other.input:
            other.input[:] = [source if name == target else name for name in other.input]
            readers[id(other)] = other
    return list(readers.values())
