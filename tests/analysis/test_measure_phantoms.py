"""Spine reports of synthetic spines of known geometry, in several orientations and spacings.

Every measurement must come back within half a voxel (heights, depths, canal, slip) or 1 degree
(lordosis), and the levels must be named from the lowest disc (L5-S1) upwards.
"""
from __future__ import annotations

import numpy as np
import pytest
from phantoms import Element, Phantom, orient

from lumbarseg.analysis import Thresholds, measure_mask
from lumbarseg.analysis.measurements import HEIGHT_FRACTIONS
from lumbarseg.io.volume import CANONICAL, reorient

# Box edges fall on voxel edges at these spacings, so the voxel phantom holds exactly the nominal sizes.
SPACINGS = [(1.6, 0.5, 0.5), (2.0, 0.5, 1.0)]
ORIENTATIONS = ["RIP", "LAS", "SPR", "PRI"]
BODY, CRUSHED, SLIP = 25.0, 18.0, 6.0


def straight(spacing, canal=14.0) -> Phantom:
    """Boxes from L5-S1 up to a partial T11: a crushed L1, a narrow L4-L5 disc, L4 slipped 6 mm forward."""
    elements = [Element("disc", "L5-S1", 10, 10), Element("body", "L5", BODY, BODY),
                Element("disc", "L4-L5", 5, 5, slip=SLIP), Element("body", "L4", BODY, BODY),
                Element("disc", "L3-L4", 10, 10), Element("body", "L3", BODY, BODY),
                Element("disc", "L2-L3", 10, 10), Element("body", "L2", BODY, BODY),
                Element("disc", "L1-L2", 9, 9), Element("body", "L1", CRUSHED, CRUSHED),
                Element("disc", "T12-L1", 8, 8), Element("body", "T12", BODY, BODY),
                Element("disc", "T11-T12", 8, 8), Element("body", "T11", BODY, BODY)]
    rows = int(225 / spacing[1])
    # the chain starts 5 mm above the bottom edge and runs 228 mm: T11 is cut by the top edge
    return Phantom(elements, spacing, (int(34 / spacing[0]), rows, int(100 / spacing[2])), x_centre=19.0,
                   canal_diameter=canal, start=(rows * spacing[1] - 5.0 + 0.5 * spacing[1], 20.0 + 0.5 * spacing[2]))


def tolerance(spacing) -> float:
    return 0.5 * max(spacing[1:])


@pytest.fixture(scope="module", params=SPACINGS, ids=lambda s: "x".join(map(str, s)))
def straight_case(request):
    phantom = straight(request.param)
    array, placed = phantom.build()
    return phantom, array, placed


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_levels_heights_canal_slip(straight_case, orientation):
    phantom, array, placed = straight_case
    volume = orient(array, phantom.spacing, orientation)
    assert volume.orientation == orientation
    report = measure_mask(volume, "lumbarseg", "phantom")
    names = ["T11", "T11-T12", "T12", "T12-L1", "L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5",
             "L5-S1"]
    assert report.names == names
    assert [lv.name for lv in report.levels if lv.partial] == ["T11"]
    tol = tolerance(phantom.spacing)
    for level in report.levels:
        if level.partial:
            assert "middle_height_mm" not in level.measurements
            continue
        element = placed[level.name]
        for side, fraction in HEIGHT_FRACTIONS.items():
            assert level.measurements[f"{side}_height_mm"] == pytest.approx(element.height_at(fraction), abs=tol), \
                (level.name, side)
        assert level.measurements["depth_mm"] == pytest.approx(30.0, abs=tol)
        assert level.measurements["canal_ap_mm"] == pytest.approx(14.0, abs=tol), level.name
        assert not [f for f in level.flags if "stenosis" in f]
    # mid-sagittal planes are found from the mask (x centre 19 mm), not taken as the middle slice
    canonical, _ = reorient(volume, CANONICAL)
    assert {lv.slice for lv in report.levels} == {int(round(19.0 / phantom.spacing[0]))}
    l4 = report.level("L4")
    assert l4.measurements["listhesis_mm"] == pytest.approx(SLIP, abs=tol)
    assert l4.measurements["listhesis_pct"] == pytest.approx(100 * SLIP / 30.0, abs=100 * tol / 30.0)
    assert l4.measurements["meyerding_grade"] == 1 and "anterolisthesis_grade_1" in l4.flags
    for name in ("L3", "L2", "T12"):
        assert report.level(name).measurements["listhesis_mm"] == pytest.approx(0.0, abs=tol)
    l1 = report.level("L1")
    assert l1.measurements["genant_grade"] == 2 and any("crush" in f for f in l1.flags)
    assert l1.measurements["height_loss_pct"] == pytest.approx(100 * (1 - CRUSHED / BODY), abs=100 * 2 * tol / BODY)
    assert report.level("L3").measurements["genant_grade"] == 0
    dhi = report.level("L4-L5").measurements["disc_height_index"]
    assert dhi == pytest.approx(5.0 / BODY, abs=2 * tol / BODY)
    assert report.level("L1-L2").measurements["disc_height_index"] == pytest.approx(9.0 / ((BODY + CRUSHED) / 2),
                                                                                      abs=2 * tol / CRUSHED)
    assert report.alignment["lordosis_deg"] == pytest.approx(0.0, abs=1.0)


