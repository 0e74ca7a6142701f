"""Patient-level splits: deterministic for a given set of patients and seed, never by slice.

Patients are sorted (numbers numerically), shuffled with ``random.Random(seed)`` and cut by the
fractions; every split with a non-zero fraction gets at least one patient when there are enough
patients. Patients named explicitly for a split go there; the others are shared among the
remaining splits by their fractions. A split that gets no patient is left out of the dataset.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple, Union

from lumbarseg.errors import LumbarsegError

SPLITS = ("training", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class SplitSpec:
    """How patients are split: fractions for (training, validation, test), a seed, and patients fixed to a split.

    Attributes:
        fractions: the shares of (training, validation, test), non-negative with a positive sum.
        seed: the seed of the patients' shuffle.
        fixed: split name -> patient ids placed there; the other patients share the remaining fractions.
    """

    fractions: Tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0
    fixed: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.fractions) != len(SPLITS) or any(f < 0 for f in self.fractions) or sum(self.fractions) <= 0:
            raise LumbarsegError("--split", f"need {len(SPLITS)} non-negative fractions with a positive sum, "
                                            f"got {tuple(self.fractions)}")
        for name in self.fixed:
            if name not in SPLITS:
                raise LumbarsegError("split", f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")


def parse_fractions(text: str) -> Tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or ``"8,1,1"``; missing trailing values are 0) -> normalised fractions."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LumbarsegError("--split", f"{text!r} is not a list of numbers like 0.8,0.1,0.1") from None
    if not 1 <= len(values) <= len(SPLITS) or any(v < 0 for v in values) or sum(values) <= 0:
        raise LumbarsegError("--split", f"{text!r}: give 1 to 3 non-negative fractions (training,validation,test)")
    values += [0.0] * (len(SPLITS) - len(values))
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def parse_patient_list(text: str) -> Tuple[str, ...]:
    """``"11,22"`` -> ``("11", "22")``."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def natural_key(text: str) -> List[Union[int, str]]:
    """Sort key that orders ``2`` before ``10`` (and ``p2`` before ``p10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _counts(n: int, weights: Sequence[float]) -> List[int]:
    total = sum(weights)
    bounds = [0]
    cumulative = 0.0
    for w in weights:
        cumulative += w
        bounds.append(int(round(cumulative / total * n)))
    counts = [b - a for a, b in zip(bounds, bounds[1:])]
    wanted = [i for i, w in enumerate(weights) if w > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def split_patients(patients: Sequence[str], spec: SplitSpec) -> Dict[str, List[str]]:
    """Patients per split, in ``SPLITS`` order, sorted within a split; empty splits are omitted."""
    ordered = sorted(set(patients), key=natural_key)
    known = set(ordered)
    assigned: Dict[str, str] = {}
    for name, fixed in spec.fixed.items():
        for patient in fixed:
            if patient not in known:
                raise LumbarsegError(f"{name} patients", f"patient {patient!r} is not in the dataset")
            if patient in assigned:
                raise LumbarsegError(f"{name} patients", f"patient {patient!r} is also given for {assigned[patient]}")
            assigned[patient] = name
    free = [name for name, fraction in zip(SPLITS, spec.fractions) if name not in spec.fixed and fraction > 0]
    remaining = [p for p in ordered if p not in assigned]
    if remaining and not free:
        shown = ", ".join(remaining[:5])
        raise LumbarsegError("split", f"patients {shown} belong to no split (give a fraction to a split "
                                      "without an explicit patient list)")
    random.Random(spec.seed).shuffle(remaining)
    weights = [spec.fractions[SPLITS.index(name)] for name in free]
    start = 0
    for name, count in zip(free, _counts(len(remaining), weights) if free else []):
        for patient in remaining[start:start + count]:
            assigned[patient] = name
        start += count
    out = {name: sorted((p for p, s in assigned.items() if s == name), key=natural_key) for name in SPLITS}
    return {name: members for name, members in out.items() if members}
