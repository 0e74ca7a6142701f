"""`evaluate` per level: Dice per level, measurement differences, and level names against SPIDER instance labels."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from phantoms import DISC, Element, Phantom
from test_measure_phantoms import straight

from lumbarseg.analysis.compare import agreement
from lumbarseg.evaluation.evaluate import evaluate_folders
from lumbarseg.io.readers import write_volume
from lumbarseg.io.volume import Volume, affine_from_spacing

SPACING = (1.6, 0.5, 0.5)
# SPIDER's original numbering: vertebrae from the bottom (L5 = 1), + 100 when partial; discs 200 + the
# vertebra above; canal 100 (the straight phantom's T11 is cut by the top of the view)
SPIDER = {"L5": 1, "L4": 2, "L3": 3, "L2": 4, "L1": 5, "T12": 6, "T11": 107, "L5-S1": 201, "L4-L5": 202,
          "L3-L4": 203, "L2-L3": 204, "L1-L2": 205, "T12-L1": 206, "T11-T12": 207, "canal": 100}


@pytest.fixture(scope="module")
def phantom():
    return straight(SPACING)


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(array.astype(np.uint8), affine_from_spacing(SPACING, "RIP")), path)
    return path


def run(tmp_path, prediction, truth):
    pred = write(tmp_path / "pred" / "case.nii.gz", prediction)
    gt = write(tmp_path / "gt" / "case.nii.gz", truth)
    evaluate_folders(pred, gt, tmp_path / "report", label_map="spider", pred_label_map="lumbarseg", progress=False)
    return json.loads((tmp_path / "report" / "levels.json").read_text())


def test_identical_masks_agree_level_by_level(tmp_path, phantom):
    classes, _ = phantom.build()
    instances, _ = phantom.build(SPIDER)
    summary = run(tmp_path, classes, instances)
    case = summary["per_case"]["case"]
    assert case["same_names"] and summary["same_complete_level_count"] == 1
    assert set(case["level_dice"]) == {k for k in SPIDER if k != "canal"}
    assert all(v > 0.99 for v in case["level_dice"].values())
    assert all(e["mad"] == pytest.approx(0.0, abs=1e-6) for e in summary["agreement"])
    assert summary["name_agreement"]["prediction"] == {"agree": 14, "levels": 14, "fraction": 1.0}
    assert "## Levels" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")


def test_names_disagree_when_the_expert_counts_differently(tmp_path, phantom):
    """An expert who saw a sixth lumbar vertebra numbers every level one higher: no name agrees."""
    classes, _ = phantom.build()
    shifted = {k: (v + 1 if k != "canal" else v) for k, v in SPIDER.items()}
    instances, _ = phantom.build(shifted)
    summary = run(tmp_path, classes, instances)
    assert summary["name_agreement"]["prediction"]["agree"] == 0
    assert "L5->L4" in summary["per_case"]["case"]["names_vs_expert_instances"]["prediction"]["mismatches"]


def test_a_thinner_disc_shows_in_the_differences(tmp_path, phantom):
    classes, placed = phantom.build()
    instances, _ = phantom.build(SPIDER)
    thinner = Phantom([Element(e.kind, e.name, e.anterior, e.posterior, e.slip) for e in phantom.elements],
                      phantom.spacing, phantom.shape, phantom.x_centre, phantom.canal_diameter, phantom.start)
    thinner.elements[4] = Element("disc", "L3-L4", 9.0, 9.0)  # 1 mm thinner: everything above moves down 1 mm
    prediction, _ = thinner.build()
    summary = run(tmp_path, prediction, instances)
    rows = list(csv.DictReader((tmp_path / "report" / "levels.csv").read_text().splitlines()))
    disc = {r["measurement"]: float(r["difference"]) for r in rows if r["level"] == "L3-L4"}
    assert disc["middle_height_mm"] == pytest.approx(-1.0, abs=0.25)
    others = [float(r["difference"]) for r in rows if r["level"] == "L2-L3" and r["measurement"] == "middle_height_mm"]
    assert others == [pytest.approx(0.0, abs=0.25)]
    assert summary["per_case"]["case"]["level_dice"]["L3-L4"] < 0.95
    assert (prediction == DISC).sum() < (classes == DISC).sum()


def test_agreement_statistics():
    rows = [{"kind": "disc", "measurement": "m", "difference": d} for d in (1.0, -1.0, 2.0, 2.0)]
    (entry,) = agreement(rows)
    sd = np.std([1.0, -1.0, 2.0, 2.0], ddof=1)
    assert entry["mad"] == 1.5 and entry["bias"] == 1.0
    assert entry["loa_low"] == pytest.approx(1.0 - 1.96 * sd) and entry["loa_high"] == pytest.approx(1.0 + 1.96 * sd)
