"""Every module imports and the CLI answers --help, with and without the optional engines.

`make test-py38` runs this file under Python 3.8 (the DeepHealth stack's Python), where it catches
what vermin cannot see statically (e.g. `X | None` or `list[int]` evaluated at import time).
"""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lumbarseg
from lumbarseg.cli import COMMAND_MODULES

OPTIONAL_ENGINES = ("torch", "pyeddl", "pyecvl")
MODULES = sorted(  # __main__ runs the CLI on import
    m.name for m in pkgutil.walk_packages(lumbarseg.__path__, prefix="lumbarseg.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL_ENGINES:
            pytest.skip(f"{name} needs the optional engine {exc.name}")
        raise


def test_help_without_engines() -> None:
    """`lumbarseg [COMMAND] --help` works and imports no engine, even where the engines cannot be imported."""
    commands = [[]] + [[name] for name in COMMAND_MODULES]
    script = textwrap.dedent(
        f"""
        import sys
        for name in {OPTIONAL_ENGINES!r}:
            sys.modules[name] = None  # any import of it now raises ImportError
        from lumbarseg.cli import main
        for command in {commands!r}:
            try:
                main(command + ["--help"])
            except SystemExit as exc:
                assert exc.code == 0, (command, exc.code)
        loaded = [m for m in sys.modules if m.split(".")[0] in {OPTIONAL_ENGINES!r} and sys.modules[m] is not None]
        assert not loaded, loaded
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("usage: lumbarseg") == len(commands)


def test_predict_imports_only_what_it_uses(tmp_path) -> None:
    """`lumbarseg predict` on a NIfTI volume (no progress bar, no --measure) loads none of the slow imports it
    does not need: the other commands' config, onnx (metadata come from the onnxruntime session),
    scipy.ndimage (post-processing labels with cc3d), pydicom (nibabel's DICOM extensions stay raw bytes),
    tqdm (no bar off a terminal), yaml, matplotlib, torch; and the mask is written."""
    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_models import threshold_model, tiny_metadata
    from volume_synth import write_case

    model = threshold_model(tmp_path / "m.onnx", tiny_metadata(spacing=(0.5, 0.7)))
    write_case(tmp_path / "case.nii.gz")
    script = textwrap.dedent(
        f"""
        import sys
        from lumbarseg.cli import main
        rc = main(["predict", "-i", {str(tmp_path / "case.nii.gz")!r}, "-o", {str(tmp_path / "out.nii.gz")!r},
                   "--model", {str(model)!r}])
        heavy = ("onnx", "scipy.ndimage", "pydicom", "tqdm", "yaml", "matplotlib", "torch", "lumbarseg.config",
                 "lumbarseg.engines.base")
        print(rc, sorted({{m for m in sys.modules for h in heavy if m == h or m.startswith(h + ".")}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "[]"], result.stdout
    assert (tmp_path / "out.nii.gz").is_file()


def test_nibabel_without_pydicom_keeps_dicom_extensions_and_pydicom_importable(tmp_path) -> None:
    """lumbarseg imports nibabel without pydicom: a NIfTI's DICOM header extension is read and written back as
    raw bytes, and pydicom still imports afterwards (DICOM input needs it)."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from lumbarseg.io.readers import read_volume, write_volume
        import nibabel as nib
        assert "pydicom" not in sys.modules
        image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
        image.header.extensions.append(nib.nifti1.Nifti1Extension(2, b"not a DICOM dataset"))
        nib.save(image, {str(tmp_path / "ext.nii.gz")!r})
        volume = read_volume({str(tmp_path / "ext.nii.gz")!r})
        write_volume(volume, {str(tmp_path / "copy.nii.gz")!r})
        copy = nib.load({str(tmp_path / "copy.nii.gz")!r})
        print(int(volume.array.sum()), [bytes(e.get_content()) for e in copy.header.extensions])
        import pydicom
        print(pydicom.Dataset.__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["276 [b'not a DICOM dataset']", "Dataset"]
