"""Analyse: from a semantic mask to named levels, instance masks and clinical measurements.

``measure_mask(volume, label_map)`` -> :class:`SpineReport`; ``measure_path(mask, out_dir)`` reads,
measures and writes one case or a folder (``lumbarseg measure``, ``lumbarseg predict --measure``).
The names below load on first use, so that prediction, which needs only :mod:`.column` (numpy and
cc3d), does not import scipy.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"measure_path": "batch", "measure_prediction": "batch", "write_batch_csv": "batch",
            "Thresholds": "measurements", "write_case": "report", "SpineReport": "spine", "analyse": "spine",
            "measure_mask": "spine"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
