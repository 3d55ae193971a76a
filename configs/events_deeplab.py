"""Spiking-DeepLab on the embedded `events` dataset (DVS event recordings), sized for a 2-core CPU.

    python train.py --config configs/events_deeplab.py --workdir runs/events
    python train.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab

32x32 event frames (2 channels) in recordings of 20 frames, like DDD17: 800 training recordings
(16,000 frames) and 50 validation recordings (1,000 frames); an example is the sequence of T=4
frames ending at a frame, labelled with that frame's segmentation. Width 0.125, batch 16, 5 epochs
(5000 steps), Adam 3e-3 decayed x0.1 at half. The ANN DeepLab averages its backbone features over
the frames.

Expected: validation MIoU 0.556 after 5,000 steps (the ANN twin: 0.621), ~12 min on 2 CPU cores.

The paper's analyses of the two runs, and the streaming ones (docs/results.md and
docs/analyses.md, "Streaming and latency"; conversion does not apply to event data):

    python evaluate.py --config configs/events_deeplab.py --workdir runs/events \
        --analyses=energy,robustness,samples,latency,streaming --compare_workdir=runs/events_ann
    python evaluate.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab \
        --analyses=activations,samples --compare_workdir=runs/events
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.dataset.name = "events"
    config.dataset.synthetic_sizes.train = 16000  # event frames (each ends one example), 20 per recording
    config.dataset.synthetic_sizes.val = 1000
    config.num_epochs = 5
    return config
