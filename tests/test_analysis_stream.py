"""The latency and streaming analyses against the network run window by window."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import lively_variables

from snnseg_jax import metrics, models
from snnseg_jax.analysis import latency, streaming
from snnseg_jax.data.split import Split, runs_of

T = 3
KEY = jax.random.PRNGKey(0)


def test_anytime_curve_ends_at_the_evaluation_and_counts_each_steps_spikes():
    model = models.build("spiking_deeplab", num_classes=4, timesteps=T, width=0.125)
    images = jax.random.uniform(KEY, (3, 16, 16, 3), minval=-1, maxval=1)
    labels = jax.random.randint(KEY, (3, 16, 16), 0, 4)
    variables = lively_variables(model, images.shape[1:])
    confusions, spikes = jax.jit(lambda v, b, k: latency.anytime_step(v, b, k, model=model))(
        variables, {"inputs": images, "labels": labels}, KEY
    )
    logits, sown = jax.jit(  # compiled: op by op, the window's many small ops compile one by one
        lambda v, x: model.apply(v, x, train=False, rngs={"spikes": KEY}, mutable=[models.ACTIVITY])
    )(variables, images)
    np.testing.assert_array_equal(confusions[-1], metrics.confusion_matrix(labels, jnp.argmax(logits, -1), 4))
    # Spikes per neuron of each step, from the window's spikes of every layer (time-major [T, B, ...]).
    per_layer = [jnp.swapaxes(a, 0, 1).reshape(3, T, -1) for a in models.activity(sown).values()]
    expected = sum(a.sum(axis=2) for a in per_layer) / sum(a.shape[2] for a in per_layer)
    np.testing.assert_allclose(spikes, expected, rtol=1e-6)
    assert 0.05 < float(spikes.mean()) < 0.95 and confusions.shape == (T, 4, 4)


def test_streaming_a_recording_in_chunks_matches_the_window_at_its_t_th_frame(monkeypatch):
    model = models.build("spiking_fcn", num_classes=4, timesteps=T, width=0.125, in_channels=2)
    rng = np.random.default_rng(0)
    frames = rng.uniform(-0.5, 0.5, (7, 16, 16, 2)).astype(np.float32)
    labels = rng.integers(0, 4, (7, 16, 16)).astype(np.uint8)
    variables = lively_variables(model, (T, 16, 16, 2))
    whole = streaming.continuous(model, variables, frames, labels)
    monkeypatch.setattr(streaming, "CHUNK", 3)  # 3 chunks, the last one padded
    chunked = streaming.continuous(model, variables, frames, labels)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    assert whole[0].shape == (7, 4, 4) and whole[0].sum(axis=(1, 2)).tolist() == [16 * 16] * 7
    # From zero state, the prediction at frame T is that of the window of the first T frames.
    window = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(frames[None, :T]))
    np.testing.assert_array_equal(whole[1][T - 1], np.argmax(window[0], -1))
    np.testing.assert_array_equal(whole[0][T - 1], metrics.confusion_matrix(labels[T - 1], whole[1][T - 1], 4))


def test_recordings_are_runs_of_consecutive_frames():
    recordings, numbers = np.array([0, 0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 5, 1, 2, 4])
    split = Split(np.zeros((7, 2, 2, 2)), np.zeros((7, 2, 2)), tuple("abcdefg"), ("x",), recordings, numbers)
    assert [r.tolist() for r in runs_of(split)] == [[0, 1, 2], [3], [4, 5], [6]]
