"""Analyse: from a semantic mask to named levels, instance masks and clinical measurements.

``measure_mask(volume, label_map)`` -> :class:`SpineReport`; ``measure_path(mask, out_dir)`` reads,
measures and writes one case or a folder (``lumbarseg measure``, ``lumbarseg predict --measure``).
"""
from __future__ import annotations

from lumbarseg.analysis.batch import measure_path, measure_prediction, write_batch_csv
from lumbarseg.analysis.measurements import Thresholds
from lumbarseg.analysis.report import write_case
from lumbarseg.analysis.spine import SpineReport, analyse, measure_mask

__all__ = ["SpineReport", "Thresholds", "analyse", "measure_mask", "measure_path", "measure_prediction",
           "write_batch_csv", "write_case"]
