"""Synthetic scenes for the spinal column and the level count: what a model trained on central SPIDER slices
gets wrong on routine scans (a lateral patch, a pelvic blob, a missed disc, a missed L5-S1), and how the report
says so.

Every scene is the straight phantom (L5-S1 at the bottom up to a partial T11, canal behind) in a grid wide enough
to hold far-lateral slices, with one thing changed; the right names are known.
"""
from __future__ import annotations

import numpy as np
import pytest
from phantoms import CANAL, DISC, VERTEBRA, orient
from test_measure_phantoms import straight

from lumbarseg.analysis import measure_mask
from lumbarseg.analysis.column import MIDLINE_MM, keep_column, trace
from lumbarseg.inference.postprocess import postprocess
from lumbarseg.io.intensity import no_signal

SPACING = (2.0, 1.0, 1.0)
NAMES = ["T11", "T11-T12", "T12", "T12-L1", "L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5",
         "L5-S1"]
CLASSES = ["background", "vertebra", "disc", "canal"]
CENTRE_MM = 45.0  # the spine's left-right centre in a 90 mm wide grid


def scene():
    """The straight phantom in a 90 mm wide grid: (canonical class array, placed elements)."""
    phantom = straight(SPACING)
    phantom.shape = (int(90 / SPACING[0]), *phantom.shape[1:])
    phantom.x_centre = CENTRE_MM
    return phantom.build()


def rows_of(placed, name):
    """Row indices spanned by an element (mm / spacing)."""
    r = placed[name].corners[:, 0] / SPACING[1]
    return slice(int(np.ceil(r.min())), int(np.floor(r.max())))


def slab(array, placed, name, lateral_mm, value, cols=(20, 50)):
    """Paint ``value`` in the rows of element ``name``, in the slices ``lateral_mm`` (from, to) off the centre."""
    lo, hi = (int((CENTRE_MM + x) / SPACING[0]) for x in lateral_mm)
    array[lo:hi, rows_of(placed, name), cols[0]:cols[1]] = value


def report_of(array):
    return measure_mask(orient(array, SPACING, "RIP"), "lumbarseg", "scene")


def test_clean_scene_is_certain():
    array, _ = scene()
    report = report_of(array)
    assert report.names == NAMES
    assert report.levels_confidence == "high" and report.confidence_notes == []
    assert not any(level.uncertain for level in report.levels)


def test_lateral_patch_is_no_level():
    """A disc and a bone patch 25-35 mm to the side (as in far-lateral slices of routine scans): ignored."""
    array, placed = scene()
    slab(array, placed, "L3", (25, 35), VERTEBRA)
    slab(array, placed, "L3", (25, 35), DISC, cols=(20, 35))  # a "disc" inside the patch's height
    report = report_of(array)
    assert report.names == NAMES and report.levels_confidence == "high"
    values = report.levels_volume.array
    lateral = np.zeros(array.shape, bool)
    lateral[int((CENTRE_MM + 25) / SPACING[0]):] = True
    assert not values[lateral & (array != CANAL)].any()
    assert any("off the spinal column" in note for note in report.notes)
    # prediction's post-processing removes the same patch from the mask itself
    cleaned = postprocess(array, CLASSES, spacing=SPACING)
    assert not np.isin(cleaned[lateral], (VERTEBRA, DISC)).any()
    assert (cleaned[~lateral] == array[~lateral]).all()


def test_pelvic_blob_below_the_canal_is_no_level():
    """Bone and disc in the pelvis, in front of where the canal ends: not the column."""
    array, placed = scene()
    array = np.concatenate([array, np.zeros((array.shape[0], 80, array.shape[2]), array.dtype)], axis=1)
    bottom = int(placed["L5-S1"].corners[:, 0].max() / SPACING[1])
    array[:, bottom + 10:][array[:, bottom + 10:] == CANAL] = 0  # the canal ends 10 mm under L5-S1
    centre = int(CENTRE_MM / SPACING[0])
    array[centre - 5:centre + 5, bottom + 40:bottom + 60, 10:40] = VERTEBRA
    array[centre - 5:centre + 5, bottom + 60:bottom + 66, 10:40] = DISC
    array[centre - 5:centre + 5, bottom + 66:bottom + 75, 10:40] = VERTEBRA
    report = report_of(array)
    assert report.names == NAMES and report.levels_confidence == "high"


def test_a_gap_where_a_disc_should_be():
    """The L2-L3 disc missing (a disc the model did not see): counted, and every name above it uncertain."""
    array, placed = scene()
    array[(array == DISC) & _in(array, placed, "L2-L3")] = 0
    report = report_of(array)
    assert report.names == [n for n in NAMES if n != "L2-L3"]
    assert report.levels_confidence == "uncertain"
    assert any("gap" in note for note in report.confidence_notes)
    uncertain = [level.name for level in report.levels if level.uncertain]
    assert uncertain == [n for n in NAMES[:NAMES.index("L3")] if n != "L2-L3"]  # L3 and below stay certain


def _in(array, placed, name):
    """Voxels in the rows of element ``name`` (all slices and columns)."""
    out = np.zeros(array.shape, bool)
    out[:, rows_of(placed, name)] = True
    return out


