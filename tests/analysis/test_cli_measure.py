"""`lumbarseg measure` and `lumbarseg predict --measure` end to end on the shipped SPIDER sample and on phantoms."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from phantoms import orient
from test_measure_phantoms import straight

from lumbarseg.cli import main
from lumbarseg.io.readers import read_volume, write_volume
from lumbarseg.labels import LabelMap

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "sample"
LUMBAR = ["T11", "T11-T12", "T12", "T12-L1", "L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5",
          "L5-S1"]


def test_measure_sample(tmp_path):
    mask, image = SAMPLE / "spider161_t2_labels.nii.gz", SAMPLE / "spider161_t2.nii.gz"
    assert main(["measure", "-i", str(mask), "-o", str(tmp_path), "--label-map", "spider-png",
                 "--image", str(image)]) == 0
    document = json.loads((tmp_path / "spider161_t2_labels_spine.json").read_text())
    names = [lv["name"] for lv in document["levels"]]
    assert names[-len(LUMBAR):] == LUMBAR  # read top to bottom, L5-S1 the lowest disc
    l3 = next(lv for lv in document["levels"] if lv["name"] == "L3")
    assert 20 < l3["measurements"]["middle_height_mm"] < 32 and 30 < l3["measurements"]["depth_mm"] < 55
    assert 8 < l3["measurements"]["canal_ap_mm"] < 20
    disc = next(lv for lv in document["levels"] if lv["name"] == "L3-L4")
    assert 4 < disc["measurements"]["middle_height_mm"] < 16 and 0.1 < disc["measurements"]["disc_height_index"] < 1
    assert -20 < document["alignment"]["lordosis_deg"] < 60
    rows = list(csv.DictReader((tmp_path / "spider161_t2_labels_spine.csv").read_text().splitlines()))
    assert [r["name"] for r in rows] == names
    levels = read_volume(tmp_path / "spider161_t2_labels_levels.nii.gz")
    source = read_volume(mask)
    assert levels.shape == source.shape and np.allclose(levels.affine, source.affine)
    assert ((levels.array > 0) == (source.array > 0)).all()
    LabelMap.load("spider").to_index(levels.array)  # the levels mask reads with SPIDER's instance label map
    itk = (tmp_path / "spider161_t2_labels_levels.label.txt").read_text().splitlines()
    assert any(line.split()[0] == "201" and line.endswith('"L5-S1"') for line in itk if not line.startswith("#"))
    slicer = [line.split() for line in (tmp_path / "spider161_t2_labels_levels.ctbl").read_text().splitlines()
              if not line.startswith("#")]
    assert slicer[1][:2] == ["1", "L5"] and all(len(row) == 6 for row in slicer)
    assert (tmp_path / "spider161_t2_labels_spine.png").stat().st_size > 10_000


def test_batch_folder_and_overwrite(tmp_path, capsys):
    phantom = straight((2.0, 0.5, 1.0))
    array, _ = phantom.build()
    for name, orientation in (("a", "RIP"), ("b", "LAS")):
        write_volume(orient(array, phantom.spacing, orientation), tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert main(["measure", "-i", str(tmp_path / "in"), "-o", str(out)]) == 0
    rows = list(csv.DictReader((out / "spine.csv").read_text().splitlines()))
    assert {r["case"] for r in rows} == {"a", "b"}
    a = [(r["name"], r["middle_height_mm"]) for r in rows if r["case"] == "a"]
    b = [(r["name"], r["middle_height_mm"]) for r in rows if r["case"] == "b"]
    assert a == b  # the same spine stored in two orientations
    assert main(["measure", "-i", str(tmp_path / "in"), "-o", str(out)]) == 2
    assert "output exists (use --overwrite)" in capsys.readouterr().err
    assert main(["measure", "-i", str(tmp_path / "in"), "-o", str(out), "--overwrite"]) == 0


@pytest.mark.slow
def test_predict_measure(tmp_path):
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", "-i", str(SAMPLE / "spider161_t2.nii.gz"), "-o", str(out), "--measure"]) == 0
    document = json.loads((tmp_path / "seg_spine.json").read_text())
    assert [lv["name"] for lv in document["levels"]][-len(LUMBAR):] == LUMBAR
    assert (tmp_path / "seg_levels.nii.gz").is_file() and (tmp_path / "seg_spine.png").is_file()
