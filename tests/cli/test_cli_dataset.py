"""`lumbarseg dataset from-slices | from-volumes | check` from the command line."""
from __future__ import annotations

from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import yaml
from dataset_synth import make_slices, tree_snapshot

from lumbarseg.cli import main
from lumbarseg.data.deephealth_yaml import load_dataset, write_dataset

REPO = next(p for p in Path(__file__).resolve().parents if (p / "setup.py").is_file())  # the checkout


def run(capsys, *argv: str):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str):
    return [line for line in err.splitlines() if line.startswith("lumbarseg: error: ")]


def test_from_slices_then_check(tmp_path, capsys):
    images, masks = make_slices(tmp_path / "in", {"11": 2, "22": 2, "33": 2, "44": 2})
    out = tmp_path / "ds.yml"
    code, stdout, err = run(capsys, "dataset", "from-slices", images, masks, "--label-map", "spider-png", "-o", out,
                            "--test-patients", "22", "--split", "0.5,0.5,0", "--seed", "1",
                            "--spacing", "0.47,0.47,0.9")
    assert code == 0, err
    assert f"wrote {out}: 8 slices of 4 patient(s)" in stdout
    ds = load_dataset(out)
    assert {ds.patient(i) for i in ds.split["test"]} == {"22"} and ds.spacing == (0.47, 0.47)
    assert ds.meta["split"]["seed"] == 1
    code, stdout, err = run(capsys, "dataset", "check", out, "--strict")
    assert code == 0, err
    assert "training" in stdout and "class pixel fractions" in stdout and f"check: {out} is OK" in stdout
    assert "spacing (row, col): 0.47 x 0.47 mm" in stdout


@pytest.mark.parametrize("damage, folder, expected", [
    ("missing mask", "images", "no mask with the same name"),
    ("undecodable image", "images", "cannot decode image"),
    ("size mismatch", "masks", "mask size 3x3 (WxH) differs from image"),
    ("outside label map", "masks", "mask values not in the label map: 200"),
])
def test_from_slices_bad_input(tmp_path, capsys, damage, folder, expected):
    images, masks = make_slices(tmp_path / "in", {"1": 2})
    name = "1_t2_SPACE_slice4.png"
    if damage == "missing mask":
        (masks / name).unlink()
    elif damage == "undecodable image":
        (images / name).write_bytes(b"not an image")
    elif damage == "size mismatch":
        cv2.imwrite(str(masks / name), np.zeros((3, 3), np.uint8))
    else:
        cv2.imwrite(str(masks / name), np.full((24, 20), 200, np.uint8))
    before = tree_snapshot(tmp_path)
    code, _, err = run(capsys, "dataset", "from-slices", images, masks, "--label-map", "spider-png",
                       "-o", tmp_path / "out.yml")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"lumbarseg: error: {tmp_path / 'in' / folder / name}: ")
    assert expected in err
    assert tree_snapshot(tmp_path) == before  # nothing written, nothing changed


@pytest.mark.parametrize("option, value, expected", [
    ("--split", "0.8,x", "--split: '0.8,x' is not a list of numbers"),
    ("--spacing", "0.5", "--spacing: need ROW,COL[,SLICE]"),
    ("--label-map", "nonesuch", "nonesuch: no such label-map file (built-in names: lumbarseg, spider, spider-png)"),
    ("--test-patients", "99", "test patients: patient '99' is not in the dataset"),
    ("--pattern", "(?P<id>\\d+)", "needs a named group (?P<patient>...)"),
])
def test_bad_options(tmp_path, capsys, option, value, expected):
    images, masks = make_slices(tmp_path / "in", {"1": 1})
    args = ["dataset", "from-slices", images, masks, "-o", tmp_path / "o.yml", option, value]
    if option != "--label-map":
        args += ["--label-map", "spider-png"]
    code, _, err = run(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err
    assert not (tmp_path / "o.yml").exists() and not (tmp_path / "o").exists()


def test_overwrite_needs_flag(tmp_path, capsys):
    images, masks = make_slices(tmp_path / "in", {"1": 1})
    args = ["dataset", "from-slices", images, masks, "--label-map", "spider-png", "-o", tmp_path / "o.yml"]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and err.strip() == f"lumbarseg: error: {tmp_path / 'o.yml'}: already exists (use --overwrite " \
                                        "to replace it)"
    assert run(capsys, *args, "--overwrite")[0] == 0


@pytest.fixture()
def built(tmp_path, capsys) -> Path:
    images, masks = make_slices(tmp_path / "in", {"1": 2, "2": 2, "3": 2})
    out = tmp_path / "ds.yml"
    assert run(capsys, "dataset", "from-slices", images, masks, "--label-map", "spider-png", "-o", out)[0] == 0
    return out


def test_check_reports_each_problem_on_its_own_line(built, capsys):
    ds = load_dataset(built)
    missing = ds.root / ds.samples[0].location[0]
    missing.unlink()
    ds.split["test"] = ds.split["test"] + ds.split["validation"]  # overlap and shared patient
    ds.split["extra"] = []
    write_dataset(ds, built)
    code, stdout, err = run(capsys, "dataset", "check", built)
    assert code == 2
    lines = error_lines(err)
    assert f"lumbarseg: error: {missing}: no such file" in lines
    assert f"lumbarseg: error: {built}: split 'extra' is empty" in lines
    assert any(f"{built}: splits 'validation' and 'test' share 2 image(s)" in line for line in lines)
    assert any(f"{built}: patients in both 'validation' and 'test'" in line for line in lines)
    assert len(lines) == 4 and "4 problem(s)" in stdout


@pytest.mark.parametrize("text, expected", [
    ("images: [a.png\n", "malformed YAML: line 2"),
    ("images: [a.png]\nclasses: [a]\n", "classification dataset"),
    ("images: [{location: a.png, label: m.png}]\nsplit: {training: [3]}\n", "index 3 out of range"),
])
def test_check_malformed_yaml(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    code, stdout, err = run(capsys, "dataset", "check", path)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"lumbarseg: error: {path}") and expected in err


def test_check_strict_rejects_escaping_location(built, capsys):
    raw = yaml.safe_load(built.read_text())
    raw["images"][0]["label"] = "../elsewhere/" + raw["images"][0]["label"]
    built.write_text(yaml.safe_dump(raw))
    code, _, err = run(capsys, "dataset", "check", built, "--strict")
    assert code == 2
    assert any("images[0]: location '../elsewhere/" in line and "escapes the dataset folder" in line
               for line in error_lines(err))


def test_from_volumes_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    affine = np.diag([-0.5, -0.5, 2.0, 1.0])  # LPS: axis 0 runs left, so 6 sagittal slices
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(rng.normal(size=(6, 5, 3)).astype(np.float32), affine), str(tmp_path / "img" /
                                                                                              f"{name}.nii.gz"))
        label = np.zeros((6, 5, 3), np.uint8)
        label[:3] = 76
        nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "lab" / f"{name}.nii.gz"))
    out = tmp_path / "v.yml"
    code, stdout, err = run(capsys, "dataset", "from-volumes", tmp_path / "img", tmp_path / "lab",
                            "--label-map", "spider-png", "-o", out, "--split", "1,1,0")
    assert code == 0, err
    ds = load_dataset(out)
    assert len(ds.samples) == 12  # 6 sagittal (R-L) slices per volume after reorientation to RIP
    assert ds.meta["volumes"][0]["orientation"] == "LPS" and ds.meta["volumes"][0]["canonical_shape"] == [6, 3, 5]
    assert run(capsys, "dataset", "check", out, "--strict")[0] == 0
