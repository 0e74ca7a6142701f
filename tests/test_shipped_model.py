"""The shipped models (``accurate``, the default, and ``fast``): their contract in every engine, `make demo` on the
shipped sample (a test patient), and fine-tuning each by name with EDDL.

Nothing here depends on the models' exact weights: the lead replaces the files with retrained ones."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_training import TINY_CONFIG, make_dataset

import lumbarseg
from lumbarseg.io.readers import read_volume
from lumbarseg.model import metadata
from lumbarseg.model.registry import DEFAULT_MODEL, MODELS, resolve_model

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "sample" / "spider161_t2.nii.gz"
SAMPLE_LABELS = REPO / "datasets" / "sample" / "spider161_t2_labels.nii.gz"
CLASSES = ["background", "vertebra", "disc", "canal"]
NAMES = sorted(MODELS)
# Per-class Dice every shipped model must keep on the demo sample (8 slices of patient 161, never seen in
# training): a floor that catches a broken file or pipeline, not a target (the shipped models score 0.926-0.927 /
# 0.839-0.861 / 0.907-0.909 there; models are chosen on the validation patients and the cards report the test split).
MIN_DICE = {"vertebra": 0.90, "disc": 0.82, "canal": 0.85}
TOL = 1e-4


def run(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lumbarseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.mark.parametrize("name", NAMES)
def test_model_file_is_small_and_carries_its_contract(name):
    path = resolve_model(name)
    assert path == REPO / "models" / MODELS[name].file and (REPO / "models" / MODELS[name].card).is_file()
    assert path.stat().st_size < 30 * 2**20
    meta = metadata.read(path)
    assert meta.classes == CLASSES and meta.label_values == [0, 1, 2, 3]
    assert meta.orientation == "RIP" and meta.spacing == pytest.approx([0.94, 0.94])
    assert meta.spec.num_classes == 4 and meta.spec.in_channels == len(meta.slice_offsets)
    assert meta.normalization["method"] == "percentile"
    assert "spider" in json.dumps(meta.training_data).lower()


@pytest.mark.parametrize("name", [None, *(n for n in NAMES if n != DEFAULT_MODEL)], ids=lambda n: n or "default")
def test_make_demo_segments_the_sample_like_the_experts(tmp_path, name):
    """The Makefile's demo commands (no --model: the default), end to end through the CLI, on real MRI of a
    held-out patient; the other shipped models by name."""
    mask = tmp_path / "spider161_seg.nii.gz"
    predicted = run("predict", "-i", SAMPLE, "-o", mask, "--overlay", *(["--model", name] if name else []))
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


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_gives_the_same_labels_in_eddl_as_in_onnxruntime(eddl, name):
    reference = lumbarseg.predict(SAMPLE, model=name, runtime="onnxruntime", probabilities=True, postprocess=False)
    native = lumbarseg.predict(SAMPLE, model=name, runtime="eddl", probabilities=True, postprocess=False)
    assert float(np.abs(native.probabilities - reference.probabilities).max()) < TOL
    assert np.mean(native.mask.array == reference.mask.array) > 0.9999


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_loads_in_the_torch_engine(name):
    pytest.importorskip("torch", reason="the PyTorch engine needs torch")
    import onnxruntime as ort

    from lumbarseg.engines.torch_engine import TorchEngine

    path = resolve_model(name)
    spec = metadata.read(path).spec
    x = np.random.default_rng(0).random((2, spec.in_channels, 96, 64), dtype=np.float32)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert float(np.abs(TorchEngine.from_onnx(path, spec).predict(x) - reference).max()) < TOL


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_fine_tunes_in_eddl_by_name(eddl, tmp_path, name):
    """DeepHealth partners retrain a shipped model on their own data with EDDL: `train --engine eddl --init NAME`
    (one epoch on three synthetic 32x32 slices; the config's architecture is the model's; a 2.5D model's data
    has as many slice channels)."""
    meta = metadata.read(resolve_model(name))
    spec = meta.spec
    dataset = make_dataset(tmp_path / "own", n_train=2, n_val=1, per_patient=3)
    config = tmp_path / "config.yml"
    config.write_text(TINY_CONFIG.read_text().replace("model: {", f"model: {{in_channels: {spec.in_channels}, "))
    if spec.in_channels > 1:
        from lumbarseg.data.context import write_with_slice_channels

        unit = min(abs(o) for o in meta.slice_offsets if o)
        steps = [round(offset / unit) for offset in meta.slice_offsets]
        dataset = write_with_slice_channels(dataset, tmp_path / "own" / "ctx.yml", steps).source
    trained = run("train", "--dataset", dataset, "--config", config, "--engine", "eddl", "--init", name,
                  "--depth", spec.depth, "--base-filters", spec.base_filters, "--epochs", "1", "--batch-size", "2",
                  "--no-progress", "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    log = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert len(log) == 1 and np.isfinite(float(log[0]["train_loss"]))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == str(resolve_model(name).resolve())
    tuned = metadata.read(tmp_path / "run" / "best.onnx")
    assert tuned.engine == "eddl" and tuned.classes == CLASSES and tuned.spec == spec
