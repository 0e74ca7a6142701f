"""The codes DICOM outputs use: SNOMED CT for the structures and levels, UCUM for units, and a private scheme
(``99LUMBARSEG``, the "99" prefix DICOM reserves for local schemes) for measurements no standard code names.

Structure codes come from pydicom's DICOM code dictionary (CID 7151 and its vertebra/disc groups) where it has
them; a level it lacks (``V18``) falls back to its class's code.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

SCHEME = "99LUMBARSEG"
# class name -> (SNOMED CT code value, meaning); the property category of all three is Anatomical Structure.
# Vertebra and Vertebral canal: pydicom's DICOM code dictionary (PS3.16 CID 7151 and CID 6115). PS3.16 has no
# code for "any intervertebral disc" (CID 7604 lists the discs of each level only); 360499006 "Intervertebral disc"
# is the one 3D Slicer's TotalSegmentator extension writes in its DICOM SEG (lassoan/SlicerTotalSegmentator,
# TotalSegmentator/Resources/totalsegmentator_snomed_mapping.csv, row "intervertebral_discs").
CLASS_CODES = {
    "vertebra": ("51282000", "Vertebra"),
    "disc": ("360499006", "Intervertebral disc"),
    "canal": ("61853006", "Vertebral canal"),
}
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")
UNITS = {"mm": ("mm", "millimeter"), "deg": ("deg", "degree"), "pct": ("%", "percent"), "ml": ("ml", "milliliter"),
         "ratio": ("{ratio}", "ratio"), "1": ("1", "no units")}


def scheme_identification() -> Any:
    """The Coding Scheme Identification item of ``99LUMBARSEG`` (SOP Common module, for schemes not in PS3.16)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "lumbarseg spine measurements"
    item.CodingSchemeResponsibleOrganization = "lumbarseg"
    return item


def code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, scheme, meaning)


def sct(pair: Tuple[str, str]) -> Any:
    return code(pair[0], "SCT", pair[1])


def class_code(name: str) -> Any:
    """The SNOMED CT code of a model class (a class not listed gets a local code of its own name)."""
    if name in CLASS_CODES:
        return sct(CLASS_CODES[name])
    return code(name, SCHEME, name.replace("_", " "))


def level_code(name: str, kind: str) -> Any:
    """``L4`` -> SCT L4 vertebra, ``L4-L5`` -> SCT L4/L5 disc, ``S1`` -> SCT Sacrum; else the class's code."""
    from pydicom.sr.codedict import codes

    key = {"disc": name.replace("-", "") + "Disc", "sacrum": "Sacrum"}.get(kind, name + "Vertebra")
    try:
        found = getattr(codes.SCT, key)
    except AttributeError:
        return class_code("disc" if kind == "disc" else "vertebra")
    return code(found.value, "SCT", found.meaning)


def measurement_code(key: str) -> Any:
    """A measurement key as a code: SNOMED CT Volume for ``volume_ml``; a spine-report key a local code, the key
    itself (unique where one quantity comes in two units: ``listhesis_mm``, ``listhesis_pct``), meaning its words."""
    if key == "volume_ml":
        return code("118565006", "SCT", "Volume")
    name = unit_of(key)[1]
    words = name.replace("_", " ") + (" percent" if key.endswith("_pct") else "")
    return code(key, SCHEME, words[:1].upper() + words[1:])


def unit_of(key: str) -> Tuple[Any, str]:
    """(UCUM unit, key without its unit suffix) from a measurement key's suffix: ``_mm``, ``_deg``, ``_pct``;
    ratios and indices are ``{ratio}``, grades have no unit."""
    for suffix in ("mm", "deg", "pct", "ml"):
        if key.endswith("_" + suffix):
            return _unit(suffix), key[: -len(suffix) - 1]
    return _unit("ratio" if key.endswith(("ratio", "index")) else "1"), key


def _unit(name: str) -> Any:
    value, meaning = UNITS[name]
    return code(value, "UCUM", meaning)


def flag_code(flag: str) -> Any:
    return code(flag, SCHEME, flag.replace("_", " "))


def present() -> Any:
    return code("52101004", "SCT", "Present")


def confidence(value: Optional[str]) -> Any:
    """Level naming confidence ("high" or "uncertain") as SNOMED CT qualifier values."""
    return code("75540009", "SCT", "High") if value == "high" else code("64957009", "SCT", "Uncertain")
