"""Which series of a study to segment: one documented rule, or the user's ``--series NUMBER|UID``.

The rule (the models are trained on sagittal T2-weighted MRI):

1. a study with a single image series: that series;
2. else only sagittal image series that are no localizer, hold at least 3 slices and are T2-weighted,
   or of a weighting that could not be guessed (``other``; T1 and STIR series are left out);
3. T2 before ``other``, then the most slices, then the finest in-plane pixel spacing, then the lowest
   series number.

No series fits: one error line listing what the study holds and how to choose one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from lumbarseg.errors import LumbarsegError
from lumbarseg.io.dicom.study import Series, Study

RULE = ("sagittal, T2-weighted (or of unguessed weighting), no localizer, >= 3 slices; then the most slices, the "
        "finest in-plane spacing, the lowest series number")
MIN_SLICES = 3


@dataclass(frozen=True)
class Choice:
    """The series to segment and why, in words a person reads in one line."""

    series: Series
    reason: str

    def line(self, source: str) -> str:
        return f"{source}: series {self.series.summary()}: {self.reason}"


def listing(study: Study, limit: int = 8) -> str:
    """``1 "loc" (mixed other, 3 slices), 2 "t2_tse_sag" (sagittal T2, 15 slices), ...``."""
    shown = ", ".join(s.summary() for s in study.series[:limit])
    return shown + (f", ... ({len(study.series)} series)" if len(study.series) > limit else "")


def _spacing(series: Series) -> float:
    return sum(series.pixel_spacing) / 2 if series.pixel_spacing else float("inf")


def _rank(series: Series) -> Tuple[int, int, float, int]:
    return (series.weighting != "T2", -series.slices, _spacing(series),
            series.number if series.number is not None else 1 << 30)


def candidates(study: Study) -> List[Series]:
    """The series the rule may choose, best first."""
    fits = [s for s in study.series if s.is_image and s.plane == "sagittal" and not s.localizer
            and s.slices >= MIN_SLICES and s.weighting in ("T2", "other")]
    return sorted(fits, key=_rank)


def _why(best: Series, others: List[Series]) -> str:
    kind = "sagittal T2" if best.weighting == "T2" else "sagittal (weighting not guessed)"
    rivals = [s for s in others if s.weighting == best.weighting]
    if not rivals:
        return f"the only {kind} series" if not others else f"the {kind} series (T2 first)"
    runner = rivals[0]
    if runner.slices != best.slices:
        return f"the {kind} series with the most slices"
    if _spacing(runner) != _spacing(best):
        return f"the {kind} series with the finest in-plane spacing"
    return f"the {kind} series with the lowest number among equals"


def choose(study: Study, key: Optional[str] = None, source: str = "") -> Choice:
    """The series to segment: ``key`` (a series number or SeriesInstanceUID) if given, else by the rule."""
    source = source or str(study.folder)
    images = [s for s in study.series if s.is_image]
    if key:
        chosen = study.find(str(key))
        if chosen is None:
            raise LumbarsegError(source, f"--series {key}: no such series number or UID; the study holds: "
                                         f"{listing(study)}")
        if not chosen.is_image:
            raise LumbarsegError(source, f"--series {key}: {chosen.summary()} is not an image series")
        return Choice(chosen, "chosen with --series")
    if len(images) == 1:
        return Choice(images[0], "the study's only image series")
    fits = candidates(study)
    if not fits:
        what = listing(study) if study.series else "no series"
        raise LumbarsegError(source, f"no series to segment (the rule wants {RULE}); the study holds: {what}; "
                                     "choose one with --series NUMBER|UID")
    return Choice(fits[0], _why(fits[0], fits[1:]))
