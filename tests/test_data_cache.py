"""HDF5 cache: exact round trip, use by load_split, rejection when the settings or the files differ."""

import json
import os
import shutil
import time

import h5py
import numpy as np
import pytest
from datasets_on_disk import DDD17_TEST, VOC_VAL, changed_after_caching, make_dataset, make_voc, rewrite

from snnseg_jax.data import cache, decode, loading, preprocess
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
def test_prepare_round_trips_exactly_and_load_uses_the_cache(tmp_path, monkeypatch, name, split):
    root = make_dataset(tmp_path, "voc" if name == "voc2012" else "lists")
    from_files = loading.load_split(name, root, split, SIZE)
    path, count, _ = loading.prepare_split(name, root, split, SIZE)
    assert path == root / "snnseg_cache" / f"{name}_{split}_{SIZE}.h5" and count == len(from_files)
    assert_same_split(loading.load_split(name, root, split, SIZE), from_files)
    # Proof that the cache, not the files, served it: no file can be decoded any more.
    for reader in ("read_rgb", "read_events", "read_label"):
        monkeypatch.setattr(decode, reader, lambda path: pytest.fail(f"{path} was read"))
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


VOC_FOLDER = "VOCdevkit/VOC2012"


@pytest.mark.parametrize(
    "layout,relative,cache_name",
    [
        ("voc", f"{VOC_FOLDER}/JPEGImages/{VOC_VAL[1]}.jpg", "voc2012_val_16.h5"),
        ("voc", f"{VOC_FOLDER}/SegmentationClass/{VOC_VAL[0]}.png", "voc2012_val_16.h5"),
        ("lists", f"events/test/rec{next(iter(DDD17_TEST))}_export_99.npy", "ddd17_test_16.h5"),
    ],
)
def test_a_file_changed_after_caching_makes_the_cache_out_of_date(tmp_path, layout, relative, cache_name):
    changed_after_caching(tmp_path, layout, relative, SIZE)
    name, split = ("voc2012", "val") if layout == "voc" else ("ddd17", "test")
    with pytest.raises(DatasetError) as error:
        loading.load_split(name, tmp_path, split, SIZE)
    message = str(error.value)
    assert message.startswith(f"Cache {tmp_path / 'snnseg_cache' / cache_name} is out of date: 1 of the ")
    assert f"(their size or modification time): {tmp_path / relative}. Rebuild it with" in message
    assert cache.PREPARE_COMMAND in message
    loading.prepare_split(name, tmp_path, split, SIZE)  # prepare brings it up to date
    loading.load_split(name, tmp_path, split, SIZE)


def test_the_out_of_date_message_names_three_files_and_counts_the_rest(tmp_path):
    root, _ = make_voc(tmp_path)
    loading.prepare_split("voc2012", root, "val", SIZE)
    folder = root / VOC_FOLDER
    for image_id in VOC_VAL:
        rewrite(folder / "JPEGImages" / f"{image_id}.jpg")
        (folder / "SegmentationClass" / f"{image_id}.png").unlink()
    with pytest.raises(DatasetError) as error:
        loading.load_split("voc2012", root, "val", SIZE)
    first, second = (folder / "JPEGImages" / f"{image_id}.jpg" for image_id in VOC_VAL)
    label = folder / "SegmentationClass" / f"{VOC_VAL[0]}.png"
    assert "4 of the 4 files it was built from changed since" in str(error.value)
    assert f"{first}, {label} (missing), {second} and 1 more. Rebuild" in str(error.value)
    assert cache.a_few(list("abcdef")) == "a, b, c and 3 more" and cache.a_few(["a"]) == "a"


def test_the_size_or_the_modification_time_alone_makes_a_file_changed(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"12345")
    os.utime(path, ns=(0, 1_000_000_007))
    np.testing.assert_array_equal(cache.file_stats([path, tmp_path / "nothing"]), [[5, 1_000_000_007], [-1, -1]])
    built = cache.file_stats([path])
    os.utime(path, ns=(0, 1_000_000_008))
    with pytest.raises(DatasetError, match="1 of the 1 files"):
        cache.check_sources(tmp_path / "c.h5", built, [path])
    path.write_bytes(b"123456")
    os.utime(path, ns=(0, 1_000_000_007))
    with pytest.raises(DatasetError, match="1 of the 1 files"):
        cache.check_sources(tmp_path / "c.h5", built, [path])


def test_a_cache_written_by_the_previous_version_asks_for_a_rebuild(tmp_path):
    """Format 1 (no record of the sources): rejected with the settings message, not a traceback."""
    root, _ = make_voc(tmp_path)
    path, _, _ = loading.prepare_split("voc2012", root, "val", SIZE)
    with h5py.File(path, "r+") as f:  # what the previous version wrote: the same, less the sources
        del f["sources"]
        settings = {**json.loads(f.attrs["settings"]), "cache_format": 1}
        f.attrs["settings"] = json.dumps(settings, sort_keys=True)
        f.attrs["settings_hash"] = cache.settings_hash(settings)
    with pytest.raises(DatasetError, match=r"other preprocessing settings \(cache_format 1 -> 2\)\. Rebuild it"):
        loading.load_split("voc2012", root, "val", SIZE)


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
    cache.write(path, split, settings, cache.file_stats([]))
    reads, read_dataset = [], h5py.Dataset.__getitem__

    def counted_read(dataset, key):
        reads.append(dataset.name)
        return read_dataset(dataset, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted_read)
    start = time.perf_counter()
    read_back = cache.read(path, settings, [])
    seconds = time.perf_counter() - start
    print(f"read {n} images at {size}x{size} ({path.stat().st_size / 2**20:.0f} MiB) in {seconds:.2f} s")
    assert_same_split(read_back, split)
    assert sorted(reads) == ["/ids", "/inputs", "/labels", "/sources"]
    shutil.rmtree(tmp_path)