def test_levels_volume_in_input_grid(straight_case):
    phantom, array, _ = straight_case
    volume = orient(array, phantom.spacing, "LAS")
    report = measure_mask(volume, "lumbarseg", "phantom")
    levels = report.levels_volume
    assert levels.shape == volume.shape and np.allclose(levels.affine, volume.affine)
    values = levels.array
    assert ((values > 0) == (volume.array > 0)).all()  # every labelled voxel keeps a level, nothing else does
    assert set(np.unique(values[volume.array == 2])) == {201, 202, 203, 204, 205, 206, 207}
    assert set(np.unique(values[volume.array == 1])) == {1, 2, 3, 4, 5, 6, 107}  # T11 partial: 100 + 7
    assert set(np.unique(values[volume.array == 3])) == {100}
    # each vertebra (body and posterior elements that touch the next ones) is one connected piece
    from scipy import ndimage
    for value in (1, 2, 3, 4, 5, 6):
        assert ndimage.label(values == value)[1] == 1


def test_stenosis_flags_and_thresholds():
    phantom = straight(SPACINGS[0], canal=9.0)
    array, _ = phantom.build()
    volume = orient(array, phantom.spacing, "RIP")
    report = measure_mask(volume, "lumbarseg", "narrow")
    complete = [lv for lv in report.levels if not lv.partial]
    assert all(lv.measurements["canal_ap_mm"] == pytest.approx(9.0, abs=0.25) for lv in complete)
    assert all("canal_absolute_stenosis" in lv.flags for lv in complete)
    relaxed = measure_mask(volume, "lumbarseg", "narrow", thresholds=Thresholds(canal_relative_mm=9.5,
                                                                                    canal_absolute_mm=8.0))
    assert all("canal_relative_stenosis" in lv.flags for lv in relaxed.levels if not lv.partial)


def lordotic(spacing, wedge=(12.0, 8.0), sacrum=True) -> Phantom:
    """Box bodies on wedge discs (taller in front): each disc bends the chain by atan(4/30)."""
    elements = [Element("sacrum", "S1", 30, 30)] if sacrum else []
    for upper, lower in (("L5", "S1"), ("L4", "L5"), ("L3", "L4"), ("L2", "L3"), ("L1", "L2"), ("T12", "L1")):
        elements += [Element("disc", f"{upper}-{lower}", *wedge), Element("body", upper, BODY, BODY)]
    elements.append(Element("disc", "T11-T12", *wedge))
    rows = int(260 / spacing[1])
    # the sacrum starts below the bottom edge (partial), tilted back as a lordotic sacrum is
    return Phantom(elements, spacing, (int(34 / spacing[0]), rows, int(170 / spacing[2])), x_centre=15.0,
                   canal_diameter=None, start=(rows * spacing[1] + 15.0, 70.0), angle=np.radians(-35.0))


