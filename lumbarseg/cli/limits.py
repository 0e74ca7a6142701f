"""``--max-voxels`` / ``--max-slice-pixels``: the size limits of :mod:`lumbarseg.io.limits` as options."""
from __future__ import annotations

import argparse

from lumbarseg.io.limits import DEFAULT_MAX_SLICE_PIXELS, DEFAULT_MAX_VOXELS


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """Add the limit options; :func:`lumbarseg.cli.main` applies them before the command runs."""
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help=f"refuse volumes (as read, or resampled for the model) over N voxels "
                             f"(default {DEFAULT_MAX_VOXELS:,}; about 40 bytes of memory per voxel in predict)")
    parser.add_argument("--max-slice-pixels", type=int, default=None, metavar="N",
                        help=f"refuse 2D slices (PNG, or resampled) over N pixels "
                             f"(default {DEFAULT_MAX_SLICE_PIXELS:,})")
