"""The shipped model: its contract, `make demo` on the shipped sample (a test patient), and EDDL."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lumbarseg
from lumbarseg.io.readers import read_volume
from lumbarseg.model import metadata

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "lumbarseg-spine-t2.onnx"
SAMPLE = REPO / "datasets" / "sample" / "spider161_t2.nii.gz"
SAMPLE_LABELS = REPO / "datasets" / "sample" / "spider161_t2_labels.nii.gz"
CLASSES = ["background", "vertebra", "disc", "canal"]
# Per-class Dice the shipped model must keep on the demo sample (patient 161, never seen in training);
# the model card reports the full test-split figures.
MIN_DICE = {"vertebra": 0.90, "disc": 0.85, "canal": 0.85}


def run(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lumbarseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_model_file_is_small_and_carries_its_contract():
    assert MODEL.stat().st_size < 30 * 2**20
    meta = metadata.read(MODEL)
    assert meta.classes == CLASSES and meta.label_values == [0, 1, 2, 3]
    assert meta.orientation == "RIP" and meta.spacing == pytest.approx([0.94, 0.94])
    assert meta.spec.num_classes == 4 and meta.spec.in_channels == 1
    assert meta.normalization["method"] == "percentile"
    assert "spider" in json.dumps(meta.training_data).lower()


def test_make_demo_segments_the_sample_like_the_experts(tmp_path):
    """The Makefile's demo commands, end to end through the CLI, on real MRI of a held-out patient."""
    mask = tmp_path / "spider161_seg.nii.gz"
    predicted = run("predict", "-i", SAMPLE, "-o", mask, "--overlay")
    assert predicted.returncode == 0, predicted.stderr
    for extra in ("_overlay.png", "_measurements.csv", "_measurements.json"):
        assert (tmp_path / f"spider161_seg{extra}").stat().st_size > 0
    image, labels = read_volume(SAMPLE), read_volume(mask)
    assert labels.shape == image.shape and np.allclose(labels.affine, image.affine)
    assert set(np.unique(labels.array)) == {0, 1, 2, 3}

    report = tmp_path / "report"
    evaluated = run("evaluate", "--pred", mask, "--gt", SAMPLE_LABELS, "--label-map", "spider-png",
                    "--pred-label-map", "lumbarseg", "--images", SAMPLE, "-o", report)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((report / "summary.json").read_text())
    dice = {name: summary["summary"][name]["dice"]["mean"] for name in MIN_DICE}
    for name, minimum in MIN_DICE.items():
        assert dice[name] >= minimum, f"{name} Dice {dice[name]:.3f} < {minimum}"
    with (tmp_path / "spider161_seg_measurements.csv").open() as f:
        volumes = {row["class"]: float(row["volume_ml"]) for row in csv.DictReader(f)}
    assert all(volumes[name] > 0 for name in MIN_DICE)


@pytest.fixture(scope="module")
def eddl():
    pytest.importorskip("pyeddl", reason="pyeddl not installed (DeepHealth extra: pip install lumbarseg[eddl])")


def test_shipped_model_gives_the_same_labels_in_eddl_as_in_onnxruntime(eddl):
    reference = lumbarseg.predict(SAMPLE, runtime="onnxruntime", probabilities=True, postprocess=False)
    native = lumbarseg.predict(SAMPLE, runtime="eddl", probabilities=True, postprocess=False)
    assert float(np.abs(native.probabilities - reference.probabilities).max()) < 1e-4
    assert np.mean(native.mask.array == reference.mask.array) > 0.9999


def test_shipped_model_fine_tunes_in_eddl(eddl, spider_dir, tmp_path):
    """DeepHealth partners retrain the shipped model on their own data with EDDL (one epoch here)."""
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
        for patient in ("5", "7", "11"):
            for name in sorted((spider_dir / kind).glob(f"{patient}_t2_SPACE_slice6*.png"))[:2]:
                shutil.copy(name, tmp_path / kind / name.name)
    built = run("dataset", "from-slices", tmp_path / "images", tmp_path / "masks", "--label-map", "spider-png",
                "--spacing", "0.47,0.47,0.9", "--split", "0.34,0.33,0.33", "-o", tmp_path / "own.yml")
    assert built.returncode == 0, built.stderr
    trained = run("train", "--dataset", tmp_path / "own.yml", "--config", REPO / "configs" / "unet_spider.yml",
                  "--engine", "eddl", "--init", MODEL, "--epochs", "1", "--batch-size", "2", "--no-progress",
                  "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    log = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert len(log) == 1 and np.isfinite(float(log[0]["train_loss"]))
    tuned = metadata.read(tmp_path / "run" / "best.onnx")
    assert tuned.engine == "eddl" and tuned.classes == CLASSES
