"""2.5D predict: each slice's channels are its neighbours at the model's slice offsets (mm), on any slice spacing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_models import threshold_model, tiny_metadata, unet_model
from volume_synth import LABELS, in_orientation, phantom_rip

import lumbarseg
from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.context import channel_batch, neighbours
from lumbarseg.model import metadata as model_metadata
from lumbarseg.model.inflate import inflate_input
from lumbarseg.networks.unet import UNetSpec


def test_neighbours_on_the_training_grid_and_on_coarser_ones():
    below, above, weight = neighbours(5, 0.9, [-1.8, 0.0, 1.8])
    np.testing.assert_array_equal(below, [[0, 0, 2], [0, 1, 3], [0, 2, 4], [1, 3, 4], [2, 4, 4]])
    assert not weight.any()  # whole slices: no blending
    below, above, weight = neighbours(4, 3.6, [-1.8, 0.0, 1.8])  # a routine 3.6 mm protocol: halfway
    np.testing.assert_array_equal(below[:, 2], [0, 1, 2, 3])
    np.testing.assert_array_equal(above[:, 2], [1, 2, 3, 3])
    np.testing.assert_allclose(weight[:3, 2], 0.5)
    assert weight[3, 2] == 0 and below[0, 0] == 0 and weight[0, 0] == 0  # edges repeat the edge slice
    stack = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    batch = channel_batch(stack, (below, above, weight), 1, 3)
    assert batch.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(batch[:, :, 0, 0], [[0.5, 1.0, 1.5], [1.5, 2.0, 2.5]])


@pytest.mark.parametrize("orientation", ["RIP", "LPS", "PIR"])
@pytest.mark.parametrize("offsets, channel, shift", [([-2.5, 0.0, 2.5], 2, 1), ([-5.0, 0.0, 5.0], 0, -2)])
def test_the_model_sees_the_neighbour_slice_in_any_orientation(tmp_path, orientation, offsets, channel, shift):
    """A model that classifies one neighbour channel only: its mask is the phantom moved by that many slices."""
    meta = tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS, in_channels=3, slice_offsets=offsets)
    model = threshold_model(tmp_path / "m.onnx", meta, channel=channel)
    classes = phantom_rip()
    moved = classes[np.clip(np.arange(classes.shape[0]) + shift, 0, classes.shape[0] - 1)]
    image, _ = in_orientation(classes, (2.5, 0.5, 0.7), orientation)
    _, expected = in_orientation(moved, (2.5, 0.5, 0.7), orientation)
    prediction = lumbarseg.predict(image, model=model, postprocess=False)
    np.testing.assert_array_equal(prediction.mask.array, np.array(LABELS, np.uint8)[expected])


def test_offsets_must_match_the_channels():
    with pytest.raises(LumbarsegError, match="one offset"):
        tiny_metadata(in_channels=3)  # the default [0.0] names one channel
    with pytest.raises(LumbarsegError, match="0 once"):
        tiny_metadata(in_channels=2, slice_offsets=[1.0, 2.0])


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch", "eddl"])
def test_an_inflated_model_predicts_what_the_2d_model_did(tmp_path: Path, runtime: str) -> None:
    pytest.importorskip("torch", reason="the torch engine exports the test U-Net")
    if runtime == "eddl":
        pytest.importorskip("pyeddl", reason="pyeddl is not installed")
    spec = UNetSpec(num_classes=4, depth=2, base_filters=4)
    meta = tiny_metadata(spacing=(0.5, 0.7), label_values=LABELS, depth=2)
    meta.architecture = spec.to_dict()
    flat = unet_model(tmp_path / "unet.onnx", spec, meta)
    inflated = tmp_path / "unet25.onnx"
    new = inflate_input(flat, inflated, [-2.0, 0.0, 2.0])
    assert new.spec.in_channels == 3 and model_metadata.read(inflated).slice_offsets == [-2.0, 0.0, 2.0]
    image, _ = in_orientation(phantom_rip((5, 24, 20)), (1.0, 0.5, 0.7), "LPS")
    reference = lumbarseg.predict(image, model=flat, probabilities=True, postprocess=False)
    other = lumbarseg.predict(image, model=inflated, runtime=runtime, probabilities=True, postprocess=False)
    np.testing.assert_allclose(other.probabilities, reference.probabilities, atol=1e-4)
    with pytest.raises(LumbarsegError, match="only a one-channel model inflates"):
        inflate_input(inflated, tmp_path / "again.onnx", [-1.0, 0.0, 1.0])
