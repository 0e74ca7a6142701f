"""Rebuild datasets/sample/ from the shared SPIDER PNG export (provenance of the shipped sample).

    python datasets/make_sample.py ../shared/data/spider-t2space-png

Patient 161 is in the test split of the shipped models (the dataset built by `make model`), so the
demo segments a patient the models never saw. The PNG export lost the
scanner geometry: the volume gets an axis-aligned RIP affine with SPIDER's spacing.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lumbarseg.data.patterns import SPIDER_SPACING
from lumbarseg.io.readers import read_png_stack, write_volume

PATIENT = "161"
SLICES = range(62, 70)  # 8 central sagittal slices: vertebral bodies, discs and canal
HERE = Path(__file__).resolve().parent / "sample"


def main(spider_dir: str) -> None:
    root = Path(spider_dir)
    for kind, name in (("images", "t2"), ("masks", "t2_labels")):
        files = [root / kind / f"{PATIENT}_t2_SPACE_slice{k}.png" for k in SLICES]
        volume = read_png_stack(files, spacing=(SPIDER_SPACING[2], SPIDER_SPACING[0], SPIDER_SPACING[1]))
        write_volume(volume, HERE / f"spider{PATIENT}_{name}.nii.gz")
        print(f"wrote {HERE / f'spider{PATIENT}_{name}.nii.gz'}: {volume.shape}, spacing {volume.spacing}")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "spider-t2space-png"
    main(sys.argv[1] if len(sys.argv) > 1 else str(default))
