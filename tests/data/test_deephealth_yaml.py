"""DeepHealth Dataset YAML: read/validate/write as ECVL parses it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lumbarseg.data.deephealth_yaml import (
    META_KEY,
    DeepHealthDataset,
    Sample,
    dump_dataset,
    load_dataset,
    write_dataset,
)
from lumbarseg.errors import LumbarsegError

SEGMENTATION_YAML = """\
%YAML:1.2
---
name: tiny
description: >
  two patients
features: [patient, slice]
lumbarseg:
  classes: [background, vertebra, disc, canal]
  spacing: [0.47, 0.5]
images:
  - location: images/a.png
    label: masks/a.png
    values: ['7', 1]
  - location: images/b.png
    label: masks/b.png
    values: {patient: '7', slice: 2}
  - images/c.png
  - [images/d1.png, images/d2.png]
split:
  training: [1, 0]
  validation: [2]
  test: []
"""


def write(tmp_path: Path, text: str, name: str = "d.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_ecvl_forms_and_directive(tmp_path):
    ds = load_dataset(write(tmp_path, SEGMENTATION_YAML))
    assert ds.name == "tiny" and ds.description.strip() == "two patients"
    assert [s.location for s in ds.samples] == [["images/a.png"], ["images/b.png"], ["images/c.png"],
                                                ["images/d1.png", "images/d2.png"]]
    assert ds.samples[0].label == "masks/a.png" and ds.samples[2].label is None
    assert ds.split == {"training": [1, 0], "validation": [2], "test": []}
    assert ds.classes == ["background", "vertebra", "disc", "canal"]
    assert ds.label_map.num_classes == 4 and ds.label_map.ranges[2] == ((2, 2),)
    assert ds.spacing == (0.47, 0.5)
    # patient from values (list in features order, or a mapping); without it, the file stem
    assert [ds.patient(i) for i in range(3)] == ["7", "7", "c"]
    assert ds.slice_index(1) == 2


def test_pairs_absolute_in_split_order(tmp_path):
    ds = load_dataset(write(tmp_path, SEGMENTATION_YAML))
    root = tmp_path.resolve()
    assert ds.pairs("training") == [(root / "images/b.png", root / "masks/b.png"),
                                    (root / "images/a.png", root / "masks/a.png")]
    assert ds.pairs("test") == []
    with pytest.raises(LumbarsegError, match=r"d\.yml: no split 'holdout' \(splits: training, validation, test\)"):
        ds.pairs("holdout")
    with pytest.raises(LumbarsegError, match=r"images\[2\] \(images/c\.png\): no label"):
        ds.pairs("validation")


def test_round_trip_keeps_everything(tmp_path):
    ds = load_dataset(write(tmp_path, SEGMENTATION_YAML))
    out = tmp_path / "copy.yml"
    write_dataset(ds, out)
    text = out.read_text()
    assert not text.startswith("%YAML")  # yaml-cpp does not need the directive, PyYAML rejects it
    again = load_dataset(out)
    assert again.samples == ds.samples and again.split == ds.split and again.meta == ds.meta
    assert again.features == ds.features and again.name == ds.name
    raw = yaml.safe_load(text)
    assert "classes" not in raw  # ECVL would treat the dataset as classification
    assert list(raw) == ["name", "description", "features", META_KEY, "images", "split"]


def test_written_yaml_is_plain_ecvl(tmp_path):
    ds = DeepHealthDataset("x", "line one\nline two", tmp_path, [Sample(["i/0.png"], "m/0.png", ["3", 0])],
                           {"training": [0]}, ["patient", "slice"], {"classes": ["background", "disc"]})
    raw = yaml.safe_load(dump_dataset(ds))
    assert raw["images"] == [{"location": "i/0.png", "label": "m/0.png", "values": ["3", 0]}]
    assert raw["description"] == "line one\nline two"
    assert raw["split"] == {"training": [0]}


@pytest.mark.parametrize("text, problem", [
    ("name: [unclosed\n", r"malformed YAML: line \d+"),
    ("images: [a.png]\nclasses: [a, b]\n", "classification dataset"),
    ("name: x\n", "missing 'images'"),
    ("- a\n- b\n", "expected a mapping"),
    ("images: []\n", "'images' must be a non-empty list"),
    ("images: [{label: m.png}]\n", r"images\[0\]: missing 'location'"),
    ("images: [{location: a.png, label: 3}]\n", "not a mask path"),
    ("images: [{location: a.png, lable: m.png}]\n", "unknown keys"),
    ("images: [{location: 'https://x.org/a.png'}]\n", "remote location"),
    ("images: [a.png]\nsplit: {training: [0, 1]}\n", r"split 'training': index 1 out of range"),
    ("images: [a.png]\nsplit: {training: [a]}\n", "0-based image indices"),
    ("images: [a.png]\nsplit: [0]\n", "'split' must map split names"),
    ("images: [a.png]\nlumbarseg: [1]\n", "'lumbarseg' must be a mapping"),
])
def test_malformed_datasets_name_file_and_problem(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(LumbarsegError, match=problem) as info:
        load_dataset(path)
    assert info.value.source.startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(LumbarsegError, match="no such dataset file"):
        load_dataset(tmp_path / "absent.yml")


@pytest.mark.parametrize("location", ["../outside.png", "/etc/passwd", "images/../../outside.png"])
def test_strict_rejects_escaping_locations(tmp_path, location):
    path = write(tmp_path, f"images:\n  - location: images/a.png\n    label: '{location}'\n")
    assert load_dataset(path).samples[0].label == location  # allowed by default (ECVL allows it)
    with pytest.raises(LumbarsegError, match=r"images\[0\]: location .* (escapes|absolute)"):
        load_dataset(path, strict=True)


def test_strict_accepts_inner_dotdot(tmp_path):
    path = write(tmp_path, "images:\n  - location: images/../images/a.png\n")
    assert load_dataset(path, strict=True).samples[0].location == ["images/../images/a.png"]


def test_classes_needed_for_label_map(tmp_path):
    ds = load_dataset(write(tmp_path, "images: [a.png]\n"))
    with pytest.raises(LumbarsegError, match="no class names"):
        ds.label_map  # noqa: B018
    assert ds.spacing is None
