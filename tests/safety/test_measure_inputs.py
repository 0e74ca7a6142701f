"""Bad input for `lumbarseg measure`: one error line naming the file and the problem, nothing written.

Empty mask, a mask with no disc, a single slice, a spine that runs sideways (an axial stack read as
sagittal), a label map without the classes that levels need.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from corpus import assert_one_line_error, assert_unchanged, run_cli, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from phantoms import DISC, Element, Phantom  # noqa: E402

from lumbarseg.io.readers import write_volume  # noqa: E402
from lumbarseg.io.volume import Volume, affine_from_spacing  # noqa: E402

SPACING = (2.0, 1.0, 1.0)


def spine() -> np.ndarray:
    """A small valid spine: three discs and three vertebrae with a canal (lumbarseg class values)."""
    elements = []
    for upper, lower in (("L5", "S1"), ("L4", "L5"), ("L3", "L4")):
        elements += [Element("disc", f"{upper}-{lower}", 8, 8), Element("body", upper, 22, 22)]
    phantom = Phantom(elements, SPACING, (16, 110, 90), x_centre=16.0, canal_diameter=12.0, start=(100.5, 10.5))
    return phantom.build()[0]


def write(folder: Path, name: str, array: np.ndarray, spacing=SPACING) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_volume(Volume(array.astype(np.uint8), affine_from_spacing(spacing, "RIP")), path)
    return path


def check(tmp_path: Path, mask: Path, problem: str, extra=()) -> None:
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = run_cli(["measure", "-i", mask, "-o", out, *extra])
    assert_one_line_error(result, [mask.name], problem)
    assert_unchanged(before, tmp_path)
    assert not out.exists()


def test_valid_spine_measures(tmp_path):
    """The corpus' base case works, so each bad case below fails for its own reason."""
    mask = write(tmp_path / "in", "spine.nii.gz", spine())
    result = run_cli(["measure", "-i", mask, "-o", tmp_path / "out"])
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["spine_levels.ctbl", "spine_levels.label.txt", "spine_levels.nii.gz", "spine_spine.csv",
                     "spine_spine.json", "spine_spine.png"]


def test_empty_mask(tmp_path):
    check(tmp_path, write(tmp_path / "in", "empty.nii.gz", np.zeros((16, 60, 50))), "empty")


def test_mask_without_disc(tmp_path):
    array = spine()
    array[array == DISC] = 0
    check(tmp_path, write(tmp_path / "in", "nodisc.nii.gz", array), "no disc")


def test_single_slice(tmp_path):
    array = spine()
    check(tmp_path, write(tmp_path / "in", "single.nii.gz", array[8:9]), "single slice")


def test_spine_running_sideways(tmp_path):
    # an axial stack read as sagittal: head-foot now runs along the slice axis
    array = np.ascontiguousarray(np.transpose(spine(), (1, 0, 2)))
    check(tmp_path, write(tmp_path / "in", "axial.nii.gz", array, spacing=(1.0, 2.0, 1.0)), "runs left-right")


@pytest.mark.parametrize("mapping", ["{bone: [1], disc: [2], canal: [3]}", "{vertebra: [1, 2], canal: [3]}"])
def test_label_map_without_needed_classes(tmp_path, mapping):
    mask = write(tmp_path / "in", "spine.nii.gz", spine())
    label_map = tmp_path / "in" / "map.yml"
    label_map.write_text(mapping + "\n")
    check(tmp_path, mask, "label map has no (vertebra|disc) class", ["--label-map", label_map])
