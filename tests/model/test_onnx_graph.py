"""ONNX graph surgery shared by the engines, tested without any engine: EDDL's export made to meet the
contract, PyTorch's export made plain, and weights read by structure."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lumbarseg.errors import LumbarsegError
from lumbarseg.model.onnx_graph import ONNX_OPSET, RESIZE_ROI, contract_graph, plain_graph, read_unet_weights
from lumbarseg.networks.unet import UNetSpec


def _model(nodes, inits, inputs, outputs, opset=11):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_eddl_export_becomes_the_contract_with_dropout_folded_into_the_next_conv():
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(2, 1, 3, 3)).astype(np.float32), rng.normal(size=(3, 2, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["in", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Dropout", ["c1"], ["d1"]),
             helper.make_node("Conv", ["d1", "w2"], ["c2"]),
             helper.make_node("Softmax", ["c2"], ["out"])]
    model = _model(nodes, {"w1": w1, "w2": w2}, [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1, 1, 8, 8])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])
    spec = UNetSpec(num_classes=3, dropout=0.25)
    fixed = onnx.load_from_string(contract_graph(model.SerializeToString(), spec))
    graph = fixed.graph
    assert [n.op_type for n in graph.node] == ["Conv", "Conv", "Softmax"]
    assert graph.node[1].input[0] == "c1" and graph.node[0].input[0] == "image"
    softmax = graph.node[-1]
    assert softmax.output[0] == "probabilities" and helper.get_attribute_value(softmax.attribute[0]) == 1
    scaled = {i.name: numpy_helper.to_array(i) for i in graph.initializer}["w2"]
    np.testing.assert_allclose(scaled, w2 * 0.75, rtol=1e-6)
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["N", 1, "H", "W"]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == ["N", 3, "H", "W"]
    assert {o.version for o in fixed.opset_import if o.domain in ("", "ai.onnx")} == {ONNX_OPSET}
    bad = _model([helper.make_node("Relu", ["in"], ["out"])], {}, model.graph.input, model.graph.output)
    with pytest.raises(LumbarsegError, match="end in Softmax"):
        contract_graph(bad.SerializeToString(), spec)


def test_plain_graph_has_initializers_a_resize_roi_and_no_identity():
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [helper.make_node("Constant", [], ["scales"], value=scales),
             helper.make_node("Identity", ["image"], ["x"]),
             helper.make_node("Resize", ["x", "", "scales"], ["probabilities"], mode="nearest")]
    model = _model(nodes, {}, [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 1, 8, 8])], opset=13)
    graph = onnx.load_from_string(plain_graph(model.SerializeToString())).graph
    assert [n.op_type for n in graph.node] == ["Resize"]
    resize = graph.node[0]
    assert resize.input[0] == "image"
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    np.testing.assert_array_equal(inits[resize.input[1]], RESIZE_ROI)
    np.testing.assert_array_equal(inits["scales"], [1, 1, 2, 2])


def test_weights_of_another_network_are_refused(tmp_path):
    w = np.zeros((2, 1, 3, 3), np.float32)
    model = _model([helper.make_node("Conv", ["image", "w"], ["probabilities"])], {"w": w},
                   [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2, 2, 2])])
    onnx.save(model, str(tmp_path / "one_conv.onnx"))
    with pytest.raises(LumbarsegError, match="one_conv.onnx: graph has 1 Conv and 0 BatchNormalization"):
        read_unet_weights(tmp_path / "one_conv.onnx", UNetSpec(depth=1, base_filters=2))
