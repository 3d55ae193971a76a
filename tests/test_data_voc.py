"""PASCAL VOC2012 reader on a small tree in the devkit's formats."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from datasets_on_disk import VOC_SIZES, VOC_TRAIN, VOC_VAL, make_voc
from PIL import Image

from snnseg_jax.data import decode, voc
from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.loading import load_split

SIZE = 16


def nearest(label_HW, size):
    """Independent nearest-neighbour resize: source index floor((i + 0.5) * in / out)."""
    rows = np.floor((np.arange(size) + 0.5) * label_HW.shape[0] / size).astype(int)
    cols = np.floor((np.arange(size) + 0.5) * label_HW.shape[1] / size).astype(int)
    return label_HW[rows][:, cols]


@pytest.fixture
def voc_tree(tmp_path):
    return make_voc(tmp_path)


def test_palette_labels_are_read_as_indices_with_255_kept(voc_tree):
    root, labels = voc_tree
    split = load_split("voc2012", root, "train", SIZE)
    for i, image_id in enumerate(VOC_TRAIN):
        truth = labels[f"SegmentationClass/{image_id}"]
        assert Image.open(root / "VOCdevkit/VOC2012/SegmentationClass" / f"{image_id}.png").mode == "P"
        np.testing.assert_array_equal(split.labels[i], nearest(truth, SIZE))
    assert 255 in split.labels and set(np.unique(split.labels)) <= set(range(21)) | {255}
    assert split.class_names == voc.CLASS_NAMES and len(voc.CLASS_NAMES) == 21


@pytest.mark.parametrize("size", [SIZE, 64])
def test_images_resized_antialiased_minus_mean_over_255(voc_tree, size):
    root, _ = voc_tree
    split = load_split("voc2012", root, "val", size)
    for i, image_id in enumerate(VOC_VAL):
        rgb = np.asarray(Image.open(root / "VOCdevkit/VOC2012/JPEGImages" / f"{image_id}.jpg"), np.float32)
        resized = jax.image.resize(jnp.asarray(rgb), (size, size, 3), "bilinear", antialias=True)
        expected = (np.asarray(resized) - np.array([122.67892, 116.66877, 104.00699])) / 255.0
        np.testing.assert_allclose(split.inputs[i], expected, atol=2e-5)
    assert split.inputs.dtype == np.float32 and split.ids == VOC_VAL


def test_bare_ids_take_the_folder_named_by_the_split_and_pairs_the_folder_they_name(voc_tree, tmp_path):
    root, labels = voc_tree
    lists = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (lists / "val_aug.txt").write_text("".join(f"{i}\n" for i in VOC_VAL))
    (lists / "val_pairs.txt").write_text("".join(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in VOC_VAL))
    for split_name, folder in (
        ("val", "SegmentationClass"),
        ("val_aug", "SegmentationClassAug"),
        ("val_pairs", "SegmentationClass"),
    ):
        split = load_split("voc2012", root, split_name, SIZE)
        for i, image_id in enumerate(VOC_VAL):
            np.testing.assert_array_equal(split.labels[i], nearest(labels[f"{folder}/{image_id}"], SIZE))
    aug_pairs = load_split("voc2012", root, "train_aug", SIZE)
    assert aug_pairs.ids == VOC_TRAIN
    first_aug_label = labels[f"SegmentationClassAug/{VOC_TRAIN[0]}"]
    np.testing.assert_array_equal(aug_pairs.labels[0], nearest(first_aug_label, SIZE))


def test_bare_ids_fall_back_to_the_only_label_folder(tmp_path):
    root, labels = make_voc(tmp_path)
    voc_folder = root / "VOCdevkit/VOC2012"
    for path in (voc_folder / "SegmentationClass").iterdir():
        path.unlink()
    (voc_folder / "SegmentationClass").rmdir()
    split = load_split("voc2012", root, "val", SIZE)
    aug_label = labels[f"SegmentationClassAug/{VOC_VAL[0]}"]
    np.testing.assert_array_equal(split.labels[0], nearest(aug_label, SIZE))


@pytest.mark.parametrize("nested", [True, False])
def test_root_is_the_voc2012_folder_or_holds_vocdevkit(tmp_path, nested):
    root, _ = make_voc(tmp_path, nested=nested)
    assert voc.find_voc_folder(root).name == "VOC2012"
    assert len(load_split("voc2012", root, "val", SIZE)) == len(VOC_VAL)


def test_labels_outside_the_classes_become_ignore_with_one_warning(voc_tree, caplog):
    root, labels = voc_tree
    folder = root / "VOCdevkit/VOC2012/SegmentationClass"
    expected_total = 0
    for image_id in VOC_VAL:
        label = labels[f"SegmentationClass/{image_id}"].copy()
        label[:3, :4] = 21 + len(image_id) % 3
        expected_total += 12
        Image.fromarray(label).save(folder / f"{image_id}.png")
    with caplog.at_level("WARNING"):
        split = load_split("voc2012", root, "val", SIZE)
    warnings = [r for r in caplog.records if "label pixels" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{expected_total} label pixels in {len(VOC_VAL)} files" in warnings[0].getMessage()
    assert warnings[0].getMessage().endswith(f"Files: {folder / VOC_VAL[0]}.png, {folder / VOC_VAL[1]}.png.")
    assert split.labels.max() == 255 and not ((split.labels >= 21) & (split.labels != 255)).any()


def _break(root: Path, what: str) -> tuple[str, str]:
    """Damage the tree one way; return the expected path fragment and phrase of the error."""
    folder = root / "VOCdevkit/VOC2012"
    image_id = VOC_VAL[1]
    if what == "missing_root":
        return str(root / "nowhere"), "does not exist"
    if what == "missing_list":
        (folder / "ImageSets/Segmentation/val.txt").unlink()
        return "ImageSets/Segmentation/val.txt", "is missing"
    if what == "missing_image":
        (folder / "JPEGImages" / f"{image_id}.jpg").unlink()
        return f"JPEGImages/{image_id}.jpg", "is missing"
    if what == "missing_label":
        (folder / "SegmentationClass" / f"{image_id}.png").unlink()
        return f"SegmentationClass/{image_id}.png", "is missing"
    if what == "undecodable_image":
        (folder / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
        return f"JPEGImages/{image_id}.jpg", "Cannot decode"
    if what == "size_mismatch":
        Image.fromarray(np.zeros((7, 9), np.uint8)).save(folder / "SegmentationClass" / f"{image_id}.png")
        return f"SegmentationClass/{image_id}.png", "must have the same size"
    if what == "colour_label":
        Image.fromarray(np.zeros((*VOC_SIZES[image_id], 3), np.uint8)).save(
            folder / "SegmentationClass" / f"{image_id}.png"
        )
        return f"SegmentationClass/{image_id}.png", "expected a single-channel PNG"
    raise ValueError(what)


BAD_INPUTS = [
    "missing_root",
    "missing_list",
    "missing_image",
    "missing_label",
    "undecodable_image",
    "size_mismatch",
    "colour_label",
]


@pytest.mark.parametrize("what", BAD_INPUTS)
def test_bad_input_raises_a_message_naming_the_file(voc_tree, what):
    root, _ = voc_tree
    fragment, phrase = _break(root, what)
    target = root / "nowhere" if what == "missing_root" else root
    with pytest.raises(DatasetError) as error:
        load_split("voc2012", target, "val", SIZE)
    assert fragment in str(error.value) and phrase in str(error.value)


@pytest.mark.parametrize("what", ["missing_list", "undecodable_image", "size_mismatch"])
def test_bad_input_through_prepare_exits_non_zero_without_traceback(voc_tree, what, run_prepare):
    root, _ = voc_tree
    fragment, phrase = _break(root, what)
    result = run_prepare(
        "configs/voc_deeplab.py",
        f"--config.dataset.root={root}",
        "--config.dataset.train_split=val",
        f"--config.dataset.image_size={SIZE}",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert fragment in message and phrase in message


def test_a_decoder_yielding_non_finite_pixels_stops_reading_naming_the_image(voc_tree, monkeypatch):
    """Decoded JPEGs are uint8; a decoder giving floats is checked like the event tensors."""
    root, _ = voc_tree
    read_rgb = decode.read_rgb

    def floats_with_nan(path):
        image = read_rgb(path).astype(np.float32)
        if path.stem == VOC_VAL[1]:
            image[:2, :2, 1] = np.nan
        return image

    monkeypatch.setattr(decode, "read_rgb", floats_with_nan)
    with pytest.raises(DatasetError, match=rf"JPEGImages/{VOC_VAL[1]}\.jpg holds 4 non-finite values \(4 NaN\);"):
        load_split("voc2012", root, "val", SIZE)
