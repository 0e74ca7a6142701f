"""The output side of the bad-input corpus: hostile checkpoints, outputs over inputs, partial outputs, races.

Each case runs the real command (``corpus.run_cli``) and asserts the contract of ``corpus``: exit code, one
``lumbarseg: error: FILE: PROBLEM`` line naming the file and the problem, and nothing written or replaced
in the watched folders; for the pickles also that no code ran (the payload's marker file never appears).
"""
from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from corpus import assert_one_line_error, assert_unchanged, run_cli, snapshot
from onnx_models import threshold_model, tiny_metadata

from lumbarseg.io.readers import write_volume
from lumbarseg.io.volume import Volume

ROOT = Path(__file__).resolve().parents[2]


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return threshold_model(tmp_path_factory.mktemp("model") / "thr.onnx", tiny_metadata(label_values=[0, 76, 29, 150]))


def _volume(path: Path, seed: int = 0, values=None) -> Path:
    rng = np.random.default_rng(seed)
    array = rng.random((3, 16, 16)).astype(np.float32) * 100 if values is None else values
    write_volume(Volume(array, np.diag([1.0, 1.0, 1.0, 1.0]), str(path)), path)
    return path


def _mask(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    return _volume(path, values=rng.choice(np.array([0, 76, 29, 150], np.uint8), (3, 16, 16)))


@pytest.fixture
def pairs(tmp_path) -> dict:
    """--pred and --gt folders (spider-png values) and an --images folder, one case ``c1`` each."""
    folders = {name: tmp_path / name for name in ("pred", "gt", "images")}
    for folder in folders.values():
        folder.mkdir()
    _mask(folders["pred"] / "c1.nii.gz", 1)
    _mask(folders["gt"] / "c1.nii.gz", 2)
    _volume(folders["images"] / "c1.nii.gz")
    return folders


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A one-epoch PyTorch run (tiny synthetic data), copied per test by ``run``."""
    pytest.importorskip("torch", reason="the run is trained with the PyTorch engine")
    from synthetic_training import make_dataset, tiny_config

    from lumbarseg.training.trainer import train

    root = tmp_path_factory.mktemp("run")
    dataset = make_dataset(root / "data", n_train=2, n_val=1, size=16)
    train(dataset, tiny_config(epochs=1), root / "run", progress=False)
    return root / "run"


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


class _Payload:
    """Unpickling this runs code: it creates ``marker`` (what a hostile checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, torch_zip: bool) -> None:
    """A malicious checkpoint: a raw pickle, or a PyTorch zip archive whose data.pkl holds the payload."""
    if torch_zip:
        torch = pytest.importorskip("torch")
        torch.save({"format": "lumbarseg-torch-checkpoint-1", "model": _Payload(marker)}, str(path))
    else:
        path.write_bytes(pickle.dumps({"format": "lumbarseg-torch-checkpoint-1", "model": _Payload(marker)}))


def _control(marker: Path) -> None:
    """The payload is real: a plain ``pickle.load`` in a child process creates the marker."""
    probe = marker.with_name("probe.pkl")
    probe.write_bytes(pickle.dumps(_Payload(marker)))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(probe)!r}, 'rb'))"], check=True)
    assert marker.exists()
    marker.unlink()
    probe.unlink()


# --- security: never unpickle ------------------------------------------------------------------------------


@pytest.mark.parametrize("torch_zip", [False, True], ids=["raw-pickle", "torch-zip"])
def test_export_refuses_a_pickle_checkpoint_and_runs_no_code(run, tmp_path, torch_zip):
    marker = tmp_path / "pwned"
    _control(marker)
    _plant(run / "best.ckpt", marker, torch_zip)
    before = snapshot(run)
    result = run_cli(["export", run, "-o", tmp_path / "m.onnx"])
    assert_one_line_error(result, ["best.ckpt"], "pickle|not a readable checkpoint")
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()
    assert_unchanged(before, run)


@pytest.mark.parametrize("torch_zip", [False, True], ids=["raw-pickle", "torch-zip"])
def test_resume_refuses_a_pickle_checkpoint_and_runs_no_code(run, tmp_path, torch_zip):
    marker = tmp_path / "pwned"
    (checkpoint,) = run.glob("checkpoints/epoch-*/engine.ckpt")
    _plant(checkpoint, marker, torch_zip)
    before = snapshot(run)
    result = run_cli(["train", "--resume", run])
    assert_one_line_error(result, ["engine.ckpt"], "pickle|not a readable checkpoint")
    assert not marker.exists()
    assert_unchanged(before, run)


