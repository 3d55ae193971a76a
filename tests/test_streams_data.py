"""Stream training's batches: slots walk runs window by window, zero-state slots read ordinary windows."""

import numpy as np
import pytest

from snnseg_jax.cli import UserError
from snnseg_jax.data.split import EventSequences, Split, run_starts
from snnseg_jax.data.streams import StreamBatches, check_runs

T, S = 3, 8
LENGTHS = (7, 11, 16, 9)  # frames of each recording, one run each


def coded_sequences(lengths=LENGTHS, augment=False, gap_after=None):
    """Frames whose channel 0 is frame index + 1 and channel 1 the pixel's position + 1; labels the frame index.

    `gap_after`: a frame number in recording 0 after which frames are missing (a second run).
    """
    recordings = np.concatenate([np.full(n, r) for r, n in enumerate(lengths)])
    numbers = np.concatenate([np.arange(n) for n in lengths])
    if gap_after is not None:
        numbers[(recordings == 0) & (numbers > gap_after)] += 10
    n = len(recordings)
    inputs = np.zeros((n, S, S, 2), np.float32)
    inputs[..., 0] = (np.arange(n) + 1)[:, None, None]
    inputs[..., 1] = np.arange(1, S * S + 1).reshape(S, S)
    labels = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, S, S)).copy()
    ids = tuple(f"rec{r}_frame{f}" for r, f in zip(recordings, numbers))
    return EventSequences(Split(inputs, labels, ids, ("x",), recordings, numbers), T, augment)


def frames_of(window):
    """The frame indices of a window `[T, S, S, 2]`, read where the pixel came from inside the frame."""
    inside = window[..., 1] > 0  # augmentation fills pixels from outside with -0.5
    values = [np.unique(frame[..., 0][mask]) for frame, mask in zip(window, inside)]
    assert all(len(v) == 1 for v in values)
    return np.array([int(v[0]) - 1 for v in values])


def walk(batches, slot, count):
    """Slot `slot`'s windows (frame indices) and fresh flags over batches 0 .. count-1."""
    out = [batches.batch(i) for i in range(count)]
    return [frames_of(b["inputs"][slot]) for b in out], [bool(b["fresh"][slot]) for b in out], out


def test_streaming_slots_walk_consecutive_frames_of_one_run_and_are_fresh_at_segment_starts():
    sequences = coded_sequences()
    starts = run_starts(sequences.split.recordings, sequences.split.frame_numbers)
    run_end = {s: int(np.flatnonzero(starts == s)[-1]) for s in np.unique(starts)}  # run start -> last frame
    batches = StreamBatches(sequences, 4, 0.25, seed=3)
    assert (batches.streaming_slots, batches.zero_state_slots) == (3, 1)
    offsets, visited, segments, fresh_count = set(), set(), 0, 0
    for slot in range(3):
        windows, fresh, out = walk(batches, slot, 60)
        assert fresh[0]
        for i, frames in enumerate(windows):
            assert np.all(np.diff(frames) == 1) and len(set(starts[frames])) == 1  # one run, consecutive
            assert out[i]["labels"][slot].tolist() == np.full((S, S), frames[-1]).tolist()
            # Every frame's label, in order (the coded labels are the frame indices).
            assert out[i]["frame_labels"][slot].tolist() == np.broadcast_to(frames[:, None, None], (T, S, S)).tolist()
            if fresh[i]:
                offsets.add(int(frames[0] - starts[frames[0]]))
                visited.add(int(starts[frames[0]]))
                segments += 1
                if i:  # the previous segment ran until fewer than T frames of its run were left
                    assert run_end[starts[windows[i - 1][-1]]] - windows[i - 1][-1] < T
            else:
                assert frames[0] == windows[i - 1][-1] + 1
        fresh_count += sum(fresh)
    assert offsets == {0, 1, 2}  # window boundaries move between passes
    assert len(visited) == len(LENGTHS)  # every run is drawn
    assert segments > 10 and fresh_count < 3 * 60 / 2


