"""HDF5 cache: exact round trip, use by load_split, rejection when the settings differ."""

import json
import shutil
import time

import h5py
import numpy as np
import pytest
from datasets_on_disk import VOC_VAL, make_dataset, make_voc

from snnseg_jax.data import cache, loading, preprocess
from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.split import Split

SIZE = 16


def assert_same_split(a: Split, b: Split):
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.inputs.dtype == b.inputs.dtype and a.labels.dtype == b.labels.dtype
    assert a.ids == b.ids and a.class_names == b.class_names
    for field in ("recordings", "frame_numbers"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or np.array_equal(x, y)


@pytest.mark.parametrize("name,split", [("voc2012", "val"), ("ddd17", "test")])
def test_prepare_round_trips_exactly_and_load_uses_the_cache(tmp_path, name, split):
    root = make_dataset(tmp_path, "voc" if name == "voc2012" else "lists")
    from_files = loading.load_split(name, root, split, SIZE)
    path, count, _ = loading.prepare_split(name, root, split, SIZE)
    assert path == root / "snnseg_cache" / f"{name}_{split}_{SIZE}.h5" and count == len(from_files)
    assert_same_split(loading.load_split(name, root, split, SIZE), from_files)
    # Proof that the cache, not the files, served it: the decoded inputs are gone.
    for gone in list(root.rglob("*.jpg")) + list(root.rglob("*.npy")):
        gone.write_bytes(b"")
    assert_same_split(loading.load_split(name, root, split, SIZE), from_files)


def test_cache_dir_setting_moves_the_cache(tmp_path):
    root, _ = make_voc(tmp_path / "data")
    path, _, _ = loading.prepare_split("voc2012", root, "val", SIZE, cache_dir=tmp_path / "caches")
    assert path == tmp_path / "caches" / f"voc2012_val_{SIZE}.h5" and path.exists()
    assert not (root / "snnseg_cache").exists()


def test_a_cache_built_from_another_file_list_is_rejected(tmp_path):
    root, _ = make_voc(tmp_path)
    loading.prepare_split("voc2012", root, "val", SIZE)
    (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text(f"{VOC_VAL[0]}\n")
    with pytest.raises(DatasetError, match=r"other preprocessing settings \(files .*num_items 2 -> 1\)"):
        loading.load_split("voc2012", root, "val", SIZE)
    loading.prepare_split("voc2012", root, "val", SIZE)  # prepare rebuilds it
    assert loading.load_split("voc2012", root, "val", SIZE).ids == VOC_VAL[:1]


def test_a_cache_from_another_preprocessing_version_is_rejected(tmp_path, monkeypatch):
    root, _ = make_voc(tmp_path)
    path, _, _ = loading.prepare_split("voc2012", root, "val", SIZE)
    monkeypatch.setattr(cache, "PREPROCESS_VERSION", preprocess.PREPROCESS_VERSION + 1)
    version = preprocess.PREPROCESS_VERSION
    with pytest.raises(
        DatasetError, match=rf"preprocess_version {version} -> {version + 1}\).*snnseg_jax.data.prepare"
    ):
        loading.load_split("voc2012", root, "val", SIZE)
    with h5py.File(path) as f:
        assert json.loads(f.attrs["settings"])["image_size"] == SIZE


def test_a_damaged_cache_file_is_a_clear_error(tmp_path):
    root, _ = make_voc(tmp_path)
    path, _, _ = loading.prepare_split("voc2012", root, "val", SIZE)
    path.write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="Cannot read cache"):
        loading.load_split("voc2012", root, "val", SIZE)


def test_prepare_cli_writes_train_and_eval_caches(tmp_path, run_prepare):
    root, _ = make_voc(tmp_path)
    result = run_prepare(
        "configs/voc_deeplab.py", f"--config.dataset.root={root}", f"--config.dataset.image_size={SIZE}"
    )
    assert result.returncode == 0, result.stderr
    for split in ("train_aug", "val"):
        assert (root / "snnseg_cache" / f"voc2012_{split}_{SIZE}.h5").exists()
        assert f"voc2012 {split}:" in result.stdout


@pytest.mark.slow
def test_a_train_aug_sized_cache_reads_back_whole_in_one_read_per_array(tmp_path, monkeypatch):
    """10,582 images at 64x64, the size of VOC train_aug: written once, then read back whole, each array
    in one read (reading image by image would take minutes; the time is printed, not asserted)."""
    n, size = 10_582, 64
    rng = np.random.default_rng(0)
    split = Split(
        rng.standard_normal((n, size, size, 3), np.float32),
        rng.integers(0, 21, (n, size, size), np.uint8),
        tuple(f"{2007 + i % 5}_{i:06d}" for i in range(n)),
        ("c",) * 21,
    )
    settings = {"dataset": "voc2012", "split": "train_aug", "image_size": size}
    path = tmp_path / "train_aug.h5"
    cache.write(path, split, settings)
    reads, read_dataset = [], h5py.Dataset.__getitem__

    def counted_read(dataset, key):
        reads.append(dataset.name)
        return read_dataset(dataset, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted_read)
    start = time.perf_counter()
    read_back = cache.read(path, settings)
    seconds = time.perf_counter() - start
    print(f"read {n} images at {size}x{size} ({path.stat().st_size / 2**20:.0f} MiB) in {seconds:.2f} s")
    assert_same_split(read_back, split)
    assert sorted(reads) == ["/ids", "/inputs", "/labels"]
    shutil.rmtree(tmp_path)
