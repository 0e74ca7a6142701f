"""The same augmentation spec as real pyecvl containers, for the EDDL engine's DLDataset.

The spec is written out as ECVL text (:func:`~lumbarseg.transforms.ecvl_spec.format_spec`, every parameter
explicit) and handed to ``ecvl.AugmentationFactory``, so ECVL itself parses what lumbarseg checked.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from lumbarseg.errors import LumbarsegError
from lumbarseg.transforms.ecvl_spec import AugSpec, coerce_spec, format_spec, with_model_range


def build_ecvl_augmentation(spec: Union[AugSpec, str, None], model_range: bool = True) -> Any:
    """An ``ecvl.Augmentation`` for the spec; with ``model_range`` the same final AugToFloat32 the loader adds."""
    import pyeddl  # noqa: F401  (pyecvl must be imported after pyeddl)
    from pyecvl import ecvl

    parsed: Optional[AugSpec] = coerce_spec(spec)
    if model_range:
        parsed = with_model_range(parsed)
    if parsed is None:
        return None
    text = format_spec(parsed)
    try:
        augmentation = ecvl.AugmentationFactory.create(text)
    except RuntimeError as exc:
        raise LumbarsegError("augmentation", f"ECVL rejected the spec: {exc}") from None
    if augmentation is None:
        raise LumbarsegError("augmentation", f"ECVL did not recognise {parsed.name}")
    return augmentation


def build_dataset_augmentations(training: Union[AugSpec, str, None], validation: Union[AugSpec, str, None] = None,
                                test: Union[AugSpec, str, None] = None) -> Any:
    """``ecvl.DatasetAugmentations`` for DLDataset: one container per split, each ending in the model range."""
    import pyeddl  # noqa: F401
    from pyecvl import ecvl

    return ecvl.DatasetAugmentations([build_ecvl_augmentation(spec) for spec in (training, validation, test)])
