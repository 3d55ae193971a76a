"""DDD17 reader on small datasets in the Ev-SegNet layout and the list form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from datasets_on_disk import DDD17_TEST, DDD17_TRAIN, EVENTS_HW, make_ddd17, put_nonfinite
from PIL import Image

from snnseg_jax.data import preprocess
from snnseg_jax.data.errors import DatasetError
from snnseg_jax.data.loading import load_split, prepare_split
from snnseg_jax.data.split import EventSequences, sequence_windows

SIZE = 16


def expected_frame(events, size):
    """Independent normalization: channels 0-1 resized, then each min-max scaled over the whole frame."""
    resized = np.asarray(
        jax.image.resize(jnp.asarray(events[..., :2], jnp.float32), (size, size, 2), "bilinear", antialias=True),
        np.float64,
    )
    return np.stack(
        [(resized[..., c] - resized[..., c].min()) / np.ptp(resized[..., c]) - 0.5 for c in range(2)], axis=-1
    )


def names_in_order(recordings):
    return tuple(f"rec{r}_export_{n}" for r in sorted(recordings) for n in sorted(recordings[r]))


@pytest.mark.parametrize("layout", ["evsegnet", "lists"])
def test_frames_in_numeric_order_with_per_channel_minmax(tmp_path, layout):
    frames = make_ddd17(tmp_path, layout)
    split = load_split("ddd17", tmp_path, "test", SIZE)
    assert split.ids == names_in_order(DDD17_TEST)  # ..._99 before ..._100
    assert split.class_names == ("flat", "construction+sky", "object", "nature", "human", "vehicle")
    np.testing.assert_array_equal(split.recordings, [1487417411] * 5 + [1487593224] * 2)
    np.testing.assert_array_equal(split.frame_numbers, [98, 99, 100, 101, 102, 0, 1])
    for i, name in enumerate(split.ids):
        events, label = frames[name]
        np.testing.assert_allclose(split.inputs[i], expected_frame(events, SIZE), atol=1e-5)
        rows = np.floor((np.arange(SIZE) + 0.5) * EVENTS_HW[0] / SIZE).astype(int)
        cols = np.floor((np.arange(SIZE) + 0.5) * EVENTS_HW[1] / SIZE).astype(int)
        np.testing.assert_array_equal(split.labels[i], label[rows][:, cols])


def test_minmax_is_per_channel_not_per_column():
    events = np.zeros((4, 6, 6), np.float32)
    events[..., 0] = np.arange(6, dtype=np.float32) * 10  # every column constant: per column would be flat
    events[..., 1] = 3.0
    out = preprocess.normalize_events(events, 6)
    np.testing.assert_allclose(out[0, :, 0], np.linspace(-0.5, 0.5, 6), atol=1e-6)
    np.testing.assert_allclose(out[..., 1], -0.5)  # a constant channel: "fewest events"


def test_sparse_event_frames_span_the_whole_range_at_the_networks_input():
    """Resized first, then scaled: a channel with any event reaches exactly -0.5 and +0.5 at 64x64,
    however sparse its events at 200x346 (scaled first, 5% active pixels stayed below about -0.3)."""
    rng = np.random.default_rng(0)
    for fraction in (0.002, 0.05, 0.5):
        events = np.zeros((200, 346, 3), np.float32)
        active = rng.random((200, 346)) < fraction
        events[..., 0] = active * rng.integers(1, 6, (200, 346))
        events[..., 1] = (rng.random((200, 346)) < fraction) * 2.0
        out = preprocess.normalize_events(events, 64)
        assert out.shape == (64, 64, 2)
        for c in range(2):
            assert out[..., c].min() == -0.5 and out[..., c].max() == 0.5, (fraction, c)


def test_both_layouts_give_the_same_split(tmp_path):
    make_ddd17(tmp_path / "a", "evsegnet")
    make_ddd17(tmp_path / "b", "lists")
    a, b = (load_split("ddd17", tmp_path / x, "train", SIZE) for x in "ab")
    assert a.ids == b.ids == names_in_order(DDD17_TRAIN)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_windows_stay_in_one_recording_and_count_every_frame_once(tmp_path):
    make_ddd17(tmp_path, "evsegnet")
    split = load_split("ddd17", tmp_path, "test", SIZE)
    timesteps = 3
    windows = sequence_windows(split.recordings, split.frame_numbers, timesteps)
    assert windows.shape == (len(split), timesteps)
    np.testing.assert_array_equal(windows[:, -1], np.arange(len(split)))  # each frame labelled once
    assert (split.recordings[windows] == split.recordings[:, None]).all()
    assert (np.diff(split.frame_numbers[windows], axis=1) >= 0).all()
    # First frames of a recording: padded by repeating the recording's first frame.
    np.testing.assert_array_equal(windows[:3], [[0, 0, 0], [0, 0, 1], [0, 1, 2]])
    np.testing.assert_array_equal(windows[4], [2, 3, 4])
    np.testing.assert_array_equal(windows[5:], [[5, 5, 5], [5, 5, 6]])


def test_windows_do_not_bridge_gaps_in_frame_numbers():
    recordings = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    frame_numbers = np.array([10, 11, 12, 40, 41, 0, 2, 4])  # 12 -> 40 is a gap; recording 2 steps by 2
    windows = sequence_windows(recordings, frame_numbers, 3)
    np.testing.assert_array_equal(
        windows, [[0, 0, 0], [0, 0, 1], [0, 1, 2], [3, 3, 3], [3, 3, 4], [5, 5, 5], [5, 5, 6], [5, 6, 7]]
    )


def _break(root, what):
    """Damage the Ev-SegNet tree one way; return the expected path fragment and phrase."""
    name = "rec1487417411_export_100"
    events = root / "test/events" / f"{name}.npy"
    if what == "missing_split":
        return "datalists/val.txt", "No DDD17 split"
    if what == "wrong_shape":
        np.save(events, np.zeros((*EVENTS_HW, 2), np.float32))
        return f"{name}.npy", "expected float32 of shape [H, W, 6]"
    if what == "wrong_dtype":
        np.save(events, np.zeros((*EVENTS_HW, 6), np.float64))
        return f"{name}.npy", "dtype float64"
    if what == "missing_label":
        (root / "test/labels" / f"{name}.png").unlink()
        return f"labels/{name}.png", "is missing"
    if what == "size_mismatch":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "test/labels" / f"{name}.png")
        return f"{name}.png", "must have the same size"
    if what == "unparsable_name":
        events.rename(events.with_name("frame_100.npy"))
        return "frame_100.npy", "rec<recording>_export_<frame>.npy"
    if what in NONFINITE:
        put_nonfinite(events, NONFINITE[what])
        return f"{name}.npy holds 100 non-finite values", f"(100 {what}) in channels 0-1 (the ones used)"
    if what == "too_large_to_normalize":
        huge = np.zeros((*EVENTS_HW, 6), np.float32)
        huge[: EVENTS_HW[0] // 2, :, :2], huge[EVENTS_HW[0] // 2 :, :, :2] = 3.4e38, -3.4e38
        np.save(events, huge)
        return f"{name}.npy holds values up to 3.4e+38", "too large to normalize"
    raise ValueError(what)


NONFINITE = {"NaN": np.nan, "+inf": np.inf, "-inf": -np.inf}


@pytest.mark.parametrize(
    "what",
    [
        "missing_split",
        "wrong_shape",
        "wrong_dtype",
        "missing_label",
        "size_mismatch",
        "unparsable_name",
        *NONFINITE,
        "too_large_to_normalize",
    ],
)
def test_bad_input_raises_a_message_naming_the_file(tmp_path, what):
    make_ddd17(tmp_path, "evsegnet")
    fragment, phrase = _break(tmp_path, what)
    with pytest.raises(DatasetError) as error:
        load_split("ddd17", tmp_path, "val" if what == "missing_split" else "test", SIZE)
    assert fragment in str(error.value) and phrase in str(error.value)


@pytest.mark.parametrize("what", ["wrong_shape", "unparsable_name", "NaN"])
def test_bad_input_through_prepare_exits_non_zero_without_traceback(tmp_path, what, run_prepare):
    make_ddd17(tmp_path, "evsegnet")
    fragment, phrase = _break(tmp_path, what)
    result = run_prepare(
        "configs/ddd17_deeplab.py", f"--config.dataset.root={tmp_path}", f"--config.dataset.image_size={SIZE}"
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert fragment in message and phrase in message


def test_event_sequences_read_windows_and_augment_only_with_a_generator(tmp_path):
    make_ddd17(tmp_path, "evsegnet")
    split = load_split("ddd17", tmp_path, "test", SIZE)
    sequences = EventSequences(split, timesteps=3, augment=True)
    assert len(sequences) == len(split) and sequences.in_channels == 2
    inputs, labels = sequences.read(np.array([0, 4, 6]))
    assert inputs.shape == (3, 3, SIZE, SIZE, 2)
    np.testing.assert_array_equal(inputs[1], split.inputs[[2, 3, 4]])
    np.testing.assert_array_equal(inputs[2], split.inputs[[5, 5, 6]])
    np.testing.assert_array_equal(labels, split.labels[[0, 4, 6]])
    augmented, augmented_labels = sequences.read(np.array([0, 4, 6]), np.random.default_rng(1))
    assert augmented.shape == inputs.shape and not np.array_equal(augmented_labels, labels)


def test_non_finite_values_are_counted_by_kind_in_the_channels_used_only(tmp_path):
    make_ddd17(tmp_path, "evsegnet")
    events = tmp_path / "test/events/rec1487593224_export_1.npy"
    clean = load_split("ddd17", tmp_path, "test", SIZE)
    tensor = np.load(events)
    tensor[..., 2:] = np.nan  # channels 2-5 (timestamp statistics) are not read
    np.save(events, tensor)
    np.testing.assert_array_equal(load_split("ddd17", tmp_path, "test", SIZE).inputs, clean.inputs)
    tensor[0, :3, 0], tensor[1, :2, 1], tensor[2, 0, 0] = np.nan, np.inf, -np.inf
    np.save(events, tensor)
    with pytest.raises(DatasetError, match=r"holds 6 non-finite values \(3 NaN, 2 \+inf, 1 -inf\) in channels 0-1"):
        load_split("ddd17", tmp_path, "test", SIZE)


@pytest.mark.parametrize("what", NONFINITE)
def test_preparing_a_cache_stops_at_a_non_finite_value_and_writes_nothing(tmp_path, what):
    make_ddd17(tmp_path, "evsegnet")
    fragment, phrase = _break(tmp_path, what)
    with pytest.raises(DatasetError) as error:
        prepare_split("ddd17", tmp_path, "test", SIZE)
    assert fragment in str(error.value) and phrase in str(error.value)
    assert not (tmp_path / "snnseg_cache").exists()


def test_label_values_outside_the_classes_are_ignored_with_a_warning_naming_three_files(tmp_path, caplog):
    frames = make_ddd17(tmp_path, "evsegnet")
    names = names_in_order(DDD17_TEST)
    for name in names[:5]:
        Image.fromarray(np.where(frames[name][1] == 0, 6, frames[name][1]).astype(np.uint8)).save(
            tmp_path / "test/labels" / f"{name}.png"
        )
    with caplog.at_level("WARNING"):
        split = load_split("ddd17", tmp_path, "test", SIZE)
    pixels = sum(int((frames[name][1] == 0).sum()) for name in names[:5])
    [warning] = [r.getMessage() for r in caplog.records if "label pixels" in r.getMessage()]
    labels = [tmp_path / "test/labels" / f"{name}.png" for name in names[:3]]
    assert f"{pixels} label pixels in 5 files have values >= 6" in warning
    assert f"Files: {labels[0]}, {labels[1]}, {labels[2]} and 2 more." in warning
    assert not ((split.labels >= 6) & (split.labels != 255)).any()
