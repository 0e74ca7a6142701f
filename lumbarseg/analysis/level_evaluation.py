"""Per-level results for ``lumbarseg evaluate``: both masks split into levels, compared by level name.

Writes ``levels.csv`` (one row per case, level and measurement: prediction, expert, difference,
level Dice, whether either name is uncertain), ``levels.json`` (per-measurement mean absolute difference,
bias and Bland-Altman 95 % limits; level counts; each side's ``levels_confidence`` with its reasons;
level-name agreement with SPIDER instance labels when the ground truth has them) and appends a "Levels"
section to ``report.md``, which lists the cases whose level names are uncertain. A case whose masks
cannot be split into levels is listed with the reason and left out; the rest of the evaluation is
unaffected.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from lumbarseg.analysis.compare import agreement, compare, level_counts, level_dice, name_agreement
from lumbarseg.analysis.spine import analyse
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.atomic import write_text
from lumbarseg.io.volume import Volume
from lumbarseg.labels import LabelMap

PathLike = Union[str, Path]
CSV_FIELDS = ["case", "level", "kind", "measurement", "prediction", "expert", "difference", "dice", "uncertain"]


def has_spider_instances(label_map: LabelMap) -> bool:
    """Does the ground truth's label map carry SPIDER's instance numbering (vertebrae 1-25, discs 201-225)?"""
    return label_map.to_mapping() == LabelMap.load("spider").to_mapping()


class LevelEvaluation:
    """Collects per-level comparisons case by case; inactive when the classes cannot make levels."""

    def __init__(self, classes: Sequence[str], instance_names: bool = False) -> None:
        self.classes = list(classes)
        self.active = "vertebra" in self.classes and "disc" in self.classes
        self.instance_names = instance_names
        self.rows: List[Dict[str, Any]] = []
        self.cases: Dict[str, Dict[str, Any]] = {}
        self.skipped: Dict[str, str] = {}

    def add(self, case: str, prediction: Volume, truth: Volume, raw_truth: Optional[np.ndarray] = None) -> None:
        """Compare one case: ``prediction`` and ``truth`` are class-index volumes in the same grid."""
        if not self.active:
            return
        try:
            expert = analyse(truth, self.classes, case)
            predicted = analyse(prediction, self.classes, case)
        except LumbarsegError as exc:
            self.skipped[case] = exc.problem
            return
        self.rows += compare(predicted, expert, case)
        dice = level_dice(predicted, expert)
        entry: Dict[str, Any] = {**level_counts(predicted, expert), "same_names": predicted.names == expert.names,
                                 "level_dice": {k: round(v, 4) for k, v in dice.items()},
                                 "levels_confidence": {"prediction": predicted.levels_confidence,
                                                       "expert_mask": expert.levels_confidence},
                                 "levels_confidence_notes": {"prediction": predicted.confidence_notes,
                                                             "expert_mask": expert.confidence_notes}}
        if self.instance_names and raw_truth is not None:
            entry["names_vs_expert_instances"] = {"prediction": name_agreement(predicted, raw_truth),
                                                  "expert_mask": name_agreement(expert, raw_truth)}
        self.cases[case] = entry

    def summary(self) -> Dict[str, Any]:
        counts = [c["prediction_complete"] == c["expert_complete"] for c in self.cases.values()]
        names: Dict[str, List[int]] = {}
        for entry in self.cases.values():
            for side, result in (entry.get("names_vs_expert_instances") or {}).items():
                if result:
                    total = names.setdefault(side, [0, 0])
                    total[0] += result["agree"]
                    total[1] += result["levels"]
        dice: Dict[str, List[float]] = {}
        for entry in self.cases.values():
            for name, value in entry["level_dice"].items():
                dice.setdefault(name, []).append(value)
        uncertain = {side: sorted(case for case, entry in self.cases.items()
                                  if entry["levels_confidence"][side] != "high")
                     for side in ("prediction", "expert_mask")}
        return {
            "cases": len(self.cases), "skipped": self.skipped, "uncertain_levels": uncertain,
            "same_complete_level_count": int(sum(counts)),
            "agreement": agreement(self.rows),
            "level_dice_mean": {k: float(np.mean(v)) for k, v in dice.items()},
            "name_agreement": {side: {"agree": a, "levels": n, "fraction": a / n} for side, (a, n) in names.items()},
            "per_case": self.cases,
        }

    def write(self, out_dir: PathLike) -> Optional[Dict[str, Any]]:
        """Write levels.csv and levels.json and append the Levels section to report.md."""
        if not self.active:
            return None
        out_dir = Path(out_dir)
        summary = self.summary()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if row.get(k) is None else (f"{row[k]:.4g}" if isinstance(row[k], float)
                                                                 else row[k])) for k in CSV_FIELDS})
        write_text(out_dir / "levels.csv", buffer.getvalue())
        write_text(out_dir / "levels.json", json.dumps(summary, indent=2) + "\n")
        report = out_dir / "report.md"
        if report.exists():
            write_text(report, report.read_text(encoding="utf-8") + markdown(summary))
        return summary


def markdown(summary: Dict[str, Any]) -> str:
    """The report's Levels section."""
    lines = ["", "## Levels (prediction vs expert, matched by level name)", "",
             f"{summary['cases']} case(s) split into levels on both sides; the same number of complete levels in "
             f"{summary['same_complete_level_count']}."]
    for case, reason in summary["skipped"].items():
        lines.append(f"- {case}: not split into levels ({reason})")
    for side, cases in summary["uncertain_levels"].items():
        for case in cases:
            notes = summary["per_case"][case]["levels_confidence_notes"][side]
            lines.append(f"- {case}: level names of the {side.replace('_', ' ')} uncertain ({'; '.join(notes)})")
    if summary["name_agreement"]:
        for side, value in summary["name_agreement"].items():
            lines.append(f"- level names from the {side.replace('_', ' ')} agree with the expert's instance labels: "
                         f"{value['agree']} of {value['levels']} ({100 * value['fraction']:.0f} %)")
    lines += ["", "| structure | measurement | n | mean abs. diff. | bias | 95 % limits of agreement |",
              "|---|---|---|---|---|---|"]
    for e in summary["agreement"]:
        lines.append(f"| {e['kind']} | {e['measurement']} | {e['n']} | {e['mad']:.2f} | {e['bias']:+.2f} | "
                     f"{e['loa_low']:+.2f} to {e['loa_high']:+.2f} |")
    if summary["level_dice_mean"]:
        lines += ["", "| level | mean Dice |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in summary["level_dice_mean"].items()]
    lines += ["", "Differences are prediction minus expert (mm, degrees or ratios); limits: bias ± 1.96 SD. "
              "Details: levels.csv, levels.json.", ""]
    return "\n".join(lines)
