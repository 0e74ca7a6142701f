"""Test volumes from the SPIDER PNG export, as acquired (SPACE) and degraded to a routine clinical protocol.

    python datasets/routine_protocol.py ../shared/data/spider-t2space-png build/test-volumes
    # -> build/test-volumes/{original,routine}/{images,labels}/<patient>.nii.gz

``original`` stacks each patient's slices into a NIfTI volume (0.9 mm between slices, 0.47 mm in-plane,
the PNG grey values of image and mask unchanged). ``routine`` simulates a routine 2D turbo-spin-echo
sagittal series from the same patient, a documented and seeded degradation:

1. **Thick, sparse slices**: every ``--step``-th slice (default 4: 3.6 mm apart); each kept slice is the
   mean of ``--thickness`` neighbouring thin slices centred on it (default 3: 2.7 mm thick, partial volume
   as in a thick slice); its mask is the centre slice's.
2. **Coarser pixels**: each slice resampled in-plane to ``--pixel`` mm (default 0.75 mm) with area
   averaging; the mask with nearest neighbour on the same grid.
3. **Noise**: Rician noise (magnitude of a complex Gaussian) with sigma = ``--noise`` (default 0.04) times
   the volume's 99th intensity percentile, drawn from ``--seed``.

Both sets keep the masks' raw values (``--label-map spider-png``), so ``lumbarseg evaluate`` scores a model
on each grid. The default patients are the test split of the shipped models (``--split 0.8,0.1,0.1 --seed 0``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence, Tuple

import cv2
import numpy as np

from lumbarseg.data.patterns import SPIDER_SPACING
from lumbarseg.io.readers import png_stacks, read_png_stack, write_volume
from lumbarseg.io.volume import Volume, affine_from_spacing

TEST_PATIENTS = ("161", "209", "239")


def degrade(image: Volume, mask: Volume, step: int = 4, thickness: int = 3, pixel: float = 0.75,
            noise: float = 0.04, seed: int = 0) -> Tuple[Volume, Volume]:
    """A routine-protocol version of a canonical (RIP) image volume and its mask, on a new common grid."""
    array = image.array.astype(np.float32)
    slice_mm, row_mm, col_mm = image.spacing
    keep = np.arange(step // 2, array.shape[0], step)
    half = thickness // 2
    slabs = np.stack([array[max(k - half, 0):k - half + thickness].mean(axis=0) for k in keep])
    rows = max(1, round(array.shape[1] * row_mm / pixel))
    cols = max(1, round(array.shape[2] * col_mm / pixel))
    slabs = np.stack([cv2.resize(s, (cols, rows), interpolation=cv2.INTER_AREA) for s in slabs])
    labels = np.stack([cv2.resize(mask.array[k], (cols, rows), interpolation=cv2.INTER_NEAREST) for k in keep])
    rng = np.random.default_rng(seed)
    sigma = noise * float(np.percentile(slabs, 99))
    noisy = np.hypot(slabs + rng.normal(0, sigma, slabs.shape), rng.normal(0, sigma, slabs.shape))
    affine = affine_from_spacing((slice_mm * step, pixel, pixel))
    affine[:3, 3] = image.affine[:3, :3] @ np.array([keep[0], 0.0, 0.0]) + image.affine[:3, 3]
    out_image = Volume(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), affine, image.source)
    return out_image, Volume(labels.astype(mask.array.dtype), affine, mask.source)


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spider_dir", type=Path, help="the SPIDER PNG export (images/, masks/)")
    parser.add_argument("out", type=Path, help="output folder (original/ and routine/ are written in it)")
    parser.add_argument("--patients", default=",".join(TEST_PATIENTS), help="comma-separated patient ids")
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--thickness", type=int, default=3)
    parser.add_argument("--pixel", type=float, default=0.75)
    parser.add_argument("--noise", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, masks = png_stacks(args.spider_dir / "images"), png_stacks(args.spider_dir / "masks")
    spacing = (SPIDER_SPACING[2], SPIDER_SPACING[0], SPIDER_SPACING[1])
    for n, patient in enumerate(args.patients.split(",")):
        stem = f"{patient}_t2_SPACE_slice"
        image = read_png_stack(images[stem], spacing=spacing)
        mask = read_png_stack(masks[stem], spacing=spacing)
        routine = degrade(image, mask, args.step, args.thickness, args.pixel, args.noise, args.seed + n)
        for kind, (img, lab) in (("original", (image, mask)), ("routine", routine)):
            write_volume(img, args.out / kind / "images" / f"{patient}.nii.gz")
            write_volume(lab, args.out / kind / "labels" / f"{patient}.nii.gz")
            print(f"{kind}/{patient}: {img.shape} voxels of {tuple(round(s, 2) for s in img.spacing)} mm")


if __name__ == "__main__":
    main()