def test_checkpoints_are_safetensors_and_old_weights_only_pickles_still_load(run, tmp_path):
    torch = pytest.importorskip("torch")
    from lumbarseg.engines.torch_engine import TorchEngine
    from lumbarseg.io import tensors
    from lumbarseg.networks.unet import UNetSpec

    for path in [run / "best.ckpt", *run.glob("checkpoints/epoch-*/engine.ckpt")]:
        assert tensors.kind(path) == "safetensors", path
    spec = UNetSpec.from_dict(json.loads((run / "run.json").read_text())["architecture"])
    engine = TorchEngine(spec)
    engine.load_checkpoint(run / "best.ckpt")
    old = {"format": "lumbarseg-torch-checkpoint-1", "spec": spec.to_dict(), "model": engine.net.state_dict(),
           "optimizer": None, "scaler": None,
           "rng": {"torch": torch.get_rng_state(), "python": __import__("random").getstate(),
                   "numpy": np.random.get_state(), "cuda": None}}
    torch.save(old, str(tmp_path / "old.ckpt"))  # what version 0.x wrote: a pickle of tensors and numpy RNG state
    restored = TorchEngine(spec, seed=5)
    restored.load_checkpoint(tmp_path / "old.ckpt")
    for key, value in engine.net.state_dict().items():
        assert torch.equal(value, restored.net.state_dict()[key]), key


def test_checkpoint_state_round_trips_exactly(tmp_path):
    from lumbarseg.io import tensors

    state = {"format": "x", "steps": {0: {"m": np.arange(6, dtype=np.float32).reshape(2, 3)}, 1: {}},
             "python": (3, tuple(range(5)), None), "lr": 0.1 + 0.2, "nan": float("nan"),
             "rng": ("MT19937", np.arange(4, dtype=np.uint32), 2, 0, 0.0), "scalar": np.array(7.5, np.float32)}
    tensors.save(tmp_path / "s.ckpt", state)
    back = tensors.load(tmp_path / "s.ckpt")
    assert set(back["steps"]) == {0, 1} and back["python"] == state["python"] and back["lr"] == state["lr"]
    np.testing.assert_array_equal(back["steps"][0]["m"], state["steps"][0]["m"])
    assert back["rng"][0] == "MT19937" and back["rng"][1].dtype == np.uint32 and np.isnan(back["nan"])
    assert back["scalar"].shape == () and float(back["scalar"]) == 7.5
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "s.ckpt").read_bytes()[:40])
    with pytest.raises(Exception, match="cut.ckpt: not a readable checkpoint"):
        tensors.load(tmp_path / "cut.ckpt")


# --- data loss: an output never is, contains or lies inside an input ----------------------------------------


@pytest.mark.parametrize("target, relation", [("pred", "is the input --pred"), ("gt", "is the input --gt"),
                                              ("images", "is the input --images"), ("root", "contains the input"),
                                              ("pred/report", "lies inside the input --pred")])
def test_evaluate_never_writes_over_or_into_its_inputs(pairs, tmp_path, target, relation):
    out = tmp_path if target == "root" else tmp_path / target
    before = snapshot(tmp_path)
    result = run_cli(["evaluate", "--pred", pairs["pred"], "--gt", pairs["gt"], "--images", pairs["images"],
                      "-o", out, "--overwrite"])
    assert_one_line_error(result, [str(out)], relation)
    assert_unchanged(before, tmp_path)


def test_evaluate_dataset_never_replaces_the_dataset_folder(tmp_path, model):
    from synthetic_training import make_dataset

    dataset = make_dataset(tmp_path / "ds", n_train=1, n_val=1, size=16, splits={"test": [0, 1]})
    before = snapshot(tmp_path)
    for out in (tmp_path / "ds", tmp_path / "ds" / "images"):
        result = run_cli(["evaluate", "--dataset", dataset, "--model", model, "-o", out, "--overwrite"])
        assert_one_line_error(result, [str(out)], "(is|contains) the input (dataset|--dataset)")
    assert_unchanged(before, tmp_path)


def test_predict_never_replaces_the_model(tmp_path, model):
    case = _volume(tmp_path / "case.nii.gz")
    copy = tmp_path / "models" / "m.onnx"
    copy.parent.mkdir()
    shutil.copy2(model, copy)
    before = snapshot(tmp_path)
    result = run_cli(["predict", "-i", case, "-o", copy, "--model", copy, "--overwrite"])
    assert_one_line_error(result, [str(copy)], "is the input --model file")
    result = run_cli(["predict", "-i", case, "-o", tmp_path / "models", "--model", copy, "--overwrite"])
    assert_one_line_error(result, ["models"], "contains the input --model")
    assert_unchanged(before, tmp_path)