@pytest.mark.parametrize("spacing", SPACINGS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("orientation", ["RIP", "ASL"])
def test_lordosis_and_sacrum(spacing, orientation):
    phantom = lordotic(spacing)
    array, placed = phantom.build()
    report = measure_mask(orient(array, spacing, orientation), "lumbarseg", "lordotic")
    assert report.names == ["T11-T12", "T12", "T12-L1", "L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5",
                            "L5", "L5-S1", "S1"]
    assert report.level("S1").kind == "sacrum" and report.level("S1").partial
    step = np.degrees(np.arctan2(4.0, 30.0))
    assert report.alignment["lordosis_deg"] == pytest.approx(4 * step, abs=1.0)
    assert report.alignment["lordosis_l1_s1_deg"] == pytest.approx(5 * step, abs=1.0)
    tol = tolerance(spacing)
    below = {"T12": "L1", "L1": "L2", "L2": "L3", "L3": "L4", "L4": "L5", "L5": "S1"}
    for name in ("T12", "L1", "L2", "L3", "L4", "L5"):
        level = report.level(name)
        for side in HEIGHT_FRACTIONS:
            assert level.measurements[f"{side}_height_mm"] == pytest.approx(BODY, abs=tol), (name, side)
        # each body stands on a wedge disc whose top edge is longer than 30 mm: the body above sits
        # slightly forward of the corner below (posterior-inferior vs posterior-superior corner). A slip
        # is the difference of two corners, each found within half a voxel on tilted edges: one voxel.
        upper, lower = placed[name].corners, placed[below[name]].corners
        direction = (lower[2] - lower[3]) / np.linalg.norm(lower[2] - lower[3])  # lower's superior endplate
        assert level.measurements["listhesis_mm"] == pytest.approx(float((lower[2] - upper[1]) @ direction),
                                                                    abs=2 * tol), name
        assert level.measurements["wedge_ratio"] == pytest.approx(1.0, abs=2 * tol / BODY)


def test_kyphosis_is_negative():
    phantom = lordotic(SPACINGS[0], wedge=(8.0, 12.0), sacrum=False)
    phantom.angle = np.radians(10.0)
    phantom.start = (phantom.shape[1] * SPACINGS[0][1] - 10.0, 50.0)  # the lowest disc fully in view
    array, _ = phantom.build()
    report = measure_mask(orient(array, SPACINGS[0], "RIP"), "lumbarseg", "kyphotic")
    assert report.names[-2:] == ["L5", "L5-S1"]
    assert report.alignment["lordosis_deg"] == pytest.approx(-4 * np.degrees(np.arctan2(4.0, 30.0)), abs=1.0)
    assert report.alignment["lordosis_l1_s1_deg"] is None  # no sacrum in view


def test_wedge_vertebra_is_flagged():
    spacing = SPACINGS[0]
    phantom = straight(spacing)
    phantom.elements[7] = Element("body", "L2", 15.0, BODY)  # anterior 15, posterior 25 mm
    phantom.elements[8] = Element("disc", "L1-L2", 15.0, 5.0)  # gives back the 10 mm the wedge took
    array, placed = phantom.build()
    report = measure_mask(orient(array, spacing, "RIP"), "lumbarseg", "wedge")
    l2 = report.level("L2")
    expected = placed["L2"].height_at(0.15) / placed["L2"].height_at(0.85)
    assert l2.measurements["wedge_ratio"] == pytest.approx(expected, abs=0.03)
    assert l2.measurements["genant_grade"] == 2 and any("wedge" in f for f in l2.flags)
    assert report.names[:4] == ["T11", "T11-T12", "T12", "T12-L1"]