def test_zero_state_slots_are_the_last_rows_read_ordinary_windows_and_are_always_fresh():
    sequences = coded_sequences()
    for fraction, zero in ((0.0, 0), (0.3, 2), (0.7, 4), (1.0, 5)):
        batches = StreamBatches(sequences, 5, fraction, seed=1)
        assert (batches.streaming_slots, batches.zero_state_slots) == (5 - zero, zero)
        examples, streaming_fresh = set(), []
        for i in range(25):
            b = batches.batch(i)
            assert b["inputs"].dtype == np.float32 and b["labels"].dtype == np.uint8 and b["fresh"].dtype == bool
            assert b["inputs"].shape == (5, T, S, S, 2) and b["labels"].shape == (5, S, S)
            assert b["frame_labels"].dtype == np.uint8 and b["frame_labels"].shape == (5, T, S, S)
            np.testing.assert_array_equal(b["frame_labels"][:, -1], b["labels"])
            assert np.all(b["frame_labels"][5 - zero :, :-1] == 255)  # a zero-state window: its last frame only
            assert b["fresh"][5 - zero :].all()
            streaming_fresh += b["fresh"][: 5 - zero].tolist()
            for row in range(5 - zero, 5):
                label = int(b["labels"][row, 0, 0])
                examples.add(label)
                np.testing.assert_array_equal(frames_of(b["inputs"][row]), sequences.windows[label])
        if zero:
            assert len(examples) > 10  # a new random window each batch
        if zero < 5:
            assert not all(streaming_fresh)


def test_a_batch_is_a_pure_function_of_its_index_and_rows():
    sequences = coded_sequences(augment=True)
    forward = [StreamBatches(sequences, 4, 0.25, seed=7).batch(i) for i in range(30)]
    backward = StreamBatches(sequences, 4, 0.25, seed=7)
    backward = [backward.batch(i) for i in reversed(range(30))][::-1]
    split = [StreamBatches(sequences, 4, 0.25, seed=7, rows=rows) for rows in ([0, 2], [1, 3])]
    other_seed = StreamBatches(sequences, 4, 0.25, seed=8).batch(5)
    for rows in (slice(0, 3), slice(3, 4)):  # another seed: other streams, other zero-state windows
        assert not np.array_equal(other_seed["inputs"][rows], forward[5]["inputs"][rows])
    for i in (29, 0, 17, 3):
        for name in ("inputs", "labels", "frame_labels", "fresh"):
            np.testing.assert_array_equal(backward[i][name], forward[i][name])
        parts = [part.batch(i) for part in split]
        for part, mine, others in zip(parts, ([0, 2], [1, 3]), ([1, 3], [0, 2])):
            for name, empty in (("inputs", 0), ("labels", 255), ("frame_labels", 255), ("fresh", False)):
                np.testing.assert_array_equal(part[name][mine], forward[i][name][mine])
                assert np.all(part[name][others] == empty)
        assert np.all(forward[i]["inputs"][..., 0] != 0) and (forward[i]["labels"] != 255).any(axis=(1, 2)).all()


def test_augmentation_is_one_geometry_per_segment():
    sequences = coded_sequences(augment=True)
    batches = StreamBatches(sequences, 2, 0.0, seed=0)
    plain = StreamBatches(coded_sequences(augment=False), 2, 0.0, seed=0)
    geometries, by_segment = [], []
    for i in range(40):
        b, p = batches.batch(i), plain.batch(i)
        window, label = b["inputs"][0], b["labels"][0]
        source = window[..., 1]  # the pixel each output pixel came from (+1; -0.5 outside)
        np.testing.assert_array_equal(frames_of(window), frames_of(p["inputs"][0]))  # the same frames, warped
        assert np.all(source == source[:1])  # one geometry for all frames of the window
        assert np.array_equal(label == 255, source[-1] < 0)  # and for its label
        for frame, frame_label, number in zip(source, b["frame_labels"][0], frames_of(window)):  # and every frame's
            assert np.array_equal(frame_label == 255, frame < 0) and np.all(frame_label[frame > 0] == number)
        if b["fresh"][0]:
            by_segment.append([])
            geometries.append(source[0])
        by_segment[-1].append(source[0])
    for windows in by_segment:
        assert all(np.array_equal(w, windows[0]) for w in windows)
    assert len(by_segment) >= 3 and not all(np.array_equal(g, geometries[0]) for g in geometries)
    # Without augmentation the frames are as they are.
    assert np.all(plain.batch(0)["inputs"][..., 1] == np.arange(1, S * S + 1).reshape(S, S))


def test_runs_shorter_than_the_window_are_refused_by_their_first_frame():
    sequences = coded_sequences(gap_after=4)  # recording 0: a run of 5, then one of 2
    with pytest.raises(UserError, match="rec0_frame15 has 2") as error:
        StreamBatches(sequences, 2, 0.5, seed=0)
    assert "model.timesteps = 3" in str(error.value)
    assert len(check_runs(coded_sequences(), T)) == len(LENGTHS)
    with pytest.raises(UserError, match="rec0_frame0 has 7"):
        check_runs(coded_sequences(), 8)


@pytest.mark.parametrize(("batch_size", "fraction"), [(0, 0.5), (2, -0.1), (2, 1.5)])
def test_bad_batch_sizes_and_fractions_are_refused(batch_size, fraction):
    with pytest.raises(ValueError):
        StreamBatches(coded_sequences(), batch_size, fraction, seed=0)
