"""The shipped-model registry: names resolve to files (default: accurate), files pass through, unknown names are
one clear error, and `lumbarseg models` lists what is installed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from onnx_models import threshold_model

from lumbarseg.errors import LumbarsegError
from lumbarseg.inference.predict import Predictor, default_model_path
from lumbarseg.model import metadata, registry
from lumbarseg.model.registry import DEFAULT_MODEL, MODELS, describe, resolve_model

REPO = Path(__file__).resolve().parents[2]


def lumbarseg(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lumbarseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_names_resolve_to_the_shipped_files_and_none_to_accurate():
    assert DEFAULT_MODEL == "accurate" and set(MODELS) == {"accurate", "fast"}
    for name, entry in MODELS.items():
        assert resolve_model(name) == REPO / "models" / entry.file
        assert entry.card == entry.file.replace(".onnx", ".md")
    assert resolve_model(None) == default_model_path() == REPO / "models" / MODELS["accurate"].file
    assert resolve_model(Path("fast")) == resolve_model("fast")  # a Path from older callers works too
    assert Predictor("fast").model_path == resolve_model("fast")


def test_a_file_passes_through_and_a_name_wins_over_a_same_named_file(tmp_path, monkeypatch):
    model = threshold_model(tmp_path / "mine.onnx")
    assert resolve_model(model) == model and resolve_model(str(model)) == model
    threshold_model(tmp_path / "fast")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("fast") == REPO / "models" / MODELS["fast"].file
    assert resolve_model("./fast") == Path("fast")


@pytest.mark.parametrize("given", ["precise", "models/nothing.onnx"])
def test_an_unknown_name_or_missing_file_is_one_error_listing_the_names(given):
    with pytest.raises(LumbarsegError) as exc:
        resolve_model(given)
    assert exc.value.source == given
    assert exc.value.problem == "no such model file, nor a shipped model's name (accurate, fast)"


def test_a_shipped_model_that_is_not_installed_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_folders", lambda: [tmp_path])
    with pytest.raises(LumbarsegError, match="'accurate' model is not installed; pass --model"):
        resolve_model(None)
    rows = describe()
    assert [row["file"] for row in rows] == [None, None] and rows[0]["parameters"] is None


def test_describe_reads_spacing_and_parameters_from_each_file():
    rows = {row["name"]: row for row in describe()}
    assert set(rows) == set(MODELS) and rows["accurate"]["default"] and not rows["fast"]["default"]
    for name, row in rows.items():
        meta = metadata.read(row["file"])
        assert row["spacing"] == list(meta.spacing) and row["card"] == REPO / "models" / MODELS[name].card
        assert row["parameters"] == meta.spec.architecture().num_parameters() > 0
        assert row["slices"] == meta.slice_offsets and len(row["slices"]) == meta.spec.in_channels


def test_cli_lists_models_and_takes_names_everywhere(tmp_path):
    listed = lumbarseg("models")
    assert listed.returncode == 0, listed.stderr
    assert "accurate*" in listed.stdout and "fast" in listed.stdout
    for entry in MODELS.values():
        assert str(REPO / "models" / entry.file) in listed.stdout and entry.card in listed.stdout
    for command in ("predict", "evaluate", "train"):
        assert "accurate, fast or a" in lumbarseg(command, "--help").stdout.replace("\n", " ").replace("  ", " ")
    bad = lumbarseg("predict", "-i", REPO / "datasets" / "sample" / "spider161_t2.nii.gz", "-o", tmp_path / "m.nii.gz",
                    "--model", "precise")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "lumbarseg: error: precise: no such model file, nor a shipped model's name (accurate, fast)"]
    assert not any(tmp_path.iterdir())


def test_cli_shows_a_models_record_by_name_and_refuses_an_unknown_one_first(capsys):
    """`lumbarseg models fast` prints the record; a model exported before worlds were recorded says so; an unknown
    name among the arguments is one error line before anything is printed."""
    from lumbarseg.cli import main

    assert main(["models", "fast"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == str(REPO / "models" / MODELS["fast"].file)
    fields = dict(line.strip().split(None, 1) for line in shown[1:])
    assert fields["classes"] == "background, vertebra, disc, canal" and "0.94 x 0.94 mm" in fields["input"]
    assert fields["world"].startswith("not recorded")
    assert main(["models", "fast", "precise"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("lumbarseg: error: precise: no such model file")
