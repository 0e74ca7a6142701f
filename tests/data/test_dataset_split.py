"""Patient-level splits: deterministic, disjoint, complete."""
from __future__ import annotations

import pytest

from lumbarseg.data.split import SplitSpec, parse_fractions, parse_patient_list, split_patients
from lumbarseg.errors import LumbarsegError

PATIENTS = [str(p) for p in range(1, 33)]


def test_deterministic_and_independent_of_input_order():
    spec = SplitSpec((0.8, 0.1, 0.1), seed=3)
    first = split_patients(PATIENTS, spec)
    assert split_patients(list(reversed(PATIENTS)) + PATIENTS[:4], spec) == first
    assert split_patients(PATIENTS, SplitSpec((0.8, 0.1, 0.1), seed=4)) != first


def test_fractions_cover_all_patients_disjointly():
    out = split_patients(PATIENTS, SplitSpec((0.8, 0.1, 0.1), seed=0))
    assert [len(out[s]) for s in ("training", "validation", "test")] == [26, 3, 3]
    assert sorted(sum(out.values(), []), key=int) == PATIENTS
    assert out["training"] == sorted(out["training"], key=int)  # natural order within a split


def test_small_sets_give_each_split_a_patient_when_possible():
    assert {k: len(v) for k, v in split_patients(["a", "b", "c"], SplitSpec()).items()} == \
        {"training": 1, "validation": 1, "test": 1}
    # one patient: the empty splits are left out
    assert split_patients(["11"], SplitSpec()) == {"training": ["11"]}
    assert split_patients(["1", "2"], SplitSpec((1.0, 0.0, 0.0))) == {"training": ["1", "2"]}


def test_explicit_patients_then_fractions_for_the_rest():
    out = split_patients(PATIENTS, SplitSpec((0.8, 0.1, 0.1), seed=0, fixed={"test": ("11", "22")}))
    assert out["test"] == ["11", "22"]
    assert len(out["training"]) + len(out["validation"]) == 30
    assert len(out["validation"]) == 3  # 0.1 / 0.9 of 30


def test_bad_split_requests():
    with pytest.raises(LumbarsegError, match="'99' is not in the dataset"):
        split_patients(PATIENTS, SplitSpec(fixed={"test": ("99",)}))
    with pytest.raises(LumbarsegError, match="also given for"):
        split_patients(PATIENTS, SplitSpec(fixed={"test": ("1",), "validation": ("1",)}))
    with pytest.raises(LumbarsegError, match="belong to no split"):
        split_patients(PATIENTS, SplitSpec((0.0, 1.0, 0.0), fixed={"validation": ("1",)}))
    with pytest.raises(LumbarsegError, match="unknown split"):
        SplitSpec(fixed={"holdout": ("1",)})


def test_parse_fractions():
    assert parse_fractions("0.8,0.1,0.1") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_fractions("8,2") == pytest.approx((0.8, 0.2, 0.0))
    for bad in ("a,b", "0,0,0", "-1,2,1", "1,1,1,1"):
        with pytest.raises(LumbarsegError, match="--split"):
            parse_fractions(bad)
    assert parse_patient_list(" 11, 22,") == ("11", "22")
