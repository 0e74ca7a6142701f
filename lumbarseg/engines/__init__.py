"""Deep-learning engines behind one interface (see ``base.Engine``).

These are the only modules that import pyeddl, pyecvl or torch, and only when an engine is
asked for by name, so ``import lumbarseg`` works with none of them installed.
"""
from lumbarseg.engines.base import Engine
from lumbarseg.engines.registry import DEVICE_KINDS, ENGINES, RUNTIMES, Device, get_engine, parse_device

__all__ = ["DEVICE_KINDS", "ENGINES", "RUNTIMES", "Device", "Engine", "get_engine", "parse_device"]
