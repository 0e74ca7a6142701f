"""`python -m build` makes an sdist and a wheel that install and run, with the shipped model inside."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx_models import threshold_model, tiny_metadata

from lumbarseg import __version__
from lumbarseg.model import metadata
from lumbarseg.model.registry import DEFAULT_MODEL, MODELS

ROOT = Path(__file__).resolve().parents[1]
MODEL = MODELS[DEFAULT_MODEL].file  # the default model: models/ in the checkout, lumbarseg/resources/ installed
REAL_MODEL = ROOT / "models" / MODEL
SOURCES = ["setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "lumbarseg", "models", "docker", "docs",
           "mkdocs.yml"]
# every shipped model and card in the checkout (a stand-in replaces the default model when it is absent)
SHIPPED = {MODEL} | {name for entry in MODELS.values() for name in (entry.file, entry.card)
                    if (ROOT / "models" / name).is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Build sdist + wheel from a copy of the checkout (the wheel from the sdist, as `python -m build` does).

    Until the real model is in models/, a tiny model that honours the ONNX contract stands in for it."""
    if importlib.util.find_spec("build.__main__") is None:  # not the checkout's build/ folder
        pytest.skip("needs the `build` package (pip install build)")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    (src / "models").mkdir(exist_ok=True)
    if not REAL_MODEL.is_file():
        threshold_model(src / "models" / MODEL, tiny_metadata(spacing=(0.5, 0.5)))
    dist = src / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    return {"src": src, "wheel": wheel, "sdist": sdist}


def test_sdist_carries_sources_models_and_pins(built) -> None:
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("setup.py", "README.md", "lumbarseg/cli/__init__.py", *(f"models/{name}" for name in SHIPPED),
                   "docker/requirements-py38.txt", "mkdocs.yml", "docs/index.md", "docs/gen_pages.py"):
        assert needed in names, needed
    assert not any("__pycache__" in n for n in names)


def test_wheel_packs_the_shipped_models_and_cards(built) -> None:
    with zipfile.ZipFile(built["wheel"]) as whl:
        packed = {name: whl.read(f"lumbarseg/resources/{name}") for name in SHIPPED}
        entry_points = whl.read(f"lumbarseg-{__version__}.dist-info/entry_points.txt").decode()
        assert not any(n.startswith(("tests/", "models/")) for n in whl.namelist())
    assert all(data == (built["src"] / "models" / name).read_bytes() for name, data in packed.items())
    assert "lumbarseg = lumbarseg.cli:main" in entry_points


@pytest.fixture(scope="module")
def venv(built) -> Path:
    """A fresh venv with only the wheel installed into it, seeing the dependencies of the interpreter running the
    tests (a ``.pth`` of its site-packages: ``--system-site-packages`` would see the base Python's instead
    when the tests run in a virtual environment)."""
    env = built["src"].parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    (site,) = env.glob("lib/python*/site-packages")
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "dependencies.pth").write_text("".join(f"{path}\n" for path in paths))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q", "--no-deps",
         "--no-index", str(built["wheel"])],
        check=True, capture_output=True, timeout=120,
    )
    return env


def run_installed(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run from outside the checkout so that only the installed copy can be imported."""
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_installed_cli_runs_and_finds_the_shipped_model(venv: Path, tmp_path: Path) -> None:
    help_ = run_installed(str(venv / "bin" / "lumbarseg"), "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert "predict" in help_.stdout
    version = run_installed(str(venv / "bin" / "lumbarseg"), "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"lumbarseg {__version__}"
    where = run_installed(
        str(venv / "bin" / "python"), "-c",
        "import lumbarseg.inference.predict as p; print(p.__file__); print(p.default_model_path())",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    package_file, model = where.stdout.split()
    assert package_file.startswith(f"{venv}/") and model.startswith(f"{venv}/"), where.stdout
    assert Path(model).name == MODEL
    listed = run_installed(str(venv / "bin" / "lumbarseg"), "models", cwd=tmp_path)
    assert listed.returncode == 0 and f"{venv}/" in listed.stdout and "lumbarseg/resources/" in listed.stdout


def test_installed_predict_with_shipped_model(built, venv: Path, tmp_path: Path) -> None:
    """`lumbarseg predict` with no --model runs the model packed in the wheel and keeps the input's grid."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    affine = np.diag([0.9, 0.5, 0.5, 1.0])
    nib.save(nib.Nifti1Image(rng.random((3, 96, 80)).astype(np.float32) * 500, affine), str(tmp_path / "case.nii.gz"))
    result = run_installed(
        str(venv / "bin" / "lumbarseg"), "predict", "-i", "case.nii.gz", "-o", "case_seg.nii.gz", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = nib.load(str(tmp_path / "case_seg.nii.gz"))
    assert out.shape == (3, 96, 80)
    assert np.allclose(out.affine, affine)
    labels = set(np.unique(np.asarray(out.dataobj)).tolist())
    assert labels <= set(metadata.read(built["src"] / "models" / MODEL).label_values)  # the model the wheel packs
    if not REAL_MODEL.is_file():  # the stand-in labels by intensity: noise gets several classes
        assert len(labels) > 1, labels