def test_missed_lumbosacral_disc():
    """No L5-S1 disc and nothing labelled under L5 (the sacrum is never labelled): the lowest body is L5."""
    array, placed = scene()
    array[(array == DISC) & _in(array, placed, "L5-S1")] = 0
    report = report_of(array)
    assert report.names == NAMES[:-1]  # L5 is the lowest level, not "S1"
    assert report.levels_confidence == "uncertain"
    assert all(level.uncertain for level in report.levels)
    assert any("L5" in note for note in report.confidence_notes)


def test_split_disc_is_one_level():
    """A disc cut in two pieces head-foot (within its own space) stays one level."""
    array, placed = scene()
    rows = rows_of(placed, "L3-L4")
    middle = (rows.start + rows.stop) // 2
    array[:, middle, :][array[:, middle, :] == DISC] = 0
    report = report_of(array)
    assert report.names == NAMES and report.levels_confidence == "high"
    assert any("taken as one disc" in note for note in report.notes)


def test_trace_follows_the_canal():
    array, _ = scene()
    column = trace(array == CANAL, SPACING)
    assert column is not None
    assert np.allclose(column.lateral_mm, CENTRE_MM, atol=SPACING[0])
    assert trace(np.zeros_like(array, bool), SPACING) is None
    core = column.core(array.shape)
    x = np.arange(array.shape[0]) * SPACING[0]
    assert not core[np.abs(x - CENTRE_MM) > MIDLINE_MM + SPACING[0]].any()
    # without a column nothing is removed
    assert keep_column(array, SPACING, VERTEBRA, DISC, None) is array


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_no_signal_is_a_fill_band(dtype):
    """A zero-filled band (a padded field of view) is no image; dark tissue at the lowest value is not, even where
    it touches the band (a black disc reaching the air by a thin path)."""
    rng = np.random.default_rng(0)
    image = rng.uniform(5, 200, (10, 60, 50)).astype(dtype)
    image[:, :, :12] = 0  # the band: 10 x 60 x 12 voxels of 1 mm = 7.2 mL
    image[3, 30, 30] = 0  # one dark voxel in tissue
    image[:, 40:43, 12:] = 0  # a dark slab 3 mm thick (a black disc, 1.1 mL) touching the band
    band = no_signal(image, (1.0, 1.0, 1.0))
    assert band[:, :, :12].all() and band.sum() == 10 * 60 * 12
    labelled = np.zeros(image.shape, bool)
    labelled[2:5, 20:30, 5:20] = True  # a model's label reaching into the band: the band there is found
    assert (no_signal(image, (1.0, 1.0, 1.0), labelled) == band)[labelled].all() and band[labelled].any()
    labelled[:, :, :12] = False  # labels only on tissue: nothing to examine
    assert not no_signal(image, (1.0, 1.0, 1.0), labelled).any()
    image[:, :, :12] = 7
    assert not no_signal(image, (1.0, 1.0, 1.0)).any()  # no band: the slab (over 1 mL, but thin) and the voxel


def test_uncertainty_reaches_every_output(tmp_path):
    """JSON, CSV, figure and evaluate's level tables all say when the names are uncertain, and which."""
    import csv
    import json

    import cv2

    from lumbarseg.analysis.report import write_case
    from lumbarseg.evaluation.evaluate import evaluate_folders
    from lumbarseg.io.readers import write_volume

    clean, placed = scene()
    missed = clean.copy()
    missed[(missed == DISC) & _in(missed, placed, "L5-S1")] = 0
    pictures = {}
    for name, array in (("clean", clean), ("missed", missed)):
        paths = write_case(report_of(array), tmp_path / name)
        document = json.loads(paths["json"].read_text())
        rows = list(csv.DictReader(paths["csv"].read_text().splitlines()))
        expected = "high" if name == "clean" else "uncertain"
        assert document["levels_confidence"] == expected
        assert bool(document["levels_confidence_notes"]) == (name == "missed")
        assert {row["levels_confidence"] for row in rows} == {expected}
        assert {row["uncertain"] for row in rows} == {"False" if name == "clean" else "True"}
        assert all(level["uncertain"] == (name == "missed") for level in document["levels"])
        pictures[name] = cv2.imread(str(paths["png"]))
    # the uncertain figure carries a red warning strip under its title: taller, with red pixels there
    assert pictures["missed"].shape[0] == pictures["clean"].shape[0] + 22
    strip = pictures["missed"][28:50].astype(int)  # BGR
    assert ((strip[..., 2] > 200) & (strip[..., 1] < 120)).any()

    write_volume(orient(missed, SPACING, "RIP"), tmp_path / "pred" / "scene.nii.gz")
    write_volume(orient(clean, SPACING, "RIP"), tmp_path / "gt" / "scene.nii.gz")
    evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "report", label_map="lumbarseg",
                     pred_label_map="lumbarseg", progress=False)
    summary = json.loads((tmp_path / "report" / "levels.json").read_text())
    assert summary["uncertain_levels"] == {"prediction": ["scene"], "expert_mask": []}
    assert summary["per_case"]["scene"]["levels_confidence"] == {"prediction": "uncertain", "expert_mask": "high"}
    rows = list(csv.DictReader((tmp_path / "report" / "levels.csv").read_text().splitlines()))
    assert rows and all(row["uncertain"] == "True" for row in rows)
    assert "level names of the prediction uncertain" in (tmp_path / "report" / "report.md").read_text()
