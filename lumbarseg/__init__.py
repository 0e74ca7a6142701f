"""lumbarseg: semantic segmentation of the lumbar spine on sagittal MRI.

The data flow mirrors the subpackages: ``io`` (volumes and geometry, cases) -> ``data`` (DeepHealth
Dataset YAML, builders, loader) -> ``transforms`` (ECVL-named augmentations) -> ``networks`` (the
U-Net as data) -> ``engines`` (EDDL and PyTorch behind one interface) -> ``model`` (the ONNX
contract) -> ``training`` -> ``inference`` (predict, batch) -> ``evaluation`` (metrics and reports).
Importing this package needs no engine.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "predict"]


def __getattr__(name: str):  # PEP 562: keep `import lumbarseg` instant
    if name == "predict":
        from lumbarseg.inference.predict import predict

        return predict
    raise AttributeError(f"module 'lumbarseg' has no attribute {name!r}")
