"""The shipped models by name: ``accurate`` (the default) and ``fast``, each an ONNX file with a model card.

Plain data, importable without onnx or an engine (the CLI's help text reads the names). Files live in
``models/`` of the source tree, or ``lumbarseg/resources/`` in an installed wheel (setup.py packs them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from lumbarseg.errors import LumbarsegError


@dataclass(frozen=True)
class ShippedModel:
    """A model that ships with lumbarseg (its recipe: the Makefile's ``make model MODEL=<name>``)."""

    name: str
    file: str  # file name in models/ (source tree) or lumbarseg/resources/ (installed)
    purpose: str

    @property
    def card(self) -> str:
        return self.file[:-len(".onnx")] + ".md"


MODELS: Dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel("accurate", "lumbarseg-spine-t2-accurate.onnx", "the default: best on the validation patients"),
    ShippedModel("fast", "lumbarseg-spine-t2-fast.onnx", "half the network work: large batches, small machines"),
)}
DEFAULT_MODEL = "accurate"
MODEL_CHOICES = f"{', '.join(MODELS)} or a .onnx file"
MODEL_HELP = f"{MODEL_CHOICES} (default: {DEFAULT_MODEL})"


def _folders() -> List[Path]:
    """Where shipped files are looked for, in order: the source tree's models/, then the wheel's resources/."""
    package = Path(__file__).resolve().parents[1]
    return [package.parent / "models", package / "resources"]


def shipped_file(name: str) -> Optional[Path]:
    """The installed file of a shipped model or card (``name`` a file name), or None when it is not installed."""
    for folder in _folders():
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_model(model: Union[str, Path, None] = None) -> Path:
    """The ONNX file of a model given by name or path.

    A name wins over a file of the same name in the working directory (write `./fast` for the file).

    Args:
        model: a shipped model's name (`accurate`, `fast`; None: the default, `accurate`) or a file path.

    Returns:
        The file's path: in `models/` of a checkout or `lumbarseg/resources/` of an installed wheel.

    Raises:
        LumbarsegError: an unknown name that is no file, listing the names.
    """
    key = DEFAULT_MODEL if model is None else str(model)
    if key in MODELS:
        path = shipped_file(MODELS[key].file)
        if path is None:
            raise LumbarsegError(f"models/{MODELS[key].file}",
                                 f"the {key!r} model is not installed; pass --model M.onnx")
        return path
    path = Path(model)  # type: ignore[arg-type]
    if not path.is_file():
        raise LumbarsegError(path, f"no such model file, nor a shipped model's name ({', '.join(MODELS)})")
    return path


def describe() -> List[Dict[str, Any]]:
    """One row per shipped model: name, file (None when not installed), spacing, input slice offsets (mm; one per
    channel), parameters, card, purpose."""
    from lumbarseg.model import metadata

    rows = []
    for entry in MODELS.values():
        path = shipped_file(entry.file)
        row: Dict[str, Any] = {"name": entry.name, "default": entry.name == DEFAULT_MODEL, "file": path,
                               "spacing": None, "slices": None, "parameters": None, "card": shipped_file(entry.card),
                               "purpose": entry.purpose}
        if path is not None:
            meta = metadata.read(path)
            row["spacing"] = list(meta.spacing)
            row["slices"] = list(meta.slice_offsets)
            row["parameters"] = meta.spec.architecture().num_parameters()
        rows.append(row)
    return rows
