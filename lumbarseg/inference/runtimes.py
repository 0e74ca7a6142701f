"""Runtimes that execute a lumbarseg ONNX model: onnxruntime (default), or an engine loading the ONNX.

Every runtime maps float32 images (N, C_in, H, W) to class probabilities (N, C, H, W).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from lumbarseg.engines.registry import RUNTIMES, Device, get_engine, parse_device
from lumbarseg.errors import LumbarsegError
from lumbarseg.model import metadata as model_metadata
from lumbarseg.model.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata


class Runtime:
    """A loaded model: ``predict(images) -> probabilities``."""

    def __init__(self, path: Path, metadata: ModelMetadata) -> None:
        self.path = path
        self.metadata = metadata

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(self.predict(np.ascontiguousarray(images, dtype=np.float32)), dtype=np.float32)
        expected = (images.shape[0], len(self.metadata.classes), *images.shape[2:])
        if probabilities.shape != expected:
            raise LumbarsegError(self.path, f"model output has shape {probabilities.shape}, expected {expected}")
        if not np.isfinite(probabilities).all():  # NaN would argmax to background: a silent empty mask
            bad = int(probabilities.size - np.count_nonzero(np.isfinite(probabilities)))
            raise LumbarsegError(self.path, f"model output holds {bad} NaN/Inf values of {probabilities.size} "
                                            "(broken weights, or an input far outside the training range)")
        return probabilities


def onnx_session(path: Path, device: Device, threads: Optional[int] = None) -> Any:
    """An onnxruntime InferenceSession of the model at ``path``; the CUDA execution provider for ``cuda``."""
    import onnxruntime as ort

    if device.kind == "fpga":
        raise LumbarsegError("--device", "fpga runs through the EDDL runtime (--runtime eddl)")
    providers: List[Any] = ["CPUExecutionProvider"]
    if device.kind == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise LumbarsegError("--device", "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.ids[0] if device.ids else 0}))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise LumbarsegError(path, f"onnxruntime cannot load the model ({detail})") from None


class OnnxRuntime(Runtime):
    """onnxruntime; the CUDA execution provider for ``cuda`` devices (``session``: one already opened)."""

    def __init__(self, path: Path, metadata: ModelMetadata, device: Device, threads: Optional[int] = None,
                 session: Any = None) -> None:
        super().__init__(path, metadata)
        self.session = session if session is not None else onnx_session(path, device, threads)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise LumbarsegError(path, f"graph must map '{INPUT_NAME}' -> '{OUTPUT_NAME}', has {inputs} -> {outputs}")
        channels = self.session.get_outputs()[outputs.index(OUTPUT_NAME)].shape[1]
        if isinstance(channels, int) and channels != len(metadata.classes):
            raise LumbarsegError(path, f"graph outputs {channels} classes, metadata names {len(metadata.classes)}")

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


class EngineRuntime(Runtime):
    """A lumbarseg engine (``torch`` or ``eddl``) whose weights are imported from the ONNX file."""

    def __init__(self, name: str, path: Path, metadata: ModelMetadata, device: Device,
                 threads: Optional[int] = None) -> None:
        super().__init__(path, metadata)
        self.engine = get_engine(name).from_onnx(path, metadata.spec, device=device, threads=threads)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.engine.predict(images)


def load_model(name: str, path: Path, device: str = "cpu",
               threads: Optional[int] = None) -> Tuple[ModelMetadata, Runtime]:
    """The model's metadata and the runtime ``name`` with the model loaded on ``device``.

    For onnxruntime the metadata comes from the session (``custom_metadata_map``), so the ``onnx`` package is
    not imported (a third of a second); on any error the file is read with ``onnx`` first, so that a model's
    own problem is reported before a runtime's, with the same messages as :func:`metadata.read`.
    """
    if name != "onnxruntime":
        metadata = model_metadata.read(path)
        return metadata, load_runtime(name, path, metadata, device, threads)
    try:
        session = onnx_session(path, parse_device(device), threads)
        metadata = model_metadata.from_properties(session.get_modelmeta().custom_metadata_map, path)
    except LumbarsegError:
        model_metadata.read(path)
        raise
    return metadata, OnnxRuntime(path, metadata, parse_device(device), threads, session=session)


def load_runtime(name: str, path: Path, metadata: ModelMetadata, device: str = "cpu",
                 threads: Optional[int] = None) -> Runtime:
    """The runtime ``name`` with the model at ``path`` loaded on ``device``."""
    parsed = parse_device(device)
    if name == "onnxruntime":
        return OnnxRuntime(path, metadata, parsed, threads)
    if name in RUNTIMES:
        return EngineRuntime(name, path, metadata, parsed, threads)
    raise LumbarsegError("--runtime", f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})")
