"""evaluate: metrics against hand-computed values, the empty rule, the report, and bad input."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx_models import threshold_model, tiny_metadata

from lumbarseg.cli import main
from lumbarseg.evaluation.evaluate import evaluate_folders
from lumbarseg.evaluation.metrics import SegmentationMetrics, case_metrics, class_metrics, summarize
from lumbarseg.io.readers import write_volume
from lumbarseg.io.volume import Volume, affine_from_spacing

CLASSES = ["background", "vertebra", "disc", "canal"]


def test_dice_iou_volumes_by_hand() -> None:
    gt = np.zeros((4, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt[1:3, 2:6, 2:6] = True  # 32 voxels
    pred[1:3, 2:6, 4:8] = True  # 32 voxels, 16 shared
    m = class_metrics(pred, gt, (2.0, 0.5, 0.5))
    assert m["dice"] == pytest.approx(0.5) and m["iou"] == pytest.approx(16 / 48)
    assert m["volume_gt_ml"] == pytest.approx(32 * 0.5 / 1000) and m["volume_diff_ml"] == pytest.approx(0.0)


def test_surface_distances_use_the_spacing() -> None:
    """A block shifted by 2 columns: every surface distance is at most 2 voxels = 2 * column spacing."""
    gt = np.zeros((6, 20, 20), bool)
    gt[1:5, 5:12, 5:12] = True
    pred = np.roll(gt, 2, axis=2)
    iso = class_metrics(pred, gt, (1.0, 1.0, 1.0))
    aniso = class_metrics(pred, gt, (1.0, 1.0, 3.0))
    assert iso["hd95"] == pytest.approx(2.0)
    assert aniso["hd95"] == pytest.approx(6.0)
    assert 0 < iso["assd"] < 2.0 and aniso["assd"] == pytest.approx(3 * iso["assd"], rel=0.35)
    same = class_metrics(gt, gt, (1.0, 1.0, 1.0))
    assert same["dice"] == 1.0 and same["hd95"] == 0.0 and same["assd"] == 0.0


def test_cropping_does_not_change_distances() -> None:
    from medpy.metric import binary

    rng = np.random.RandomState(0)
    gt = np.zeros((12, 30, 30), bool)
    pred = np.zeros_like(gt)
    gt[3:9, 5:20, 8:22] = rng.rand(6, 15, 14) > 0.3
    pred[2:8, 7:22, 6:20] = rng.rand(6, 15, 14) > 0.3
    spacing = (2.0, 0.7, 0.5)
    m = class_metrics(pred, gt, spacing)
    assert m["hd95"] == pytest.approx(binary.hd95(pred, gt, voxelspacing=spacing))
    assert m["assd"] == pytest.approx(binary.assd(pred, gt, voxelspacing=spacing))


def test_empty_structure_rule() -> None:
    empty = np.zeros((3, 5, 5), bool)
    some = empty.copy()
    some[1, 2, 2] = True
    both = class_metrics(empty, empty, (1, 1, 1))
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "hd95", "assd"))
    missed = class_metrics(empty, some, (1, 1, 1))
    spurious = class_metrics(some, empty, (1, 1, 1))
    for m in (missed, spurious):
        assert m["dice"] == 0.0 and m["iou"] == 0.0 and math.isinf(m["hd95"]) and math.isinf(m["assd"])
    perfect = class_metrics(some, some, (1, 1, 1))
    rows = [{"class": "disc", **both}, {"class": "disc", **missed}, {"class": "disc", **perfect}]
    summary = summarize(rows)["disc"]
    assert summary["dice"]["n"] == 2 and summary["dice"]["n_nan"] == 1 and summary["dice"]["mean"] == 0.5
    assert summary["hd95"]["n_inf"] == 1 and summary["hd95"]["mean"] == 0.0


def test_metric_object_matches_functional_form() -> None:
    pred = np.zeros((3, 8, 8), np.uint8)
    gt = pred.copy()
    gt[1, 2:5, 2:5], pred[1, 2:5, 3:6] = 1, 1
    gt[1, 6, 6], pred[1, 6, 6] = 3, 3
    metric = SegmentationMetrics(CLASSES)
    rows = metric(pred, gt, (1, 1, 1), "c1")
    np.testing.assert_equal(rows, case_metrics(pred, gt, (1, 1, 1), CLASSES, "c1"))  # NaN == NaN here
    assert [r["class"] for r in rows] == CLASSES[1:]
    assert metric.case_scores()["c1"] == pytest.approx((2 * 6 / 18 + 1.0) / 2)  # disc is NaN: left out


def _spine(shift: int = 0) -> np.ndarray:
    """Raw SPIDER-PNG values (76 vertebra, 29 disc, 150 canal) in a small RIP volume."""
    raw = np.zeros((6, 40, 30), np.uint8)
    raw[1:5, 4 + shift:12 + shift, 4:14] = 76
    raw[1:5, 14 + shift:18 + shift, 4:14] = 29
    raw[1:5, 20 + shift:28 + shift, 4:14] = 76
    raw[2:4, 2:38, 18:24] = 150
    return raw


def _write_cases(folder: Path, volumes, suffix=".nii.gz", spacing=(2.0, 0.5, 0.5)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in volumes.items():
        write_volume(Volume(raw, affine_from_spacing(spacing, "LPS" if suffix == ".mha" else "RIP")),
                     folder / f"{name}{suffix}")


def test_cli_folders_report(tmp_path: Path) -> None:
    _write_cases(tmp_path / "gt", {"a": _spine(), "b": _spine(), "c": _spine()})
    _write_cases(tmp_path / "pred", {"a": _spine(), "b": _spine(1), "c": _spine(4)})
    out = tmp_path / "report"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "-o", str(out)]) == 0
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and {r["case"] for r in rows} == {"a", "b", "c"}
    a_vertebra = next(r for r in rows if r["case"] == "a" and r["class"] == "vertebra")
    assert float(a_vertebra["dice"]) == 1.0 and float(a_vertebra["hd95"]) == 0.0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["canal"]["dice"]["mean"] == 1.0 and summary["vertebra"]["dice"]["n"] == 3
    assert summary["vertebra"]["dice"]["min"] < summary["vertebra"]["dice"]["median"] < 1.0
    report = (out / "report.md").read_text(encoding="utf-8")
    worst = report.index("## Worst cases")
    assert report.index("### c:", worst) < report.index("### a:", worst)  # c (shifted most) is worst
    for picture in ("boxplot.png", "cases/a.png", "cases/c.png"):
        assert cv2.imread(str(out / picture)) is not None
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "-o", str(out)]) == 2


def test_pred_with_its_own_label_map_and_mha(tmp_path: Path) -> None:
    raw = _spine()
    indices = np.zeros_like(raw)
    indices[raw == 76], indices[raw == 29], indices[raw == 150] = 1, 2, 3
    _write_cases(tmp_path / "gt", {"a": raw}, ".mha")
    _write_cases(tmp_path / "pred", {"a": indices}, ".mha")
    (tmp_path / "pred.yml").write_text("{vertebra: [1], disc: [2], canal: [3]}\n")
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "r", "spider-png",
                               str(tmp_path / "pred.yml"), progress=False)
    assert all(summary[c]["dice"]["mean"] == 1.0 for c in ("vertebra", "disc", "canal"))


def test_bad_inputs(tmp_path: Path, capsys) -> None:
    _write_cases(tmp_path / "gt", {"a": _spine(), "b": _spine()})
    _write_cases(tmp_path / "pred", {"a": _spine()})
    args = ["evaluate", "--gt", str(tmp_path / "gt"), "-o", str(tmp_path / "r")]
    assert main([*args, "--pred", str(tmp_path / "pred")]) == 2
    assert "no prediction for 1 ground-truth case(s): b" in capsys.readouterr().err
    _write_cases(tmp_path / "pred", {"b": _spine()[:, :, :20]})
    assert main([*args, "--pred", str(tmp_path / "pred")]) == 2
    assert "b.nii.gz: grid (6, 40, 20) differs from the ground truth" in capsys.readouterr().err
    _write_cases(tmp_path / "pred", {"b": _spine()}, spacing=(2.0, 0.5, 0.6))
    assert main([*args, "--pred", str(tmp_path / "pred")]) == 2
    assert "geometry (affine) differs" in capsys.readouterr().err
    odd = _spine()
    odd[0, 0, 0] = 7
    _write_cases(tmp_path / "pred", {"b": odd})
    assert main([*args, "--pred", str(tmp_path / "pred")]) == 2
    assert "b.nii.gz: mask values not in the label map: 7" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["evaluate", "--gt", str(tmp_path / "gt"), "-o", str(tmp_path / "r")]) == 2
    assert "give --pred and --gt, or --dataset" in capsys.readouterr().err


def test_evaluate_dataset_split(tmp_path: Path) -> None:
    """A tiny DeepHealth YAML of PNG slices (two patients) scored with the threshold model."""
    import yaml

    model = threshold_model(tmp_path / "m.onnx", tiny_metadata(spacing=(0.5, 0.5)))
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "masks").mkdir()
    entries, split = [], {"training": [], "test": []}
    intensity = {1: 85, 2: 170, 3: 255}
    for patient in ("p1", "p2"):
        raw = _spine()
        classes = np.select([raw == 76, raw == 29, raw == 150], [1, 2, 3], 0).astype(np.uint8)
        for k in range(classes.shape[0]):
            image = np.zeros(classes.shape[1:], np.uint8)
            for c, v in intensity.items():
                image[classes[k] == c] = v
            cv2.imwrite(str(tmp_path / "ds" / "images" / f"{patient}_{k}.png"), image)
            cv2.imwrite(str(tmp_path / "ds" / "masks" / f"{patient}_{k}.png"), classes[k])
            split["test"].append(len(entries))
            entries.append({"location": f"images/{patient}_{k}.png", "label": f"masks/{patient}_{k}.png",
                            "values": {"patient": patient, "slice": k}})
    split["training"] = [split["test"].pop()]
    doc = {"name": "tiny", "description": "test", "features": ["patient", "slice"], "images": entries,
           "split": split, "lumbarseg": {"classes": CLASSES, "spacing": [0.5, 0.5], "slice_spacing": 2.0}}
    (tmp_path / "ds" / "ds.yml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "report"
    assert main(["evaluate", "--dataset", str(tmp_path / "ds" / "ds.yml"), "--split", "test", "--model", str(model),
                 "-o", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert {r["case"] for r in rows} == {"p1", "p2"}
    assert all(float(r["dice"]) > 0.99 for r in rows if r["case"] == "p1")
    assert (out / "cases" / "p2.png").is_file()


def test_png_stacks_take_the_spacing_as_row_col_slice(tmp_path: Path) -> None:
    """A prediction 2 rows off: HD95 is 2 x the ROW spacing whichever --spacing form is used."""
    for folder, raw in (("gt", _spine()), ("pred", _spine(2))):
        (tmp_path / folder).mkdir()
        for k, plane in enumerate(raw):
            cv2.imwrite(str(tmp_path / folder / f"p1_slice{k + 1}.png"), plane)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    for spacing, out in ((["0.3,0.7,2"], "new"), (["2", "0.3", "0.7"], "old")):
        assert main([*args, "-o", str(tmp_path / out), "--spacing", *spacing]) == 0
        with open(tmp_path / out / "metrics.csv", newline="") as handle:
            disc = next(r for r in csv.DictReader(handle) if r["class"] == "disc")
        assert float(disc["hd95"]) == pytest.approx(2 * 0.3)
