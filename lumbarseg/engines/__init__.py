"""Deep-learning engines behind one interface (see ``base.Engine``).

These are the only modules that import pyeddl, pyecvl or torch, and only when an engine is
asked for by name, so ``import lumbarseg`` works with none of them installed. The package itself
imports nothing, so that ``lumbarseg.engines.registry`` (the names the CLI offers) stays instant;
the names below resolve on first use (PEP 562).
"""
from __future__ import annotations

from typing import Any

__all__ = ["DEVICE_KINDS", "ENGINES", "RUNTIMES", "Device", "Engine", "get_engine", "parse_device"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from lumbarseg.engines.base import Engine

        return Engine
    if name in __all__:
        from lumbarseg.engines import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'lumbarseg.engines' has no attribute {name!r}")
