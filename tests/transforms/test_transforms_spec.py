"""ECVL augmentation text <-> spec tree: parsing, defaults, round trip, and each kind of bad spec."""
from __future__ import annotations

import pytest

from lumbarseg.errors import LumbarsegError
from lumbarseg.transforms.ecvl_spec import (
    AUGMENTATIONS,
    ONE_OF,
    SEQUENTIAL,
    AugSpec,
    Range,
    format_spec,
    make_spec,
    parse_spec,
    with_model_range,
)

BRIEF = """
SequentialAugmentationContainer
    AugResizeDim dims=(320,256) interp="linear"
    AugRotate angle=[-10,10]
    AugMirror p=0.5
    OneOfAugmentationContainer p=0.5
        AugGaussianBlur sigma=[0.5,1.0]
        AugAdditiveLaplaceNoise std_dev=[0,0.02]
    end
end
"""


def test_parse_tree_values_and_defaults():
    spec = parse_spec(BRIEF)
    assert spec.name == SEQUENTIAL
    assert [c.name for c in spec.children] == ["AugResizeDim", "AugRotate", "AugMirror", ONE_OF]
    resize, rotate, mirror, one_of = spec.children
    assert resize.params == {"dims": (320.0, 256.0), "interp": "linear", "gt_interp": "nearest"}
    assert rotate.params["angle"] == Range(-10.0, 10.0) and rotate.params["scale"] == 1.0
    assert "center" not in rotate.params  # optional without default: absent, ECVL uses the image centre
    assert mirror.params == {"p": 0.5}
    assert one_of.params == {"p": 0.5}
    assert one_of.children[1].params == {"std_dev": Range(0.0, 0.02)}


def test_round_trip_is_exact_and_format_is_a_fixed_point():
    spec = parse_spec(BRIEF)
    text = format_spec(spec)
    assert parse_spec(text) == spec
    assert format_spec(parse_spec(text)) == text
    assert text.splitlines()[1] == '    AugResizeDim dims=(320,256) interp="linear" gt_interp="nearest"'
    assert text.splitlines()[-1] == "end" and text.splitlines()[-2] == "    end"


def test_every_registered_augmentation_round_trips_with_required_params():
    samples = {"range": Range(0.5, 1.0), "vector": (8.0, 8.0), "number": 0.5, "number|vector": 1.0}
    for name, schema in AUGMENTATIONS.items():
        params = {k: samples[p.kind] for k, p in schema.items() if p.required}
        if name == "AugScaleFromTo":
            params = {"old_min": 0.0, "old_max": 1.0, "new_min": 0.0, "new_max": 2.0}
        if name == "AugGridDistortion":
            params["num_steps"] = Range(2.0, 4.0)
        children = (AugSpec("AugMirror", {"p": 0.5}),) if name in (SEQUENTIAL, ONE_OF) else ()
        spec = make_spec(name, children=children, **params)
        assert parse_spec(format_spec(spec)) == spec, name


def test_ecvl_unsafe_optionals_are_always_written():
    # ECVL 1.0.3 reads garbage when these are left out, so the formatter always writes them
    text = format_spec(parse_spec("AugToFloat32 divisor=255"))
    assert text == "AugToFloat32 divisor=255 divisor_gt=1"
    text = format_spec(parse_spec("AugElasticTransform alpha=[1,2] sigma=[3,4]"))
    assert 'border_type="reflect_101" border_value=0' in text
    assert 'border_type="constant" border_value=0' in format_spec(parse_spec("AugRandomCrop size=(64,32)"))


def test_several_top_lines_become_a_sequence_and_comments_are_ignored():
    spec = parse_spec("# training\nAugMirror p=1\n\n   AugFlip\n")
    assert spec == AugSpec(SEQUENTIAL, {}, (AugSpec("AugMirror", {"p": 1.0}), AugSpec("AugFlip", {"p": 0.5})))


def test_make_spec_from_python_values():
    spec = make_spec("AugRotate", angle=[-5, 5], center=[10, 20])
    assert spec.params["angle"] == Range(-5.0, 5.0) and spec.params["center"] == (10.0, 20.0)


def test_with_model_range_appends_to_float32_only_when_the_spec_sets_no_range():
    plain = with_model_range(parse_spec("AugMirror"))
    assert [c.name for c in plain.children] == ["AugMirror", "AugToFloat32"]
    assert plain.children[-1].params == {"divisor": 255.0, "divisor_gt": 1.0}
    assert with_model_range(None).children == (AugSpec("AugToFloat32", {"divisor": 255.0, "divisor_gt": 1.0}),)
    own = parse_spec("AugMirror\nAugToFloat32 divisor=1\nAugNormalize mean=100 std=50")
    assert with_model_range(own) == own
    nested = with_model_range(parse_spec(BRIEF))
    assert nested.children[:-1] == parse_spec(BRIEF).children


@pytest.mark.parametrize("text, message", [
    ("AugScale scale=(2,2)", "ECVL has no AugScale"),
    ("AugRotat angle=[-5,5]", "did you mean AugRotate"),
    ("AugRotate angle=[-5,5] angel=3", "unknown parameter 'angel'"),
    ("AugRotate", "missing required parameter 'angle'"),
    ("AugRotate angle=5", "angle must be a range"),
    ("AugRotate angle=[5,-5]", "min > max"),
    ("AugRotate angle=[1,2,3]", "exactly two values"),
    ("AugRotate angle=[-5,5] interp=\"bicubic\"", "not one of"),
    ("AugRotate angle=[-5,5] gt_interp=\"linear\"", "masks are class indices"),
    ("AugMirror p=1.5", "probability"),
    ("AugResizeDim dims=(256)", "two positive integers"),
    ("AugResizeDim dims=(256,12.5)", "two positive integers"),
    ("AugToFloat32 divisor=255 divisor_gt=255", "divisor_gt must be 1"),
    ("AugDivBy255", "destroys class-index masks"),
    ("AugNormalize mean=(1,2) std=3", "both be numbers"),
    ("AugNormalize mean=1 std=0", "std cannot be zero"),
    ("AugGammaContrast gamma=[x,2]", "cannot read value"),
    ("AugMirror p", "expected key=value"),
    ("AugMirror p=0.5 p=0.2", "given twice"),
    ("OneOfAugmentationContainer\n AugMirror\nend", "missing required parameter 'p'"),
    ("SequentialAugmentationContainer\n AugMirror", "missing its 'end'"),
    ("SequentialAugmentationContainer\nend", "holds no augmentation"),
    ("AugMirror\nend", "'end' without an open container"),
    ("", "empty augmentation spec"),
])
def test_bad_specs_name_the_problem(text, message):
    with pytest.raises(LumbarsegError, match=message) as info:
        parse_spec(text, source="train.yml: augmentation")
    assert info.value.source.startswith("train.yml: augmentation")


def test_error_names_the_line():
    with pytest.raises(LumbarsegError) as info:
        parse_spec("SequentialAugmentationContainer\n  AugMirror\n  AugBlur sigma=[1,2]\nend", source="cfg")
    assert info.value.source == "cfg, line 3" and "AugBlur" in info.value.problem
