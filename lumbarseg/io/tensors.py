"""The checkpoint file format of both engines: safetensors, which cannot execute code when read.

One file: the tensors (numpy arrays) in safetensors, and everything else (format tag, network spec,
optimiser scalars, RNG states, ...) as JSON in the safetensors header under ``lumbarseg``. The JSON
keeps what plain JSON loses, so a state round-trips exactly (resume stays bit-identical): an array
becomes ``{"__tensor__": KEY}``, a tuple ``{"__tuple__": [...]}``, a dict with non-string keys
``{"__items__": [[key, value], ...]}``.

Checkpoints written before this format (PyTorch pickles, EDDL ``bin`` files) are recognised by
:func:`kind` so engines can read them the old, code-free way (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import atomic_path

PathLike = Union[str, Path]
META_KEY = "lumbarseg"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own header limit


def _encode(value: Any, tensors: Dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = value if value.flags.c_contiguous else np.array(value, order="C")  # keeps 0-d shapes
        return {"__tensor__": key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not ({"__tensor__", "__tuple__", "__items__"} & set(value)):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def _decode(value: Any, tensors: Dict[str, np.ndarray], source: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, source) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            if value["__tensor__"] not in tensors:
                raise LumbarsegError(source, f"checkpoint names a missing tensor {value['__tensor__']!r}")
            return tensors[value["__tensor__"]]
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, tensors, source) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {_decode(k, tensors, source): _decode(v, tensors, source) for k, v in value["__items__"]}
        return {k: _decode(v, tensors, source) for k, v in value.items()}
    return value


def save(path: PathLike, state: Dict[str, Any]) -> None:
    """Write ``state`` (JSON values, tuples, numpy arrays, nested) as one safetensors file, atomically."""
    from safetensors.numpy import save_file

    tensors: Dict[str, np.ndarray] = {}
    document = json.dumps(_encode(state, tensors), separators=(",", ":"))
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: document})


def kind(path: PathLike) -> str:
    """``safetensors``, ``zip`` (a PyTorch archive), ``pickle`` (an old PyTorch file) or ``other``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9:
        size = struct.unpack("<Q", head[:8])[0]
        if 0 < size <= _MAX_HEADER and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


def load(path: PathLike) -> Dict[str, Any]:
    """The state :func:`save` wrote; a clear error for anything else (nothing in the file is executed)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            tensors: Dict[str, np.ndarray] = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        document = json.loads(metadata[META_KEY])
    except KeyError:
        raise LumbarsegError(path, "safetensors file without lumbarseg checkpoint state") from None
    except Exception as exc:  # safetensors raises its own error type for malformed files
        raise LumbarsegError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    state = _decode(document, tensors, str(path))
    if not isinstance(state, dict):
        raise LumbarsegError(path, "not a lumbarseg checkpoint")
    return state

