"""Spiking-DeepLab trained on streams of the embedded `events` recordings, to segment them frame by frame.

    python train.py --config configs/events_deeplab_stream.py --workdir runs/events_stream
    python evaluate.py --config configs/events_deeplab_stream.py --workdir runs/events_stream --analyses=streaming

`configs/events_deeplab.py` (same data, network, steps and optimizer), but each of the batch's 16
slots but a quarter follows one recording window after window, carrying its membranes from one
window of T=4 frames into the next (the gradient cut between windows); the other quarter always
starts from zero state, so the network also works in the paper's windows. BNTT normalizes step t of
a window with its statistics t, and the streaming analysis uses them in cycles (step s: s mod T),
what training saw. See docs/training.md, "Training on streams".

Expected: see docs/results.md, "Trained to stream".
"""

from configs import events_deeplab


def get_config():
    config = events_deeplab.get_config()
    config.stream_training.enabled = True
    config.stream_training.zero_state_fraction = 0.25
    config.analysis.stream_late_statistics = "cycle"
    return config