def test_dataset_builder_output_inside_its_input_is_refused(tmp_path):
    from synthetic_training import make_dataset

    make_dataset(tmp_path / "src", n_train=2, n_val=0, size=16)
    before = snapshot(tmp_path)
    out = tmp_path / "src" / "images" / "x.yml"
    result = run_cli(["dataset", "from-slices", tmp_path / "src" / "images", tmp_path / "src" / "masks",
                      "--label-map", "spider-png", "-o", out, "--overwrite"])
    assert_one_line_error(result, [str(out.with_suffix(""))], "lies inside the input folder")
    assert_unchanged(before, tmp_path)


def test_export_needs_overwrite_to_replace_a_model(run, tmp_path, model):
    shipped = tmp_path / "lumbarseg-spine-t2-accurate.onnx"
    shutil.copy2(model, shipped)
    before = snapshot(tmp_path)
    result = run_cli(["export", run, "-o", shipped])
    assert_one_line_error(result, [str(shipped)], r"exists \(use --overwrite\)")
    assert_unchanged(before, tmp_path)
    assert run_cli(["export", run, "-o", shipped, "--overwrite"]).returncode == 0
    assert shipped.read_bytes() != model.read_bytes()


@pytest.mark.parametrize("target", ["best.onnx", "best.ckpt", "run.json", "checkpoints/x.onnx", ".", ".."])
def test_export_never_writes_a_run_file(run, target):
    out = (run / target) if target not in (".", "..") else (run if target == "." else run.parent)
    before = snapshot(run.parent)
    result = run_cli(["export", run, "-o", out, "--overwrite"])
    assert_one_line_error(result, [str(out)], "file of the run|the input run")
    assert_unchanged(before, run.parent)


# --- partial outputs and races ---------------------------------------------------------------------------


