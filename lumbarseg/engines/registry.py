"""The names users choose from: engines, runtimes and devices, written down once (no engine imported).

``get_engine`` imports an engine's module only when it is asked for by name.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Dict, Tuple

from lumbarseg.errors import LumbarsegError

# engine name -> (module, class, pip extra that installs it)
ENGINES: Dict[str, Tuple[str, str, str]] = {
    "torch": ("lumbarseg.engines.torch_engine", "TorchEngine", "torch"),
    "eddl": ("lumbarseg.engines.eddl_engine", "EddlEngine", "eddl"),
}
RUNTIMES = ("onnxruntime",) + tuple(ENGINES)  # what runs an ONNX model: onnxruntime or an engine importing it
DEVICE_KINDS = ("cpu", "cuda", "fpga")
DEVICE_HELP = "cpu, cuda, cuda:0,1 or fpga"
_DEVICE = re.compile(r"^({})(?::(\d+(?:,\d+)*))?$".format("|".join(DEVICE_KINDS)))


@dataclass(frozen=True)
class Device:
    """Where an engine runs: ``cpu``, ``cuda`` (GPU ids), or ``fpga``."""

    kind: str = "cpu"
    ids: Tuple[int, ...] = ()

    def __str__(self) -> str:
        return self.kind + (":" + ",".join(map(str, self.ids)) if self.ids else "")


def parse_device(text: str) -> Device:
    """``cpu``, ``cuda``, ``cuda:0``, ``cuda:0,1`` or ``fpga``."""
    match = _DEVICE.match(text.strip().lower())
    if not match:
        raise LumbarsegError("--device", f"unknown device {text!r} (use {DEVICE_HELP})")
    ids = tuple(int(i) for i in match.group(2).split(",")) if match.group(2) else ()
    if match.group(1) == "cuda" and not ids:
        ids = (0,)
    return Device(match.group(1), ids)


def get_engine(name: str) -> type:
    """The engine class (an ``engines.base.Engine``) by name, imported on demand; a clear error if its library
    is missing."""
    if name not in ENGINES:
        raise LumbarsegError("--engine", f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    module_name, class_name, extra = ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LumbarsegError(
            f"engine {name}", f"{exc.name or exc} is not installed (pip install 'lumbarseg[{extra}]')"
        ) from None
    return getattr(module, class_name)
