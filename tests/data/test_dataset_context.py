"""2.5D datasets (`lumbarseg dataset context`) and the portable loader's multi-channel batches."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from synthetic_training import make_dataset

from lumbarseg.cli import main
from lumbarseg.data.context import parse_offsets, with_slice_channels, write_with_slice_channels
from lumbarseg.data.deephealth_yaml import load_dataset, write_dataset
from lumbarseg.data.loader import SliceLoader
from lumbarseg.errors import LumbarsegError
from lumbarseg.io.slices import read_grey


@pytest.fixture
def flat(tmp_path):
    """8 slices: patients p0 (s0-s3, slices 10-13, training) and p1 (s4-s7, validation)."""
    return make_dataset(tmp_path / "data", n_train=4, n_val=4, per_patient=4)


def test_locations_are_the_neighbours_with_edges_repeated(flat):
    out = write_with_slice_channels(flat, flat.parent / "ctx.yml", [-2, 0, 1])
    again = load_dataset(flat.parent / "ctx.yml")
    assert again.slice_channels == [-2, 0, 1] and out.slice_channels == [-2, 0, 1]
    locations = [[loc.split("/")[-1] for loc in s.location] for s in again.samples]
    assert locations[0] == ["s0.png", "s0.png", "s1.png"]  # first slice of p0: -2 repeats it
    assert locations[2] == ["s0.png", "s2.png", "s3.png"]
    assert locations[3] == ["s1.png", "s3.png", "s3.png"]  # last slice of p0: +1 repeats it
    assert locations[4] == ["s4.png", "s4.png", "s5.png"]  # p1 never borrows p0's slices
    original = load_dataset(flat)
    assert [s.label for s in again.samples] == [s.label for s in original.samples]
    assert [s.values for s in again.samples] == [s.values for s in original.samples]
    assert again.split == original.split
    assert again.pairs("training") == original.pairs("training")  # the sample's own slice, as before
    assert [images[1] for images, _ in again.channel_pairs("training")] == [i for i, _ in original.pairs("training")]


def test_written_elsewhere_locations_still_name_the_same_files(flat, tmp_path):
    other = tmp_path / "elsewhere" / "ctx.yml"
    other.parent.mkdir()
    write_with_slice_channels(flat, other, [-1, 0, 1])
    moved, original = load_dataset(other), load_dataset(flat)
    for (images, mask), (image, own_mask) in zip(moved.channel_pairs("training"), original.pairs("training")):
        assert images[1].resolve() == image.resolve() and mask.resolve() == own_mask.resolve()


def test_bad_requests_are_refused_and_inputs_kept(flat, tmp_path):
    before = flat.read_bytes()
    with pytest.raises(LumbarsegError, match="output is the input"):
        write_with_slice_channels(flat, flat, [-1, 0, 1], overwrite=True)
    assert flat.read_bytes() == before
    write_with_slice_channels(flat, tmp_path / "ctx.yml", [-1, 0, 1])
    with pytest.raises(LumbarsegError, match="output exists"):
        write_with_slice_channels(flat, tmp_path / "ctx.yml", [-1, 0, 1])
    with pytest.raises(LumbarsegError, match="already has slice channels"):
        write_with_slice_channels(tmp_path / "ctx.yml", tmp_path / "again.yml", [-1, 0, 1])
    plain = make_dataset(tmp_path / "plain")  # no patient/slice features
    with pytest.raises(LumbarsegError, match="no 'slice' feature"):
        with_slice_channels(load_dataset(plain), [-1, 0, 1], plain.parent)
    ds = load_dataset(flat)
    del ds.meta["slice_spacing"]
    with pytest.raises(LumbarsegError, match="no slice spacing"):
        with_slice_channels(ds, [-1, 0, 1], flat.parent)
    for text in ("-1,1", "0,0", "a,0", "-1,0,1,2,3,4,5,6,7,8"):
        with pytest.raises(LumbarsegError, match="--slices"):
            parse_offsets(text)
    assert parse_offsets("-2,0,2") == [-2, 0, 2]


def test_channel_count_must_match_slice_channels(flat):
    ds = with_slice_channels(load_dataset(flat), [-1, 0, 1], flat.parent)
    ds.meta["slice_channels"] = [0, 1]
    write_dataset(ds, flat.parent / "odd.yml")
    with pytest.raises(LumbarsegError, match="3 channel locations, but lumbarseg.slice_channels names 2"):
        load_dataset(flat.parent / "odd.yml").channel_pairs("training")


def test_cli_writes_the_dataset(flat, capsys):
    out = flat.parent / "ctx.yml"
    assert main(["dataset", "context", str(flat), "--slices=-1,0,1", "-o", str(out)]) == 0
    assert "8 slices of 2 patient(s)" in capsys.readouterr().out
    assert yaml.safe_load(out.read_text())["lumbarseg"]["slice_channels"] == [-1, 0, 1]
    assert main(["dataset", "check", str(out)]) == 0
    assert main(["dataset", "context", str(flat), "--slices=1,2", "-o", str(flat.parent / "bad.yml")]) == 2
    assert "--slices" in capsys.readouterr().err and not (flat.parent / "bad.yml").exists()


def test_loader_stacks_channels_under_one_augmentation_draw(flat):
    ds = with_slice_channels(load_dataset(flat), [-1, 0, 1], flat.parent)
    plain = SliceLoader(ds, "training", 4, augmentation=None, shuffle=False, workers=0)
    images, labels = next(iter(plain))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 32, 32)
    for row, (paths, mask) in enumerate(ds.channel_pairs("training")):
        for channel, path in enumerate(paths):
            np.testing.assert_allclose(images[row, channel], read_grey(path) / 255.0, atol=1e-6)
        np.testing.assert_array_equal(labels[row], read_grey(mask))
    spec = "SequentialAugmentationContainer\n AugRotate angle=[-30,30]\n AugAdditiveLaplaceNoise std_dev=[5,10]\nend"
    augmented = SliceLoader(ds, "training", 4, augmentation=spec, shuffle=False, workers=0)
    images, labels = next(iter(augmented))
    # sample 0 is p0's first slice: channel -1 repeats it, so one draw gives both channels the same pixels
    np.testing.assert_array_equal(images[0, 0], images[0, 1])
    assert not np.allclose(images[0, 1], read_grey(ds.channel_pairs("training")[0][0][1]) / 255.0, atol=0.05)
    single = SliceLoader(load_dataset(flat), "training", 4, augmentation=spec, shuffle=False, workers=0)
    one_images, one_labels = next(iter(single))
    np.testing.assert_array_equal(images[:, 1:2], one_images)  # the centre channel is the 2D loader's image
    np.testing.assert_array_equal(labels, one_labels)
