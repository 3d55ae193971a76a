"""Pictures: palettes, what is drawn for an input, and images side by side."""

import numpy as np

from snnseg_jax import images
from snnseg_jax.data import preprocess

VOC_PALETTE = [
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
    (64, 128, 0),
    (192, 128, 0),
    (64, 0, 128),
    (192, 0, 128),
    (64, 128, 128),
    (192, 128, 128),
    (0, 64, 0),
    (128, 64, 0),
    (0, 192, 0),
    (128, 192, 0),
    (0, 64, 128),
]


def test_voc_palette_is_pascal_vocs_colour_map():
    assert images.voc_palette(21).tolist() == [list(c) for c in VOC_PALETTE]
    assert images.palette_for("voc2012", 21).tolist() == [list(c) for c in VOC_PALETTE]


def test_each_dataset_gets_distinct_colours_and_ignored_pixels_are_white():
    for name, classes in (("ddd17", 6), ("shapes", 5), ("events", 5), ("unknown", 30)):
        palette = images.palette_for(name, classes)
        assert palette.shape == (classes, 3) and len({tuple(c) for c in palette}) == classes
    labels = np.array([[0, 1], [255, 4]])
    rgb = images.colour_labels(labels, images.palette_for("shapes", 5))
    assert rgb[1, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == list(images.SYNTHETIC_PALETTE[1])


def test_inputs_are_shown_as_the_original_image_or_the_last_event_frame():
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    image, _ = images.displayable(preprocess.standardize_rgb(pixels), preprocess.RGB_MEAN)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-5)
    events = np.zeros((3, 8, 8, 2), np.float32)
    events[-1, 2, 3, 0], events[-1, 5, 5, 1], events[0, 1, 1, 0] = 0.5, 0.25, 0.5
    frame, style = images.displayable(events, preprocess.RGB_MEAN)
    assert frame[2, 3] == 0.5 and frame[5, 5] == -0.25 and frame[1, 1] == 0 and style["cmap"] == "gray"


def test_images_side_by_side_are_enlarged_to_a_visible_size():
    grey = images.as_rgb(np.array([[-1.0, 0.0], [1.0, 0.5]]), vmin=-1.0, vmax=1.0)
    assert grey.dtype == np.uint8 and grey.shape == (2, 2, 3) and grey[0, 0, 0] == 0 and grey[1, 0, 2] == 255
    rgb = images.as_rgb(np.full((2, 2, 3), 0.5))
    joined = images.side_by_side(grey, rgb, min_height=8)
    assert joined.shape == (8, 8 + 4 + 8, 3)  # two images 4x larger, one white column 4 wide between
    assert np.all(joined[:, 8:12] == 255) and np.all(joined[:4, :4] == 0)
