"""`check_dataset`: every content problem is found, named, and the summary figures are right."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_synth import make_slices

from lumbarseg.data.builders import from_slices
from lumbarseg.data.check import check_dataset, check_file
from lumbarseg.data.deephealth_yaml import load_dataset, write_dataset
from lumbarseg.labels import LabelMap


@pytest.fixture()
def built(tmp_path) -> Path:
    images, masks = make_slices(tmp_path / "in", {"1": 2, "2": 2, "3": 1})
    out = tmp_path / "ds.yml"
    from_slices(images, masks, out, LabelMap.load("spider-png"), progress=False)
    return out


def test_good_dataset_summary(built):
    report = check_file(built, strict=True, progress=False)
    assert report.ok and report.problems == [] and report.warnings == []
    assert list(report.slices) == ["training", "validation", "test"] and sum(report.slices.values()) == 5
    assert all(len(report.patients[name]) == 1 for name in report.slices)
    assert sorted(p for ps in report.patients.values() for p in ps) == ["1", "2", "3"]
    assert report.sizes == {(20, 24): 5}
    fractions = report.class_fractions
    assert list(fractions) == ["background", "vertebra", "disc", "canal"]
    assert sum(fractions.values()) == pytest.approx(1.0)
    # masks are 24x20 blocks: vertebra is the top-left quarter (one pixel may be reset to background)
    assert fractions["vertebra"] == pytest.approx(0.25, abs=0.01)
    summary = report.summary()
    assert "image size (WxH): 20x24 (5)" in summary and "class pixel fractions: background" in summary
    assert "spacing (row, col): unknown" in summary


def edit(path: Path, change) -> None:
    ds = load_dataset(path)
    change(ds)
    write_dataset(ds, path)


def problems_of(path: Path, strict: bool = False):
    report = check_file(path, strict=strict, progress=False)
    assert not report.ok
    for line in report.problems:
        assert "\n" not in line and ": " in line
    return report.problems


def test_missing_and_undecodable_files(built):
    ds = load_dataset(built)
    first_image, first_mask = ds.root / ds.samples[0].location[0], ds.root / ds.samples[1].label
    first_image.unlink()
    first_mask.write_bytes(b"garbage")
    problems = problems_of(built)
    assert f"{first_image}: no such file" in problems
    assert any(p.startswith(f"{first_mask}: cannot decode image") for p in problems)
    assert len(problems) == 2


def test_size_mismatch_and_values_outside_classes(built):
    ds = load_dataset(built)
    small = ds.root / ds.samples[0].label
    cv2.imwrite(str(small), np.zeros((5, 6), np.uint8))
    bad = ds.root / ds.samples[2].label
    mask = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
    mask[0, :3] = [4, 76, 4]
    cv2.imwrite(str(bad), mask)
    problems = problems_of(built)
    assert any(p.startswith(f"{small}: mask size 6x5 (WxH) differs from image") for p in problems)
    assert f"{bad}: mask values 4, 76 are not class indices 0..3" in problems[1]


@pytest.mark.parametrize("change, expected", [
    (lambda ds: ds.split.update(test=[]), "split 'test' is empty"),
    (lambda ds: ds.split.update(validation=ds.split["validation"] + ds.split["test"]),
     r"splits 'validation' and 'test' share \d+ image\(s\)"),
    (lambda ds: ds.split.update(training=ds.split["training"] + ds.split["training"][:1]),
     "split 'training' lists images more than once"),
    (lambda ds: ds.split.clear(), "no 'split'"),
    (lambda ds: ds.meta.pop("classes"), "no class names"),
])
def test_split_problems(built, change, expected):
    edit(built, change)
    problems = problems_of(built)
    assert any(re.search(expected, p) and p.startswith(str(built)) for p in problems), problems


def test_patient_in_two_splits(built):
    def move_one_slice(ds):
        training = ds.split["training"]
        patient = ds.patient(training[0])
        moved = [i for i in training if ds.patient(i) == patient][-1]
        training.remove(moved)
        ds.split["test"].append(moved)
    edit(built, move_one_slice)
    assert any("patients in both 'training' and 'test'" in p for p in problems_of(built))


def test_strict_lists_escaping_locations(built, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")  # a sibling of the dataset's folder

    def escape(ds):
        shutil.copy(ds.root / ds.samples[0].location[0], outside / "image.png")
        ds.samples[0].location = [f"../{outside.name}/image.png"]
        ds.samples[1].label = str(ds.root / ds.samples[1].label)
    edit(built, escape)
    assert check_file(built, progress=False).ok  # the files are there; only strict objects
    problems = problems_of(built, strict=True)
    assert len(problems) == 2
    assert "images[0]: location" in problems[0] and "escapes the dataset folder" in problems[0]
    assert "images[1]: location" in problems[1] and "absolute" in problems[1]


def test_absent_split_is_a_warning(tmp_path):
    images, masks = make_slices(tmp_path / "in", {"11": 3})
    ds = from_slices(images, masks, tmp_path / "one.yml", LabelMap.load("spider-png"), progress=False)
    assert list(ds.split) == ["training"]
    report = check_dataset(ds, progress=False)
    assert report.ok
    assert any("no 'validation' split" in w for w in report.warnings)


def test_absolute_location_with_relative_label_warns(built):
    edit(built, lambda ds: setattr(ds.samples[0], "location", [str(ds.root / ds.samples[0].location[0])]))
    report = check_file(built, progress=False)
    assert report.ok
    assert any("images[0]: absolute location with a relative label" in w for w in report.warnings)
