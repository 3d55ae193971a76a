"""Spiking-DeepLab on the embedded `events` dataset (DVS event recordings), sized for a 2-core CPU.

    python train.py --config configs/events_deeplab.py --workdir runs/events
    python train.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab

32x32 event frames (2 channels) in recordings of 20 frames, like DDD17: 800 training recordings
(16,000 frames) and 50 validation recordings (1,000 frames); an example is the sequence of T=4
frames ending at a frame, labelled with that frame's segmentation. Width 0.125, batch 16, 5 epochs
(5000 steps), Adam 3e-3 decayed x0.1 at half. Measured on the project's 2-core CPU while other jobs
shared it (whole command, data generation and compilation included):
- Spiking-DeepLab: validation MIoU 0.526, 4 min 32 s.
- ANN DeepLab (`--config.model.name=deeplab`, features averaged over the frames before the
  classifier): validation MIoU 0.640; the spiking network reaches 0.82 of it.

The analyses of the two runs (README "Results on the embedded data" and "Streaming and latency"):

    python evaluate.py --config configs/events_deeplab.py --workdir runs/events \
        --analyses=energy,robustness,samples,latency,streaming --compare_workdir=runs/events_ann
    python evaluate.py --config configs/events_deeplab.py --workdir runs/events_ann \
        --config.model.name=deeplab --analyses=activations,samples
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.dataset.name = "events"
    config.dataset.synthetic_sizes.train = 16000  # event frames (each ends one example), 20 per recording
    config.dataset.synthetic_sizes.val = 1000
    config.num_epochs = 5
    return config
