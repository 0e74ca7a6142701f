"""How builders read patient ids and slice numbers from file names (light: the CLI imports it for --help)."""
from __future__ import annotations

# Regexes searched in a file name without suffix: (?P<patient>...) is required, (?P<slice>...) optional.
DEFAULT_SLICE_PATTERN = r"(?P<patient>\d+)_t2_SPACE_slice(?P<slice>\d+)"  # SPIDER PNG export names
DEFAULT_VOLUME_PATTERN = r"(?P<patient>.+)"  # each volume is its own patient
SPIDER_SPACING = (0.47, 0.47, 0.9)  # row, col, between slices (mm) of the SPIDER T2 SPACE export
