"""Spiking-DeepLab trained on streams of the embedded `events` recordings, to segment them frame by frame.

    python train.py --config configs/events_deeplab_stream.py --workdir runs/events_stream
    python evaluate.py --config configs/events_deeplab_stream.py --workdir runs/events_stream --analyses=streaming

`configs/events_deeplab.py` (same data, network, steps and optimizer), but 12 of the batch's 16
slots each follow one recording window after window, carrying their membranes from one window of
T=4 frames into the next (the gradient cut between windows); the other 4 always start from zero
state, so that the network also works in the paper's windows. BNTT normalizes step t of
a window with its statistics t, and the streaming analysis uses them in cycles (step s: s mod T),
what training saw. See docs/training.md, "Training on streams".

Expected: validation MIoU 0.473 in windows and 0.294 streamed after 5,000 steps
(trained in windows: 0.556 and 0.277), ~13 min on 2 CPU cores.

Training on streams does not yet make the network stream as well as it segments windows: it streams
a little better than the window-trained network and segments windows less well (docs/results.md,
"Trained to stream").
"""

from configs import events_deeplab


def get_config():
    config = events_deeplab.get_config()
    config.stream_training.enabled = True
    config.stream_training.zero_state_fraction = 0.25
    config.stream_training.loss = "window_end"
    config.analysis.stream_late_statistics = "cycle"
    return config