def test_predict_outputs_are_all_or_nothing_when_a_folder_is_in_the_way(tmp_path, model):
    case = _volume(tmp_path / "case.nii.gz")
    out = tmp_path / "out"
    (out / "seg_overlay.png").mkdir(parents=True)  # in the way of the second output
    before = snapshot(tmp_path)
    result = run_cli(["predict", "-i", case, "-o", out / "seg.nii.gz", "--model", model, "--overlay", "--overwrite"])
    assert_one_line_error(result, ["seg_overlay.png"], "folder is in the way")
    assert_unchanged(before, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["seg_overlay.png"]


def test_predict_outputs_are_all_or_nothing_when_the_disk_is_full(tmp_path, model):
    """A file-size limit makes the large probabilities file fail (EFBIG) after the mask was written."""
    case = _volume(tmp_path / "case.nii.gz", values=np.random.default_rng(0).random((8, 96, 96)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    old_mask = _mask(out / "seg.nii.gz", 3)  # an earlier output: --overwrite must not lose it on failure
    before = snapshot(tmp_path)
    env_limit = 200_000  # the mask (~1 KB gzipped) fits, the probabilities (8*96*96*4*4 B, noisy) do not

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (env_limit, env_limit))

    result = subprocess.run([sys.executable, "-m", "lumbarseg", "predict", "-i", str(case), "-o", str(old_mask),
                             "--model", str(model), "--probabilities", "--overwrite"],
                            capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert_one_line_error(result, ["seg_probabilities.nii.gz"], "cannot write the output")
    assert_unchanged(before, tmp_path)
    assert not list(out.glob(".tmp-*"))


def test_predict_error_names_an_existing_second_output(tmp_path, model):
    case = _volume(tmp_path / "case.nii.gz")
    (tmp_path / "seg_overlay.png").write_bytes(b"an earlier overlay")
    before = snapshot(tmp_path)
    result = run_cli(["predict", "-i", case, "-o", tmp_path / "seg.nii.gz", "--model", model, "--overlay"])
    assert_one_line_error(result, ["seg_overlay.png"], r"exists \(use --overwrite\)")
    assert_unchanged(before, tmp_path)


def test_leftovers_of_killed_runs_are_cleaned_up_and_live_ones_kept(tmp_path, model):
    from lumbarseg.io import atomic

    case = _volume(tmp_path / "case.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = atomic._HOST
    stale = out / f".tmp-{dead.pid}.{host}-abcdef-seg.nii.gz"
    stale_dir = out / f".tmp-{dead.pid}.{host}-abcdef-pngs"
    live = out / f".tmp-{os.getpid()}.{host}-abcdef-seg.nii.gz"  # this test process: alive
    foreign = out / ".tmp-0123abcd-seg.nii.gz"  # unknown owner, recent: may belong to a run elsewhere
    old_foreign = out / ".tmp-4567abcd-seg.nii.gz"
    for path in (stale, live, foreign, old_foreign):
        path.write_bytes(b"partial")
    stale_dir.mkdir()
    (stale_dir / "slice1.png").write_bytes(b"partial")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_foreign, (day_ago, day_ago))
    result = run_cli(["predict", "-i", case, "-o", out / "seg.nii.gz", "--model", model])
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([live.name, foreign.name, "seg.nii.gz", "seg_measurements.csv", "seg_measurements.json"])


def test_two_processes_writing_one_output_the_second_gets_a_clear_error(tmp_path, model):
    case = _volume(tmp_path / "case.nii.gz", values=np.random.default_rng(1).random((24, 64, 64)).astype(np.float32))
    out = tmp_path / "seg.nii.gz"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "lumbarseg", "predict", "-i", str(case), "-o", str(out), "--model", str(model)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 2)
    assert_one_line_error(loser, [str(out)], r"exists \(use --overwrite\)")
    from lumbarseg.io.readers import read_volume

    assert read_volume(out).shape == (24, 64, 64)


def test_exclusive_write_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    from lumbarseg.errors import LumbarsegError
    from lumbarseg.io.atomic import all_or_nothing, atomic_path

    dest = tmp_path / "out.txt"
    with pytest.raises(LumbarsegError, match="out.txt: output exists"), atomic_path(dest, overwrite=False) as tmp:
        tmp.write_text("mine")
        dest.write_text("theirs")  # another process finished first
    assert dest.read_text() == "theirs"
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(LumbarsegError, match="b.txt: output exists"), all_or_nothing(overwrite=False) as staging:
        staging.path(first).write_text("mine")
        staging.path(second).write_text("mine")
        second.write_text("theirs")
    assert not first.exists() and second.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "out.txt"]


def test_two_trainings_into_one_run_folder_do_not_mix(run, tmp_path):
    from lumbarseg.training import rundir

    before = snapshot(run)
    with rundir.locked(run):  # a training holds the folder
        result = run_cli(["train", "--resume", run])
    assert_one_line_error(result, [str(run)], "another training is writing this run folder")
    empty = tmp_path / "new"
    empty.mkdir()
    with rundir.locked(empty):
        result = run_cli(["train", "--dataset", json.loads((run / "run.json").read_text())["dataset"],
                          "--config", ROOT / "configs" / "tiny.yml", "--out", empty])
    assert_one_line_error(result, [str(empty)], "another training is writing this run folder")
    assert [p.name for p in empty.iterdir()] == [".lock"]
    assert_unchanged(before, run)


# --- fresh machine -----------------------------------------------------------------------------------------


def _make_dry_run(*args: str, virtual_env: str = "") -> str:
    # as on a fresh shell: no virtual environment, no make variables inherited (`make test PYTHON=...` exports them)
    ignored = ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "SYSTEM_PYTHON", "VENV")
    env = {k: v for k, v in os.environ.items() if k not in ignored}
    if virtual_env:
        env["VIRTUAL_ENV"] = virtual_env
    result = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), *args], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_uses_a_project_venv_outside_a_virtual_environment():
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    plain = _make_dry_run("install")
    assert "-m venv .venv" in plain and ".venv/bin/python -m pip install -q torch==2.13.0" in plain
    inside = _make_dry_run("install", virtual_env="/opt/some-venv")
    assert "-m venv" not in inside and "/opt/some-venv/bin/python -m pip install" in inside
    override = _make_dry_run("install", "PYTHON=/usr/bin/python3.11")
    assert "-m venv" not in override and "/usr/bin/python3.11 -m pip install" in override


def test_the_dev_extra_installs_what_the_tests_run():
    """`make test` builds the package with `python -m build --no-isolation`: setuptools and wheel must be installed
    by the project itself (pyproject's build requirements in the dev extra)."""
    setup = (ROOT / "setup.py").read_text()
    dev = setup.split('"dev": [', 1)[1].split("]", 1)[0]
    requires = (ROOT / "pyproject.toml").read_text().split("requires = [", 1)[1].split("]", 1)[0]
    for name in ["build", "pytest"] + [r.strip().strip('"').split(">")[0] for r in requires.split(",")]:
        assert f'"{name}' in dev, name
